"""`privacy-budget`: users reveal only a fraction beta of their ratings to a MetaMF server.

Single-domain: each user's ratings are split per user into training, validation and test
ratings (`sim/splits/ratings.py`); the users sit in user-client parties (`clients=N` of them,
one by default; on the Flower runtimes each is its own node) and reveal ceil(n_u * beta) of
their training ratings, sampled uniformly, to a server that trains MetaMF or NoMetaMF (its
prediction-layer generators frozen). Validation and test ratings are never subject to beta and
never leave the clients: the clients score the server's predictions locally (message flow and
why: `parties/privacy_budget.py`).

Utility: MAE and RMSE on the test ratings, overall and for the slides' user groups (Low, Med,
High: 5% of users each, with the fewest, the median and the most ratings); ΔMAE@beta =
MAE@beta / MAE@1 of the same model (`relative_to_reference` in results.json).

Attacks (attribute inference, gender and age group):
- `attribute`: on the revealed ratings, each user's revealed rating of every item (0 where
  nothing was revealed); the wire eavesdropper on the plaintext channel and the server as
  curious receiver. The same attacker on the full ratings is the beta = 1 variant of each
  model (all training ratings revealed): every variant's `paired` leakage is its difference
  to that, seed by seed.
- `server_embeddings`: on the user embeddings the server learned (the server's instrument;
  never on the wire, so the wire's figures are the no-artifact baseline).

Population: every user with ratings (the scenario fixes it; the cross-domain "overlap" rule
does not apply to one domain): the attackers' public and private users are drawn from them.

Paper settings (public code of the slides): user embedding 32, memory 32 x 128, generators
with a hidden layer of 512, prediction layers 32 x 8 and 8 x 1, item embeddings of rank 8;
MSE; Adam 1e-4 with weight decay 1e-3, batch 64, clip 5; the public code trains 100 epochs,
here up to 100 with early stopping on validation RMSE.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np

from parties.names import REVEALED_RATINGS, SERVER_USER_EMBEDDINGS

from ..errors import ConfigError, RunError
from .base import AttributeAttack, Axis, Grid, Option, Outcome, RatingUtility, Scenario, UserGroups, Variant

if TYPE_CHECKING:
    from attacks.artifact import Artifact
    from parties.base import ChannelConfig, Party
    from protocol import Message

    from ..coordinator import Relay
    from ..world import World

BETAS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
GROUP_FRACTION = 0.05  # of users in each of Low, Med, High (the slides' group sizes: 302 of ML-1M's 6,040)
SERVER = "server"


def client_names(n: int) -> tuple[str, ...]:
    return tuple(f"client-{k}" for k in range(n))


def activity_groups(world: World) -> dict[str, np.ndarray]:
    """Low, Med, High: the 5% of users with the fewest, the median and the most ratings
    (ties broken by user id)."""
    counts = np.bincount(world.dataset.ratings["user"].to_numpy(), minlength=world.dataset.n_users)
    rated = np.flatnonzero(counts > 0)
    ranked = rated[np.lexsort((rated, counts[rated]))]
    k = max(1, round(GROUP_FRACTION * rated.size))
    mid = (rated.size - k) // 2
    return {"Low": np.sort(ranked[:k]), "Med": np.sort(ranked[mid : mid + k]), "High": np.sort(ranked[-k:])}


def revealed_features(artifact: Artifact, world: World) -> np.ndarray:
    """[n_users, n_items]: each user's revealed rating of each item, 0 where none was revealed."""
    dense = np.zeros((world.dataset.n_users, world.dataset.n_items), dtype=np.float32)
    dense[artifact.user_ids, np.asarray(artifact.arrays["item"], dtype=np.int64)] = artifact.arrays["rating"]
    return dense


class PrivacyBudgetScenario(Scenario):
    name = "privacy-budget"
    title = "Privacy budget: users reveal a fraction beta of their ratings to a MetaMF server"
    paper = "MetaMF under privacy budgets (papers/003, slides)"
    parties = (SERVER, *client_names(1))
    receiver = SERVER
    population = "all"
    options = (
        Option("clients", 1, "user-client parties the users are spread over (on Flower each is a node, on Ray an actor)"),
        Option("epochs", 100, "maximum training epochs (early stopping on validation RMSE)", quick=2),
        Option("patience", 3, "epochs without a lower validation RMSE before stopping", quick=1),
        Option("lr", 1e-4, "Adam learning rate"),
        Option("weight_decay", 1e-3, "Adam's L2 weight decay"),
        Option("batch_size", 64, "ratings per training step", quick=256),
        Option("clip", 5.0, "gradient-norm clip"),
        Option("user_dim", 32, "user embedding size"),
        Option("memory", 128, "collaborative vector size (memory 32 x this)"),
        Option("hidden", 512, "hidden layer of each generator", quick=64),
        Option("item_dim", 32, "private item embedding size"),
        Option("item_rank", 8, "rank of the private item embeddings"),
        Option("layer_dim", 8, "width of the generated prediction layer"),
        Option("beta", 1.0, "privacy budget: the fraction of training ratings each user reveals", by_variant=True),
        Option(
            "model", "metamf", "metamf, or nometamf (prediction-layer generators frozen)", by_variant=True, choices=("metamf", "nometamf")
        ),
    )
    grid = Grid(axes=(Axis("beta", "beta", BETAS), Axis("model", "model", ("metamf", "nometamf"), parse=str)))
    reference = "beta=1,model=metamf"
    utility = RatingUtility(groups=UserGroups("activity", activity_groups))
    attacks = (
        AttributeAttack(kinds=(REVEALED_RATINGS,), field="rating", final=REVEALED_RATINGS, features=revealed_features),
        AttributeAttack(kinds=(SERVER_USER_EMBEDDINGS,), field="embedding", final=SERVER_USER_EMBEDDINGS, name="server_embeddings"),
    )
    # The per-epoch predictions the clients download are counted, not kept.
    retained_kinds = (REVEALED_RATINGS, SERVER_USER_EMBEDDINGS)

    def reference_of(self, variant: Variant) -> str | None:
        """The same model with every training rating revealed (beta = 1)."""
        return re.sub(r"beta=[^,]+", "beta=1", variant.name) if "beta=" in variant.name else self.reference

    def party_names(self, options: dict[str, Any]) -> tuple[str, ...]:
        n = options.get("clients", 1)
        if not isinstance(n, int) or n < 1:
            raise ConfigError(f"--set clients={n!r}: need at least one client party")
        return (SERVER, *client_names(n))

    def build_party(self, name: str, world: World, channel: ChannelConfig, options: dict[str, Any]) -> Party:
        from parties.privacy_budget import MetaMFServer, UserClient  # torch: only where a party runs

        from ..splits.ratings import rating_split

        split = rating_split(world.dataset, int(options["seed"]))
        clients = self.party_names(options)[1:]
        if name == SERVER:  # the catalogue sizes, nothing else of the data
            return MetaMFServer(channel, split.data.n_users, split.data.n_items, list(clients), options)
        blocks = np.array_split(split.users, len(clients))
        users = blocks[clients.index(name)]
        if users.size == 0:
            raise ConfigError(f"--set clients={len(clients)}: more clients than the {split.users.size} users with ratings")
        d = split.data
        own = type(d)(d.n_users, d.n_items, d.train.of_users(users), d.valid.of_users(users), d.test.of_users(users))
        return UserClient(name, channel, own, options)

    def drive(self, relay: Relay, variant: Variant) -> Outcome:
        collected = relay.request_one(SERVER, "collect")
        max_epochs, patience = int(collected.meta["epochs"]), int(collected.meta["patience"])
        best, best_epoch, bad, keep, history = float("inf"), 0, 0, False, []
        epoch = 0
        for epoch in range(1, max_epochs + 1):
            replies = relay.request(SERVER, "epoch", epoch=epoch, keep=keep, round=epoch)
            errors = _errors(replies, "valid")
            rmse = float(np.sqrt(np.mean(errors["squared_error"])))
            ack = next(m for m in replies if m.type == "ack" and m.meta.get("op") == "epoch")
            history.append(
                {"epoch": epoch, "loss": float(ack.meta["loss"]), "valid_MAE": float(np.mean(errors["abs_error"])), "valid_RMSE": rmse}
            )
            keep = rmse < best
            best, best_epoch, bad = (rmse, epoch, 0) if keep else (best, best_epoch, bad + 1)
            if bad >= patience:
                break
        replies = relay.request(SERVER, "test", keep=keep, round=epoch + 1)
        errors = _errors(replies, "test")
        done = next(m for m in replies if m.type == "ack" and m.meta.get("op") == "test")
        if int(done.meta["best_epoch"]) != best_epoch:
            raise RunError(f"the server restored epoch {done.meta['best_epoch']}, the best validation RMSE was at epoch {best_epoch}")
        utility = {"MAE": float(np.mean(errors["abs_error"])), "RMSE": float(np.sqrt(np.mean(errors["squared_error"])))}
        details = {
            "model": variant.options.get("model"),
            "beta": variant.options.get("beta"),
            "clients": len(_reporters(replies, "test")),
            "revealed_ratings": int(collected.meta["ratings"]),
            "revealing_users": int(collected.meta["users"]),
            "epochs": epoch,
            "best_epoch": best_epoch,
            "valid_history": history,
            "population": "every user with ratings (the scenario fixes population 'all'); attackers train on the public "
            "users among them and are tested on the others",
        }
        return Outcome(utility=utility, per_user=errors, details=details)


def _reporters(replies: list[Message], op: str) -> list[Message]:
    return [m for m in replies if m.type == "report" and m.meta.get("op") == op]


def _errors(replies: list[Message], op: str) -> dict[str, np.ndarray]:
    """Every client's per-rating errors, in user order (the same rows whatever the clients)."""
    reports = sorted(_reporters(replies, op), key=lambda m: int(m.sender.rsplit("-", 1)[1]))
    if not reports:
        raise RunError(f"no client reported {op} errors")
    cat = {k: np.concatenate([np.asarray(m.arrays[k]) for m in reports]) for k in ("users", "abs_error", "squared_error")}
    order = np.argsort(cat["users"], kind="stable")
    return {k: v[order] for k, v in cat.items()}
