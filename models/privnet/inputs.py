"""PrivNet's inputs: sliding-window training examples, each user's fixed query (whose transfer
is the released representation), evaluation histories, and the shuffled streams each party
draws its own batches from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from ..data import RankingData
from ..training import PairIndex, numpy_rng, sample_negatives
from .networks import EVAL_CHUNK_ROWS, WINDOW, PrivNetTarget

# Independent RNG streams of one seed, so that each party can reproduce its own draws alone.
STREAM_TARGET_EXAMPLES = 10
STREAM_SOURCE_EXAMPLES = 20
STREAM_PUBLIC_USERS = 30


def _left_padded_windows(histories: Sequence[np.ndarray], n_items: int, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every item at position c of every history: (user, window of the items before c, item).

    Fully vectorised: histories are laid end to end, each preceded by `window` padding ids,
    and window views are taken at every real item's position.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros((0, window), np.int64), np.zeros(0, np.int64)
    items = np.concatenate([np.asarray(h, dtype=np.int64) for h in histories])
    if items.min() < 0 or items.max() >= n_items:
        raise ValueError(f"history item ids must lie in [0, {n_items}); got [{items.min()}, {items.max()}]")
    users = np.repeat(np.arange(len(histories), dtype=np.int64), lengths)
    # position of each item in the padded sequence: its index + window * (user index + 1)
    pos = np.arange(total) + window * (users + 1)
    seq = np.full(total + window * len(histories), n_items, dtype=np.int64)
    seq[pos] = items
    views = sliding_window_view(seq, window)
    return users, views[pos - window], items


def sliding_examples(
    histories: Sequence[np.ndarray],
    n_items: int,
    window: int = WINDOW,
    *,
    rng: np.random.Generator,
    n_neg: int = 1,
    exclude: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Training examples of PrivNet §4.4: (users [N], hist [N, w], cand [N], label [N] float32).

    Positives: sliding over each user's time-ordered training items, item c (c >= 2, 1-based)
    with the up to w items before it as history, left-padded with `n_items`. Each positive gets
    `n_neg` negatives with the same history and a random item the user never trained on, nor
    holds out (`exclude`: (users, items) pairs that are never negatives, e.g. held-out items).
    `histories[u]` is user u's history, so users are indices into `histories`.
    """
    pos = _positive_examples(histories, n_items, window)
    return _with_negatives(*pos, _negatives_index(histories, n_items, exclude), n_items, rng, n_neg)


def _pairs(histories: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = [len(h) for h in histories]
    users = np.repeat(np.arange(len(histories), dtype=np.int64), lengths)
    items = np.concatenate([np.asarray(h, np.int64) for h in histories]) if users.size else np.zeros(0, np.int64)
    return users, items


def _negatives_index(histories: Sequence[np.ndarray], n_items: int, exclude: tuple[np.ndarray, np.ndarray] | None) -> PairIndex:
    """Pairs a training negative must avoid: the training positives, and `exclude`."""
    users, items = _pairs(histories)
    if exclude is not None:
        users = np.concatenate([users, np.asarray(exclude[0], np.int64)])
        items = np.concatenate([items, np.asarray(exclude[1], np.int64)])
    return PairIndex(users, items, n_items)


def _positive_examples(histories: Sequence[np.ndarray], n_items: int, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    users, hist, items = _left_padded_windows(histories, n_items, window)
    keep = hist[:, -1] != n_items  # drop each user's first item: it has no history (c >= 2)
    return users[keep], np.ascontiguousarray(hist[keep]), items[keep]


def _with_negatives(
    users: np.ndarray,
    hist: np.ndarray,
    cand: np.ndarray,
    seen: PairIndex,
    n_items: int,
    rng: np.random.Generator,
    n_neg: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if n_neg < 0:
        raise ValueError(f"n_neg must be >= 0, got {n_neg}")
    neg_users = np.tile(users, n_neg)
    neg_items = sample_negatives(neg_users, n_items, seen, rng)
    label = np.concatenate([np.ones(users.size, np.float32), np.zeros(neg_users.size, np.float32)])
    return (
        np.concatenate([users, neg_users]),
        np.concatenate([hist] + [hist] * n_neg, axis=0),
        np.concatenate([cand, neg_items]),
        label,
    )


def user_query(histories: Sequence[np.ndarray], n_items: int, window: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """Per user, the fixed input whose transfer() is the user's released representation.

    hist [U, w] = the w items before the last training item (left-padded), cand [U] = the last
    training item. A user with no items gets all padding (and x_trans = 0).
    """
    users, hist, items = _left_padded_windows(histories, n_items, window)
    q_hist = np.full((len(histories), window), n_items, dtype=np.int64)
    q_cand = np.full(len(histories), n_items, dtype=np.int64)
    if users.size:
        last = np.r_[users[1:] != users[:-1], True]  # last item of each user
        q_hist[users[last]] = hist[last]
        q_cand[users[last]] = items[last]
    return q_hist, q_cand


def eval_inputs(
    histories: Sequence[np.ndarray],
    candidates: np.ndarray,
    n_items: int,
    window: int = WINDOW,
    users: np.ndarray | None = None,
) -> np.ndarray:
    """History [U, w] for scoring held-out candidates [U, C]: each user's last w training items.

    Row r uses histories[users[r]] (or histories[r] when `users` is None).
    """
    candidates = np.asarray(candidates)
    rows = np.arange(len(histories)) if users is None else np.asarray(users, dtype=np.int64)
    if candidates.ndim != 2 or candidates.shape[0] != rows.shape[0]:
        raise ValueError(f"candidates must be [U, C] with U = {rows.shape[0]} users, got {candidates.shape}")
    out = np.full((rows.shape[0], window), n_items, dtype=np.int64)
    for r, u in enumerate(rows):
        h = np.asarray(histories[u], dtype=np.int64)[-window:]
        if h.size:
            out[r, window - h.size :] = h
    return out


@torch.no_grad()
def score_candidates(
    target: PrivNetTarget,
    hist: np.ndarray,
    candidates: np.ndarray,
    x_trans: np.ndarray | None,
) -> np.ndarray:
    """Target logits for every (user, candidate): hist [U, w], candidates [U, C], x_trans [U, d] -> [U, C]."""
    hist = np.asarray(hist, dtype=np.int64)
    candidates = np.asarray(candidates, dtype=np.int64)
    u, c = candidates.shape
    if hist.shape[0] != u or (x_trans is not None and np.asarray(x_trans).shape[0] != u):
        raise ValueError(
            f"hist, candidates and x_trans need the same number of rows; got {hist.shape[0]}, {u}, "
            f"{None if x_trans is None else np.asarray(x_trans).shape[0]}"
        )
    was_training = target.training
    target.eval()
    out = np.empty((u, c), dtype=np.float32)
    per_chunk = max(1, EVAL_CHUNK_ROWS // max(c, 1))
    x_all = None if x_trans is None else torch.as_tensor(np.asarray(x_trans, dtype=np.float32))
    for s in range(0, u, per_chunk):
        sl = slice(s, s + per_chunk)
        x = None if x_all is None else x_all[sl]
        out[sl] = target.score(torch.from_numpy(hist[sl]), torch.from_numpy(candidates[sl]), x).numpy()
    target.train(was_training)
    return out


@dataclass
class ExampleBatch:
    users: np.ndarray  # [B] user ids
    hist: np.ndarray  # [B, w]
    cand: np.ndarray  # [B]
    label: np.ndarray  # [B] float32 (1 positive, 0 negative)


class ExampleStream:
    """Endless shuffled mini-batches of sliding-window examples; fresh negatives every pass."""

    def __init__(
        self,
        histories: Sequence[np.ndarray],
        n_items: int,
        window: int,
        batch_size: int,
        rng: np.random.Generator,
        n_neg: int = 1,
        exclude: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._pos = _positive_examples(histories, n_items, window)
        if self._pos[0].size == 0:
            raise ValueError("no training examples: every user has fewer than 2 training items in this domain")
        self._seen = _negatives_index(histories, n_items, exclude)
        self.n_items, self.batch_size, self.rng, self.n_neg = n_items, batch_size, rng, n_neg
        self.n_examples = self._pos[0].size * (1 + n_neg)
        self.steps_per_epoch = -(-self.n_examples // batch_size)
        self._data: tuple[np.ndarray, ...] | None = None
        self._order = np.zeros(0, np.int64)
        self._cursor = 0

    def next_batch(self) -> ExampleBatch:
        if self._cursor >= self._order.size:
            self._data = _with_negatives(*self._pos, self._seen, self.n_items, self.rng, self.n_neg)
            self._order = self.rng.permutation(self.n_examples)
            self._cursor = 0
        idx = self._order[self._cursor : self._cursor + self.batch_size]
        self._cursor += self.batch_size
        users, hist, cand, label = (a[idx] for a in self._data)
        return ExampleBatch(users, hist, cand, label)


class UserStream:
    """Endless shuffled mini-batches of user ids (the public users for adversary updates)."""

    def __init__(self, users: np.ndarray, batch_size: int, rng: np.random.Generator):
        self.users = np.asarray(users, dtype=np.int64)
        self.batch_size, self.rng = batch_size, rng
        self._order = np.zeros(0, np.int64)
        self._cursor = 0

    def next_batch(self) -> np.ndarray:
        if self.users.size == 0:
            return self.users
        if self._cursor >= self._order.size:
            self._order = self.rng.permutation(self.users)
            self._cursor = 0
        out = self._order[self._cursor : self._cursor + self.batch_size]
        self._cursor += self.batch_size
        return out


def target_stream(data: RankingData, window: int, batch_size: int, seed: int) -> ExampleStream:
    """The target party's training examples (its own RNG stream of `seed`); negatives avoid the
    target's held-out items."""
    rng = numpy_rng(seed, STREAM_TARGET_EXAMPLES)
    return ExampleStream(data.histories(), data.n_items, window, batch_size, rng, exclude=data.held_out_pairs())


def source_stream(data: RankingData, window: int, batch_size: int, seed: int) -> ExampleStream:
    """The source party's training examples (its own RNG stream of `seed`)."""
    rng = numpy_rng(seed, STREAM_SOURCE_EXAMPLES)
    return ExampleStream(data.histories(), data.n_items, window, batch_size, rng, exclude=data.held_out_pairs())
