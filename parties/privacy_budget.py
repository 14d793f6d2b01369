"""`privacy-budget`: user clients reveal a fraction beta of their ratings to a MetaMF server.

Each user's ratings live in a user-client party (one client holds many users; `clients=N`
spreads them over N). A client samples, for each of its users u, ceil(n_u * beta) of u's n_u
training ratings uniformly at random (from (seed, u) alone: the same draw whatever client holds
u, and nested across beta: what u reveals at 0.3 is part of what u reveals at 0.5) and sends
only those to the server. The server trains MetaMF (or NoMetaMF) on what it received.

Held-out ratings never leave the clients. Each epoch the server sends each client its users'
predicted ratings for every item (each user's personal model, applied to the catalogue); the
client scores them against its users' validation ratings, or at the end its test ratings, and
reports the per-rating errors (user id, absolute and squared error: no item, no rating) to the
coordinator, which evaluates and decides early stopping. The server thus learns nothing from a
rating that was not revealed, and the coordinator holds no ratings.

Message flow (every arrow is an envelope the wire eavesdropper sees; client-k for each client):

  collect (once):
    coordinator -> server    control{op: collect}
    server -> client-k       request{op: reveal}
    client-k -> server       artifact{kind: revealed_ratings} x chunks   user_ids, item, rating:
                             exactly ceil(n_u * beta) training ratings of each of its users
    server -> coordinator    ack{op: collect, users, ratings, epochs, patience}   once all clients' arrived
  epoch e = 1, 2, ... (until the coordinator stops: max epochs, or `patience` epochs without a
  lower validation RMSE):
    coordinator -> server    control{op: epoch, epoch: e, keep}   keep: epoch e-1 is the best so far
    server -> client-k       artifact{kind: rating_predictions, purpose: valid} x chunks
                             user_ids, prediction [users of client-k, all items]
    client-k -> coordinator  report{op: valid, epoch: e} users, abs_error, squared_error per validation rating
    server -> coordinator    ack{op: epoch, loss}
  test:
    coordinator -> server    control{op: test, keep}   the server restores its best epoch
    server -> client-k       artifact{kind: rating_predictions, purpose: test} x chunks
    client-k -> coordinator  report{op: test} users, abs_error, squared_error per test rating
    server -> coordinator    ack{op: test, best_epoch, epochs}

The curious server's own instrument (never sent): at the test step it adds the user embeddings
it learned (`server_user_embeddings`) to its receiver view, so that the evaluation can attack
them next to the revealed ratings.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from models.data import RatingData, Ratings
from models.metamf import MetaMF, MetaMFConfig, MetaMFTrainer
from protocol import Endpoint, Message

from .base import COORDINATOR, ArtifactAssembler, ChannelConfig, Party, PartyError, artifact_chunks
from .names import REVEALED_RATINGS, SERVER_USER_EMBEDDINGS

PREDICTIONS_KIND = "rating_predictions"
MODELS = ("metamf", "nometamf")
STREAM_REVEAL = 9001
# beta * n_u is computed in floating point (0.7 * 10 = 7.000000000000001): anything within
# this of an integer is that integer, so that ceil gives the exact ceil(n_u * beta).
CEIL_TOLERANCE = 1e-9


def revealed_count(n: int, beta: float) -> int:
    """ceil(n * beta), exact for the betas users write (0.1, 0.7, ...)."""
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"the privacy budget beta must be in (0, 1], got {beta}")
    return min(int(n), math.ceil(n * beta - CEIL_TOLERANCE))


def reveal(train: Ratings, beta: float, seed: int) -> np.ndarray:
    """Indices (into `train`, ascending) of the ratings the users reveal: for each user u,
    ceil(n_u * beta) of u's n_u ratings, uniformly without replacement, drawn from (seed, u)
    only. The draw is a prefix of one permutation per user, so lower budgets reveal subsets."""
    users = np.asarray(train.users, dtype=np.int64)
    by_user = np.argsort(users, kind="stable")
    found, starts, counts = np.unique(users[by_user], return_index=True, return_counts=True)
    keep: list[np.ndarray] = []
    for u, start, n in zip(found.tolist(), starts.tolist(), counts.tolist()):
        rows = by_user[start : start + n]
        order = np.random.default_rng([int(seed), STREAM_REVEAL, u]).permutation(n)
        keep.append(rows[order[: revealed_count(n, beta)]])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


class UserClient(Party):
    """Holds its users' ratings; reveals ceil(n_u * beta) training ratings per user to the
    server; scores the server's predictions against its users' held-out ratings locally."""

    def __init__(self, name: str, channel: ChannelConfig, data: RatingData, config: dict[str, Any]):
        super().__init__(name, channel)
        self.data = data
        self.beta = float(config["beta"])
        self.seed = int(config.get("seed", 0))
        self.assembler = ArtifactAssembler()
        self.keep_receiver_view_kinds = set()  # a client is not the attacked receiver: keep nothing

    def on_request(self, msg: Message) -> Iterable[Message]:
        if msg.meta.get("op") != "reveal":
            raise ValueError(f"unknown request op {msg.meta.get('op')!r}; valid: reveal")
        shown = self.data.train.select(reveal(self.data.train, self.beta, self.seed))
        return artifact_chunks(
            sender=self.name,
            receiver=msg.sender,
            name=REVEALED_RATINGS,
            kind=REVEALED_RATINGS,
            user_ids=shown.users.astype(np.int64),
            arrays={"item": shown.items.astype(np.int64), "rating": shown.values.astype(np.float32)},
            meta={"beta": self.beta},
            round=msg.round,
        )

    def on_artifact(self, msg: Message) -> Iterable[Message]:
        if msg.meta.get("kind") != PREDICTIONS_KIND:
            raise ValueError(f"a client accepts only {PREDICTIONS_KIND!r} artifacts, got {msg.meta.get('kind')!r}")
        done = self.assembler.add(msg)
        if done is None:
            return []
        _, arrays, meta = done
        purpose = str(meta.get("purpose"))
        held = {"valid": self.data.valid, "test": self.data.test}.get(purpose)
        if held is None:
            raise ValueError(f"predictions for an unknown purpose {purpose!r}; valid: valid, test")
        users = np.asarray(arrays["user_ids"], dtype=np.int64)
        row = np.full(self.data.n_users, -1, dtype=np.int64)
        row[users] = np.arange(users.size)
        if (row[held.users] < 0).any():
            missing = np.unique(held.users[row[held.users] < 0])
            raise PartyError(self.name, purpose, f"no predictions for users {missing[:10].tolist()}")
        predicted = np.asarray(arrays["prediction"])[row[held.users], held.items].astype(np.float64)
        error = predicted - held.values.astype(np.float64)
        report = {"users": held.users.astype(np.int64), "abs_error": np.abs(error), "squared_error": error * error}
        op = {"op": purpose, **({"epoch": meta["epoch"]} if "epoch" in meta else {})}
        return [Message(type="report", sender=self.name, receiver=COORDINATOR, arrays=report, meta=op, round=msg.round)]


class MetaMFServer(Party):
    """Trains MetaMF (or NoMetaMF) on the ratings its clients reveal; holds no other rating."""

    def __init__(
        self, channel: ChannelConfig, n_users: int, n_items: int, clients: list[str], config: dict[str, Any], name: str = "server"
    ):
        super().__init__(name, channel)
        cfg = self.config = dict(config)
        model = str(cfg.get("model", "metamf"))
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}; valid: {', '.join(MODELS)}")
        self.seed = int(cfg.get("seed", 0))
        sizes = {k: int(cfg[k]) for k in ("user_dim", "memory", "hidden", "item_dim", "item_rank", "layer_dim") if k in cfg}
        self.model = MetaMF(n_users, n_items, MetaMFConfig(**sizes, meta=model == "metamf"), seed=self.seed)
        self.trainer = MetaMFTrainer(
            self.model,
            lr=float(cfg.get("lr", 1e-4)),
            weight_decay=float(cfg.get("weight_decay", 1e-3)),
            batch_size=int(cfg.get("batch_size", 64)),
            clip=float(cfg.get("clip", 5.0)),
            seed=self.seed,
        )
        self.clients = list(clients)
        self.assembler = ArtifactAssembler()
        self.revealed: dict[str, Ratings] = {}
        self.train: Ratings | None = None
        self.collect_request: Message | None = None
        self.keep_receiver_view_kinds = {REVEALED_RATINGS}
        self.epoch = 0
        self.best: tuple[int, dict[str, torch.Tensor]] | None = None

    # ----------------------------------------------------------------- collect
    def op_collect(self, msg: Message) -> Iterable[Message]:
        self.collect_request = msg
        return [Message(type="request", sender=self.name, receiver=c, meta={"op": "reveal"}, round=msg.round) for c in self.clients]

    def on_artifact(self, msg: Message) -> Iterable[Message]:
        if msg.meta.get("kind") != REVEALED_RATINGS or msg.sender not in self.clients:
            raise ValueError(
                f"the server accepts only {REVEALED_RATINGS!r} from its clients, got {msg.meta.get('kind')!r} from {msg.sender!r}"
            )
        done = self.assembler.add(msg)
        if done is None:
            return []
        _, arrays, _ = done
        self.revealed[msg.sender] = Ratings(
            np.asarray(arrays["user_ids"], np.int64), np.asarray(arrays["item"], np.int64), np.asarray(arrays["rating"], np.float32)
        )
        if len(self.revealed) < len(self.clients) or self.collect_request is None:
            return []
        parts = [self.revealed[c] for c in self.clients]
        users = np.concatenate([p.users for p in parts])
        order = np.argsort(users, kind="stable")  # user order, whatever client held whom
        self.train = Ratings(
            users[order], np.concatenate([p.items for p in parts])[order], np.concatenate([p.values for p in parts])[order]
        )
        request, self.collect_request = self.collect_request, None
        meta = {
            "users": int(np.unique(self.train.users).size),
            "ratings": len(self.train),
            "epochs": int(self.config.get("epochs", 100)),
            "patience": int(self.config.get("patience", 3)),
        }
        return [self.reply(request, **meta)]

    # ----------------------------------------------------------------- training
    def op_epoch(self, msg: Message) -> Iterable[Message]:
        if self.train is None:
            raise PartyError(self.name, "epoch", "no ratings yet: send control{op: collect} first")
        if msg.meta.get("keep") and self.epoch > 0:
            self.best = (self.epoch, self.trainer.state())
        self.epoch += 1
        loss = self.trainer.epoch(self.train)
        return [*self._predictions("valid", msg), self.reply(msg, epoch=self.epoch, loss=loss)]

    def op_test(self, msg: Message) -> Iterable[Message]:
        if msg.meta.get("keep") or self.best is None:
            self.best = (self.epoch, self.trainer.state())
        best_epoch, state = self.best
        self.trainer.load(state)
        out = self._predictions("test", msg)
        self._record_instrument(msg)
        return [*out, self.reply(msg, best_epoch=best_epoch, epochs=self.epoch)]

    def _predictions(self, purpose: str, msg: Message) -> list[Message]:
        """Each client's users' predicted ratings for every item, one artifact per client."""
        predicted = self.model.predict_all()  # every user, in fixed chunks: a row never depends on the clients
        meta: dict[str, Any] = {"purpose": purpose, **({"epoch": self.epoch} if purpose == "valid" else {})}
        out: list[Message] = []
        for client in self.clients:
            users = np.unique(self.revealed[client].users)
            out.extend(
                artifact_chunks(
                    sender=self.name,
                    receiver=client,
                    name=f"{PREDICTIONS_KIND}@{purpose}",
                    kind=PREDICTIONS_KIND,
                    user_ids=users,
                    arrays={"prediction": predicted[users]},
                    meta=meta,
                    round=msg.round,
                )
            )
        return out

    def _record_instrument(self, msg: Message) -> None:
        """The server's learned user embeddings, as a plaintext artifact in its receiver view
        only (the evaluation attacks them; nothing is sent)."""
        users = np.unique(self.train.users)
        artifact = Message(
            type="artifact",
            sender=self.name,
            receiver=self.name,
            arrays={"user_ids": users, "embedding": self.model.user_vectors()[users]},
            meta={"artifact": SERVER_USER_EMBEDDINGS, "kind": SERVER_USER_EMBEDDINGS, "chunk": 0, "chunks": 1, "instrument": True},
            round=msg.round,
        )
        self._receiver_view.append(Endpoint.receiver_view(artifact))
