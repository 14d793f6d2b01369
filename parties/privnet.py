"""PrivNet across two parties: split learning of Algorithm 1 over protocol messages.

The source owns the source domain, the public users' attributes, the source network (with the
translation matrix H) and the simulated attacker. The target owns the target domain and the
target network. What crosses, and why (every arrow is an envelope the eavesdropper sees):

  training step b (driven by the target, one pass over its examples per epoch):
    target -> source  request{op: transfer, step: 0} users_0       first step of the epoch only
    source -> target  artifact{kind: x_trans_batch} x_trans[users_b]
    target -> source  gradient{step: b, next_step: b+1} dL_T/dx_trans[users_b], users_b+1
    (the source updates its attacker, Algorithm 1 lines 1-3, and its own network, line 4, then
    serves the next step's x_trans: the gradient carries the next request, so a step costs two
    envelopes, not three; the last step's gradient carries none)
  with an exchange interval K (`exchange_interval`), the same messages carry K steps
  (users, x_trans and gradients one step after another, `counts` per step): fewer round trips.
  end of epoch e:
    target -> source  request{op: release, purpose: valid}
    source -> target  artifact{kind: user_representation, artifact: x_trans@e}   all users
    target -> coordinator  report{op: epoch, valid metrics, improved, stop}
    coordinator -> source  control{op: checkpoint} when the target improved (early stopping)
  test:
    coordinator -> source  control{op: restore}      best epoch's source network
    coordinator -> target  control{op: test}         target restores its best network and asks
    target -> source  request{op: release, purpose: test}
    source -> target  artifact{kind: user_representation, artifact: x_trans}   the released artifact
    target -> coordinator  report{op: test, utility}

The attacker's gradient never leaves the source (L(theta) - lambda L(Theta) is optimised by the
source on its own side); the target only ever returns dL_T/dx_trans. The computation is
step-for-step the one of `models.privnet.train_privnet_joint` with the same seed.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from models.privnet import (
    STREAM_PUBLIC_USERS,
    AttributeAdversary,
    PrivNetSource,
    PrivNetTarget,
    UserStream,
    adversary_step,
    attacker_updates,
    check_interval,
    evaluate_privnet,
    group_transfer,
    public_users_of,
    source_step,
    source_stream,
    source_transfer,
    target_step,
    target_stream,
    train_privnet_target_only,
    transfer_for_step,
    user_query,
)
from models.training import EarlyStopping, adam, numpy_rng, restore, snapshot
from protocol import Message

from .base import COORDINATOR, artifact_chunks
from .names import ADVERSARY_PRESETS, PRIVNET_BATCH_KIND, PRIVNET_RELEASED, PRIVNET_REPRESENTATION_KIND, adversary_steps
from .roles import SourceParty, TargetParty

RELEASED = PRIVNET_RELEASED  # the per-user representation released for the test
REPRESENTATION_KIND = PRIVNET_REPRESENTATION_KIND
BATCH_KIND = PRIVNET_BATCH_KIND


def _net_options(config: dict) -> dict:
    return {
        "dim": int(config.get("dim", 80)),
        "hidden": tuple(config.get("hidden", (80, 64))),
        "activation": str(config.get("activation", "relu")),
    }


def split_rows(rows: np.ndarray, counts: np.ndarray | None, what: str) -> list[np.ndarray]:
    """The rows of each training step of a group (`counts` rows each, in order); one step
    when there are no counts."""
    if counts is None:
        return [rows]
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1 or counts.size == 0 or counts.min() < 1 or int(counts.sum()) != rows.shape[0]:
        raise ValueError(f"{what}: counts {counts.tolist()} do not split its {rows.shape[0]} rows into steps")
    return np.split(rows, np.cumsum(counts)[:-1])


class PrivNetSourceParty(SourceParty):
    """`data` is the source domain as the source holds it: after the variant's defense
    (`parties.defenses.apply_defense`, described by `defense_info`), if any."""

    def __init__(self, *args, defense_info: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        cfg, seed = self.config, self.seed
        self.lam = float(cfg.get("lam", 1.0))
        self.clip = float(cfg.get("clip", 5.0))
        self.window = int(cfg.get("window", 10))
        self.defense_info: dict = dict(defense_info or {"defense": "none"})
        data = self.data
        net = _net_options(cfg)
        self.net = PrivNetSource(data.n_items, net["dim"], net["hidden"], seed=seed, activation=net["activation"])
        self.adversary = AttributeAdversary(self.net.trans_dim, tuple(cfg.get("adv_hidden", (64,))), seed=seed)
        lr = float(cfg.get("lr", 5e-4))
        # attacker updates per step and its own learning rate: the preset's unless set (0 = unset)
        preset = ADVERSARY_PRESETS[str(cfg.get("adversary", "paper"))]
        self.adv_steps = attacker_updates(self.lam, adversary_steps(cfg))
        self.opt = adam(self.net.parameters(), lr)
        self.opt_adv = adam(self.adversary.parameters(), float(cfg.get("adv_lr") or 0) or preset["lr"] or lr)
        histories = data.histories()
        self.q_hist, self.q_cand = user_query(histories, data.n_items, self.window)
        self.labels = {k: np.asarray(v, dtype=np.int64) for k, v in self.attributes.as_dict().items()}
        batch = int(cfg.get("batch_size", 128))
        self.s_stream = source_stream(data, self.window, batch, seed)
        self.pub_stream = UserStream(public_users_of(self.labels), batch, numpy_rng(seed, STREAM_PUBLIC_USERS))
        # step -> (users, live x_trans with its graph) awaiting the target's gradient
        self.pending: dict[int, tuple[np.ndarray, torch.Tensor]] = {}
        self.best_state = None
        self.losses = {"adv": 0.0, "S": 0.0, "steps": 0}

    def _modules(self):
        return {"source": self.net, "adversary": self.adversary}

    def on_request(self, msg: Message) -> Iterable[Message]:
        op = msg.meta.get("op")
        if op == "transfer":
            return self._transfer(msg)
        if op == "release":
            return self._release(msg)
        raise ValueError(f"unknown request op {op!r}; valid: transfer, release")

    def _transfer(self, msg: Message) -> Iterable[Message]:
        return self._serve_transfer(msg, int(msg.meta["step"]), msg.arrays["user_ids"], msg.arrays.get("counts"))

    def _serve_transfer(self, msg: Message, step: int, user_ids, counts) -> list[Message]:
        """The x_trans of one step's users (or of a group of K steps'), asked for by a transfer
        request or by the previous step's gradient."""
        users = np.asarray(user_ids, dtype=np.int64)
        if users.ndim != 1 or users.size == 0 or users.min() < 0 or users.max() >= self.data.n_users:
            raise ValueError(f"transfer request needs 1-d user ids in [0, {self.data.n_users}), got shape {users.shape}")
        # One training step, or a group of K (exchange interval): each step's users in order.
        groups = split_rows(users, counts, "transfer request")
        xs, x_live = group_transfer(self.net, self.q_hist, self.q_cand, groups)
        self.pending[step] = (groups, x_live)
        meta: dict = {"step": step}
        if len(groups) > 1:
            meta["counts"] = [int(g.size) for g in groups]
        return artifact_chunks(
            sender=self.name,
            receiver=msg.sender,
            name=f"{BATCH_KIND}@{step}",
            kind=BATCH_KIND,
            user_ids=users,
            arrays={"x_trans": xs[0] if len(xs) == 1 else np.concatenate(xs)},
            meta=meta,
            round=msg.round,
        )

    def on_gradient(self, msg: Message) -> Iterable[Message]:
        step = int(msg.meta["step"])
        pending = self.pending.pop(step, None)
        if pending is None:
            raise ValueError(f"gradient for step {step} that has no pending transfer")
        groups, x_live = pending
        n = sum(g.size for g in groups)
        grad = np.asarray(msg.arrays["grad"], dtype=np.float32)
        if grad.shape != (n, self.net.trans_dim):
            raise ValueError(f"gradient for step {step} has shape {grad.shape}, expected {(n, self.net.trans_dim)}")
        grads = np.split(grad, np.cumsum([g.size for g in groups])[:-1])
        for j, (users, grad_j) in enumerate(zip(groups, grads)):
            self._attacker_steps()
            if j > 0:  # the network moved since the group's x_trans: through x_trans as it is now
                x_live = transfer_for_step(self.net, self.q_hist[users], self.q_cand[users])[1]
            out = source_step(
                self.net,
                self.adversary,
                self.opt,
                self.s_stream.next_batch(),
                x_live,
                {k: v[users] for k, v in self.labels.items()},
                grad_j,
                self.lam,
                self.clip,
            )
            self.losses["S"] += out["loss_S"]
            self.losses["steps"] += 1
        if "next_step" not in msg.meta:
            return []
        # The next step's request, carried by this gradient: served after the update, as a
        # request sent right after the gradient would be.
        return self._serve_transfer(msg, int(msg.meta["next_step"]), msg.arrays["next_user_ids"], msg.arrays.get("next_counts"))

    def _attacker_steps(self) -> None:
        """Algorithm 1, lines 1-3: the simulated attacker learns first, on a public-user batch,
        before each recommender update of the source (not at lambda = 0: `attacker_updates`),
        as in the reference loop. (It reads only the source network, which no update touches
        between a step's transfer and its gradient: for one step at a time it is the same as
        training it before the transfer.)"""
        for _ in range(self.adv_steps):
            pub = self.pub_stream.next_batch()
            if pub.size:
                self.losses["adv"] += (
                    adversary_step(
                        self.net,
                        self.adversary,
                        self.opt_adv,
                        self.q_hist[pub],
                        self.q_cand[pub],
                        {k: v[pub] for k, v in self.labels.items()},
                        self.clip,
                    )
                    / self.adv_steps
                )

    def _release(self, msg: Message) -> Iterable[Message]:
        x = source_transfer(self.net, self.q_hist, self.q_cand)
        purpose = str(msg.meta.get("purpose", "test"))
        name = RELEASED if purpose == "test" else f"{RELEASED}@{int(msg.meta.get('epoch', 0))}"
        return artifact_chunks(
            sender=self.name,
            receiver=msg.sender,
            name=name,
            kind=REPRESENTATION_KIND,
            user_ids=np.arange(self.data.n_users, dtype=np.int64),
            arrays={"x_trans": x},
            meta={"purpose": purpose, "lam": self.lam, "defense": self.defense_info["defense"]},
            round=msg.round,
        )

    def op_checkpoint(self, msg: Message) -> Iterable[Message]:
        self.best_state = snapshot(self._modules())
        return [self.reply(msg)]

    def op_restore(self, msg: Message) -> Iterable[Message]:
        if self.best_state is not None:
            restore(self._modules(), self.best_state)
        steps = max(1, self.losses["steps"])
        return [
            self.reply(
                msg,
                defense=self.defense_info,
                mean_loss_S=self.losses["S"] / steps,
                mean_loss_adv=self.losses["adv"] / steps if self.adv_steps else None,
            )
        ]


class PrivNetTargetParty(TargetParty):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        cfg, seed = self.config, self.seed
        self.window = int(cfg.get("window", 10))
        self.clip = float(cfg.get("clip", 5.0))
        self.epochs = int(cfg.get("epochs", 50))
        self.max_steps = int(cfg.get("max_steps_per_epoch") or 0) or None  # 0: a full pass
        self.interval = check_interval(int(cfg.get("exchange_interval", 1)))  # training steps per exchange
        net = _net_options(cfg)
        self.net = PrivNetTarget(
            self.data.n_items, net["dim"], net["hidden"], trans_dim=net["hidden"][0], seed=seed, activation=net["activation"]
        )
        self.opt = adam(self.net.parameters(), float(cfg.get("lr", 5e-4)))
        self.stream = target_stream(self.data, self.window, int(cfg.get("batch_size", 128)), seed)
        self.steps = self.stream.steps_per_epoch if self.max_steps is None else min(self.stream.steps_per_epoch, int(self.max_steps))
        self.stopper = EarlyStopping("HR@10", int(cfg.get("patience", 5)))
        self.epoch = 0
        self.step = 0
        self.batches: list = []  # the training steps whose x_trans was asked for
        self.inverses: list[np.ndarray] = []
        self.loss_sum = 0.0
        self.history: list[dict] = []
        # The curious receiver keeps every released representation, and what the per-step
        # batches told it about each user, folded per epoch (each user's latest x_trans).
        self.keep_receiver_view_kinds = {REPRESENTATION_KIND}
        self.fold_receiver_view_kinds = {BATCH_KIND}

    # -- the training loop, one message at a time
    def op_epoch(self, msg: Message) -> Iterable[Message]:
        self.epoch = int(msg.meta["epoch"])
        self.step, self.loss_sum = 0, 0.0
        self._control = msg
        return [self._next_request(msg.round)]

    def _next_request(self, round: int) -> Message:
        if self.step >= self.steps:
            return self._release_request(round)
        return Message(
            type="request",
            sender=self.name,
            receiver="source",
            round=round,
            arrays=self._next_group(),
            meta={"op": "transfer", "step": self.step},
        )

    def _release_request(self, round: int) -> Message:
        return Message(
            type="request",
            sender=self.name,
            receiver="source",
            round=round,
            meta={"op": "release", "purpose": "valid", "epoch": self.epoch},
        )

    def _next_group(self) -> dict[str, np.ndarray]:
        """Draw the next K training steps (exchange interval; not past the end of the epoch):
        the users whose x_trans they need, each step's after the other, with `counts` per step
        when there are several."""
        self.batches = [self.stream.next_batch() for _ in range(min(self.interval, self.steps - self.step))]
        unique = [np.unique(batch.users, return_inverse=True) for batch in self.batches]
        self.inverses = [inverse for _, inverse in unique]
        arrays = {"user_ids": np.concatenate([users for users, _ in unique]).astype(np.int64)}
        if len(unique) > 1:
            arrays["counts"] = np.array([users.size for users, _ in unique], dtype=np.int64)
        return arrays

    def absorbed(self, name, arrays, meta, last: Message) -> Iterable[Message]:
        kind = last.meta.get("kind")
        if kind == BATCH_KIND:
            del self.artifacts[name]  # transient: used for this step only
            step = int(meta["step"])
            if step != self.step or not self.batches:
                raise ValueError(f"x_trans for step {step} arrived while the target is at step {self.step}")
            counts = meta.get("counts")
            xs = split_rows(arrays["x_trans"], None if counts is None else np.asarray(counts, dtype=np.int64), "x_trans")
            if [x.shape[0] for x in xs] != [inv.max(initial=-1) + 1 for inv in self.inverses]:
                raise ValueError(
                    f"x_trans for step {step} has rows {[x.shape[0] for x in xs]} for steps needing {[inv.max() + 1 for inv in self.inverses]}"
                )
            grads = []
            for batch, x, inverse in zip(self.batches, xs, self.inverses):
                loss, grad = target_step(self.net, self.opt, batch, x, inverse, self.clip)
                self.loss_sum += loss
                grads.append(grad.astype(np.float32))
            grad_arrays = {"user_ids": arrays["user_ids"], "grad": grads[0] if len(grads) == 1 else np.concatenate(grads)}
            if len(grads) > 1:
                grad_arrays["counts"] = np.array([x.shape[0] for x in xs], dtype=np.int64)
            grad_meta: dict = {"step": step}
            self.step += len(self.batches)
            self.batches, self.inverses = [], []
            last_step = self.step >= self.steps  # then validation comes next
            if not last_step:  # the next step's request travels with this gradient (one envelope fewer per step)
                grad_arrays.update({f"next_{key}": value for key, value in self._next_group().items()})
                grad_meta["next_step"] = self.step
            grad_msg = Message(type="gradient", sender=self.name, receiver="source", round=last.round, arrays=grad_arrays, meta=grad_meta)
            return [grad_msg, self._release_request(last.round)] if last_step else [grad_msg]
        if kind == REPRESENTATION_KIND and meta.get("purpose") == "valid":
            x_all = self.per_user_artifact(name, "x_trans")
            del self.artifacts[name]
            valid, _, _ = evaluate_privnet(self.net, self.data, x_all, "valid", self.window)
            self.seal_view_folds()  # the epoch's batches are all in
            improved = self.stopper.update(self.epoch, valid, {"target": self.net})
            row = {"epoch": self.epoch, "loss_T": self.loss_sum / max(1, self.steps), **{f"valid_{k}": v for k, v in valid.items()}}
            self.history.append(row)
            stop = self.stopper.should_stop or self.epoch >= self.epochs
            return [
                Message(
                    type="report",
                    sender=self.name,
                    receiver=COORDINATOR,
                    round=last.round,
                    meta={"op": "epoch", "epoch": self.epoch, "valid": valid, "improved": improved, "stop": stop},
                )
            ]
        if kind == REPRESENTATION_KIND and meta.get("purpose") == "test":
            x_all = self.per_user_artifact(name, "x_trans")
            _, _, scores = evaluate_privnet(self.net, self.data, x_all, "test", self.window)
            return [self.utility_report(self._test_request, scores, self._fit_details())]
        raise ValueError(f"unexpected artifact {name!r} of kind {kind!r}")

    def _fit_details(self) -> dict:
        return {
            "best_epoch": self.stopper.best_epoch,
            "best_valid": self.stopper.best_metrics,
            "epochs_run": self.epoch,
            "history": self.history,
        }

    def op_test(self, msg: Message) -> Iterable[Message]:
        self.stopper.restore_best({"target": self.net})
        self.net.eval()
        self._test_request = msg
        return [Message(type="request", sender=self.name, receiver="source", round=msg.round, meta={"op": "release", "purpose": "test"})]

    def op_fit_alone(self, msg: Message) -> Iterable[Message]:
        """Target-only: the same target network trained without any transfer (utility floor)."""
        cfg = self.config
        net, report = train_privnet_target_only(
            self.data,
            epochs=self.epochs,
            batch_size=int(cfg.get("batch_size", 128)),
            lr=float(cfg.get("lr", 5e-4)),
            clip=self.clip,
            seed=self.seed,
            patience=int(cfg.get("patience", 5)),
            window=self.window,
            max_steps_per_epoch=None if self.max_steps is None else int(self.max_steps),
            **_net_options(cfg),
        )
        _, _, scores = evaluate_privnet(net, self.data, None, "test", self.window)
        return [
            self.utility_report(
                msg,
                scores,
                {
                    "best_epoch": report.best_epoch,
                    "best_valid": report.best_valid,
                    "epochs_run": report.epochs_run,
                    "history": report.history,
                },
            )
        ]
