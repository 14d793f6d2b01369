"""PrivNet's reference training loops in one process (Algorithm 1, and the target alone), and
evaluation of the target on held-out candidates."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..data import RankingData
from ..metrics import ranking_metrics
from ..training import EarlyStopping, Stopwatch, TrainReport, adam, numpy_rng
from .inputs import (
    STREAM_PUBLIC_USERS,
    UserStream,
    eval_inputs,
    score_candidates,
    source_stream,
    target_stream,
    user_query,
)
from .networks import WINDOW, AttributeAdversary, PrivNetSource, PrivNetTarget
from .steps import (
    adversary_step,
    attacker_updates,
    check_interval,
    group_transfer,
    recommender_step_joint,
    source_step,
    source_transfer,
    target_step,
    transfer_for_step,
)


def public_users_of(public_labels: Mapping[str, np.ndarray]) -> np.ndarray:
    """Users with at least one known attribute (label >= 0)."""
    known = np.zeros(len(next(iter(public_labels.values()))), dtype=bool)
    for v in public_labels.values():
        known |= np.asarray(v) >= 0
    return np.flatnonzero(known)


def transferred_representations(source: PrivNetSource, histories: Sequence[np.ndarray], window: int = WINDOW) -> np.ndarray:
    """Every user's released x_u|trans [n_users, trans_dim] from their source histories."""
    return source_transfer(source, *user_query(histories, source.n_items, window))


def evaluate_privnet(
    target: PrivNetTarget,
    target_data: RankingData,
    x_trans_all: np.ndarray | None,
    split: str = "valid",
    window: int = WINDOW,
    k: int = 10,
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Ranking metrics of the target on `split`; returns (metrics, users, scores [U, C])."""
    users, cands = target_data.candidates(split)
    if users.size == 0:
        raise ValueError(f"target domain has no users with a {split} item; cannot evaluate")
    # The test item is scored after the validation item, which is then part of the history.
    hist = eval_inputs(target_data.histories("valid" if split == "test" else "train"), cands, target_data.n_items, window, users=users)
    scores = score_candidates(target, hist, cands, None if x_trans_all is None else x_trans_all[users])
    return ranking_metrics(scores, k), users, scores


def _check_labels(public_labels: Mapping[str, np.ndarray], n_users: int, adversary: AttributeAdversary) -> dict[str, np.ndarray]:
    labels = {k: np.asarray(v, dtype=np.int64) for k, v in public_labels.items()}
    for name, c in adversary.n_classes.items():
        if name not in labels:
            raise KeyError(f"public_labels lacks {name!r}; give -1 for users whose value is unknown")
        v = labels[name]
        if v.shape != (n_users,) or v.max(initial=-1) >= c or v.min(initial=-1) < -1:
            raise ValueError(f"public_labels[{name!r}] must be [n_users={n_users}] in {{-1, 0..{c - 1}}}")
    return labels


def train_privnet_joint(
    source_data: RankingData,
    target_data: RankingData,
    public_labels: Mapping[str, np.ndarray],
    *,
    lam: float = 1.0,
    epochs: int = 50,
    batch_size: int = 128,
    lr: float = 5e-4,
    clip: float | None = 5.0,
    seed: int = 0,
    patience: int = 5,
    dim: int = 80,
    hidden: Sequence[int] = (80, 64),
    activation: str = "relu",
    adv_hidden: Sequence[int] = (64,),
    adv_steps: int = 1,
    adv_lr: float | None = None,
    window: int = WINDOW,
    single_graph: bool = False,
    max_steps_per_epoch: int | None = None,
    exchange_interval: int = 1,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[PrivNetSource, PrivNetTarget, AttributeAdversary, TrainReport]:
    """Algorithm 1 in one process: per step (1) adversary update(s), (2) recommender update.

    An epoch is one pass over the target's examples; the source's examples and the public users
    cycle through their own shuffled streams (independent RNG streams of `seed`, so each party
    can reproduce its own draws). With `single_graph` the recommender update runs as one
    autograd graph (`recommender_step_joint`); otherwise it runs the split steps exchanging
    numpy arrays exactly as the parties do; both give the same parameters. Early stopping on
    the target's validation HR@10; the best epoch's weights of all three networks are restored.

    `adv_steps` attacker updates per recommender update (paper: 1) and the attacker's own
    learning rate `adv_lr` (default `lr`) matter: -lam * L_adv rewards making a stale attacker
    confidently wrong, which flips the attribute in x_trans instead of removing it. On ML-100K
    (year split, 5 seeds, through the parties) the paper's setting lowered the best attacker's
    gender AUC from 0.603 (lam = 0) to 0.54-0.57 for lam in 0.1..1 (README, "PrivNet results");
    on the small synthetic set of the tests it was erratic (one seed in three leaked more than
    lam = 0), while 5 attacker steps at lr 1e-2 were not.
    `max_steps_per_epoch` caps an epoch (for tests and smoke runs).

    `exchange_interval` K (split steps only): the parties exchange once per K steps
    (`exchange_group`); K = 1 is Algorithm 1 step by step.
    """
    check_interval(exchange_interval)
    if source_data.n_users != target_data.n_users:
        raise ValueError(f"source and target must share user ids; got {source_data.n_users} vs {target_data.n_users} users")
    if adv_steps < 0 or epochs < 1:
        raise ValueError(f"need adv_steps >= 0 and epochs >= 1; got {adv_steps}, {epochs}")
    if single_graph and exchange_interval != 1:
        raise ValueError("single_graph runs one step at a time: it needs exchange_interval=1")
    adv_steps = attacker_updates(lam, adv_steps)
    clock = Stopwatch()
    source = PrivNetSource(source_data.n_items, dim, hidden, seed=seed, activation=activation)
    target = PrivNetTarget(target_data.n_items, dim, hidden, trans_dim=source.trans_dim, seed=seed, activation=activation)
    adversary = AttributeAdversary(source.trans_dim, adv_hidden, seed=seed)
    labels = _check_labels(public_labels, target_data.n_users, adversary)
    opt_s = adam(source.parameters(), lr)
    opt_t = adam(target.parameters(), lr)
    opt_a = adam(adversary.parameters(), lr if adv_lr is None else adv_lr)

    s_hist_all = source_data.histories()
    q_hist_all, q_cand_all = user_query(s_hist_all, source_data.n_items, window)
    t_stream = target_stream(target_data, window, batch_size, seed)
    s_stream = source_stream(source_data, window, batch_size, seed)
    pub_stream = UserStream(public_users_of(labels), batch_size, numpy_rng(seed, STREAM_PUBLIC_USERS))
    steps = t_stream.steps_per_epoch if max_steps_per_epoch is None else min(t_stream.steps_per_epoch, max_steps_per_epoch)

    modules = {"source": source, "target": target, "adversary": adversary}
    stopper = EarlyStopping("HR@10", patience)
    history: list[dict[str, Any]] = []
    epoch = 0
    for epoch in range(1, epochs + 1):
        sums = {"loss_T": 0.0, "loss_S": 0.0, "loss_adv": 0.0, "loss_adv_rec": 0.0}
        if single_graph:
            for _ in range(steps):
                for _ in range(adv_steps):
                    pub = pub_stream.next_batch()
                    if pub.size:
                        sums["loss_adv"] += (
                            adversary_step(
                                source, adversary, opt_a, q_hist_all[pub], q_cand_all[pub], {k: v[pub] for k, v in labels.items()}, clip
                            )
                            / adv_steps
                        )
                tb, sb = t_stream.next_batch(), s_stream.next_batch()
                users_b, inv = np.unique(tb.users, return_inverse=True)
                q_labels = {k: v[users_b] for k, v in labels.items()}
                out = recommender_step_joint(
                    source,
                    target,
                    adversary,
                    opt_s,
                    opt_t,
                    tb,
                    sb,
                    q_hist_all[users_b],
                    q_cand_all[users_b],
                    inv,
                    q_labels,
                    lam,
                    clip,
                )
                for k_, v_ in out.items():
                    sums[k_] += v_
        else:
            for start in range(0, steps, exchange_interval):
                batches = [t_stream.next_batch() for _ in range(min(exchange_interval, steps - start))]
                unique = [np.unique(tb.users, return_inverse=True) for tb in batches]
                users = [u for u, _ in unique]
                # target's side: x_trans of the whole group, from the source network as it is now
                xs, live = group_transfer(source, q_hist_all, q_cand_all, users)
                grads = []
                for tb, (_, inv), x in zip(batches, unique, xs):
                    loss_t, grad = target_step(target, opt_t, tb, x, inv, clip)
                    sums["loss_T"] += loss_t
                    grads.append(grad)
                # source's side: the K gradients applied in order, each after its attacker update
                for j, (users_b, grad) in enumerate(zip(users, grads)):
                    for _ in range(adv_steps):
                        pub = pub_stream.next_batch()
                        if pub.size:
                            sums["loss_adv"] += (
                                adversary_step(
                                    source, adversary, opt_a, q_hist_all[pub], q_cand_all[pub], {k: v[pub] for k, v in labels.items()}, clip
                                )
                                / adv_steps
                            )
                    x_live = live if j == 0 else transfer_for_step(source, q_hist_all[users_b], q_cand_all[users_b])[1]
                    q_labels = {k: v[users_b] for k, v in labels.items()}
                    out = source_step(source, adversary, opt_s, s_stream.next_batch(), x_live, q_labels, grad, lam, clip)
                    for k_, v_ in out.items():
                        sums[k_] += v_
        valid, _, _ = evaluate_privnet(target, target_data, transferred_representations(source, s_hist_all, window), "valid", window)
        row = {"epoch": epoch, **{k: v / steps for k, v in sums.items()}, **{f"valid_{k}": v for k, v in valid.items()}}
        history.append(row)
        stopper.update(epoch, valid, modules)
        if progress is not None:
            progress(epoch, {k: v for k, v in row.items() if k != "epoch"})
        if stopper.should_stop:
            break
    stopper.restore_best(modules)
    for m in modules.values():
        m.eval()
    report = TrainReport(epoch, stopper.best_epoch, stopper.best_metrics, history, clock.seconds)
    return source, target, adversary, report


def train_privnet_target_only(
    target_data: RankingData,
    *,
    epochs: int = 50,
    batch_size: int = 128,
    lr: float = 5e-4,
    clip: float | None = 5.0,
    seed: int = 0,
    patience: int = 5,
    dim: int = 80,
    hidden: Sequence[int] = (80, 64),
    activation: str = "relu",
    window: int = WINDOW,
    max_steps_per_epoch: int | None = None,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[PrivNetTarget, TrainReport]:
    """The target network alone (no transfer; the paper's MLP baseline), same examples and stopping."""
    clock = Stopwatch()
    target = PrivNetTarget(target_data.n_items, dim, hidden, trans_dim=hidden[0], seed=seed, activation=activation)
    opt_t = adam(target.parameters(), lr)
    t_stream = target_stream(target_data, window, batch_size, seed)
    steps = t_stream.steps_per_epoch if max_steps_per_epoch is None else min(t_stream.steps_per_epoch, max_steps_per_epoch)
    stopper = EarlyStopping("HR@10", patience)
    history: list[dict[str, Any]] = []
    epoch = 0
    for epoch in range(1, epochs + 1):
        total = 0.0
        for _ in range(steps):
            loss, _ = target_step(target, opt_t, t_stream.next_batch(), None, None, clip)
            total += loss
        valid, _, _ = evaluate_privnet(target, target_data, None, "valid", window)
        row = {"epoch": epoch, "loss_T": total / steps, **{f"valid_{k}": v for k, v in valid.items()}}
        history.append(row)
        stopper.update(epoch, valid, {"target": target})
        if progress is not None:
            progress(epoch, {k: v for k, v in row.items() if k != "epoch"})
        if stopper.should_stop:
            break
    stopper.restore_best({"target": target})
    target.eval()
    return target, TrainReport(epoch, stopper.best_epoch, stopper.best_metrics, history, clock.seconds)
