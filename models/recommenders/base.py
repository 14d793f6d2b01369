"""What every recommender of the membership scenario shares: the training and serving
interface, top-k lists over unseen items, and the non-personalised lists for non-members.

Users are identified by their dataset ids; a recommender maps the users it was trained on to
its own rows. Histories are `{user id: item ids}` (time order; only the set matters here).
Scores are float32 [n_users, n_items]; a list is int64 [n_users, k] of item ids, best first,
padded with -1 when a user has fewer than k items left to recommend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..training import PairIndex

Histories = Mapping[int, np.ndarray]


def check_histories(histories: Histories, n_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user ids sorted, rows, items) as flat pairs: the user at `rows[j]` (an index into the
    sorted ids) interacted with `items[j]`. Duplicates within a history count once."""
    if not histories:
        raise ValueError("no users to train on: the recommender needs at least one member with a history")
    users = np.array(sorted(int(u) for u in histories), dtype=np.int64)
    rows, items = [], []
    for r, u in enumerate(users.tolist()):
        own = np.unique(np.asarray(histories[u], dtype=np.int64))
        if own.size and (own[0] < 0 or own[-1] >= n_items):
            raise ValueError(f"user {u} has item ids outside 0..{n_items - 1}")
        rows.append(np.full(own.size, r, dtype=np.int64))
        items.append(own)
    return users, np.concatenate(rows), np.concatenate(items)


def binary_matrix(histories: Sequence[np.ndarray], n_items: int) -> np.ndarray:
    """One row per history, 1.0 where the user interacted (float32 [n, n_items])."""
    out = np.zeros((len(histories), n_items), dtype=np.float32)
    for r, items in enumerate(histories):
        out[r, np.asarray(items, dtype=np.int64)] = 1.0
    return out


def top_k(scores: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """The k best items per row, best first, skipping each row's `exclude` items; ties go to
    the lower item id. Rows with fewer than k candidates are padded with -1."""
    scores = np.array(scores, dtype=np.float64)  # a copy: excluded items are masked in it
    if scores.ndim != 2:
        raise ValueError(f"scores must be [n_users, n_items], got shape {scores.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if exclude is not None:
        if len(exclude) != scores.shape[0]:
            raise ValueError(f"exclude has {len(exclude)} rows but scores has {scores.shape[0]}")
        for r, items in enumerate(exclude):
            scores[r, np.asarray(items, dtype=np.int64)] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    lists = order.astype(np.int64)
    lists[np.take_along_axis(scores, order, axis=1) == -np.inf] = -1
    if lists.shape[1] < k:
        lists = np.pad(lists, ((0, 0), (0, k - lists.shape[1])), constant_values=-1)
    return lists


def popularity(histories: Histories, n_items: int) -> np.ndarray:
    """How many of the given users interacted with each item (int64 [n_items])."""
    _, _, items = check_histories(histories, n_items)
    return np.bincount(items, minlength=n_items).astype(np.int64)


def most_popular(pop: np.ndarray, k: int) -> np.ndarray:
    """The k most popular items, most popular first (ties: lower item id), int64 [k]."""
    return np.argsort(-np.asarray(pop), kind="stable")[:k].astype(np.int64)


def randomized_popular(pop: np.ndarray, k: int, ratio: float, users: np.ndarray, seed: int, stream: int) -> np.ndarray:
    """Popularity randomization (paper 004, Appendix A.1): each user gets k items drawn
    uniformly without replacement from the ceil(k / ratio) most popular, in the order drawn.
    Each user's draw has its own generator (seed, stream, user id), so a list does not depend
    on which other users were asked about or in which order."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"the ratio of recommendations to candidates must be in (0, 1], got {ratio}")
    n_candidates = min(int(np.ceil(k / ratio - 1e-9)), pop.size)
    candidates = most_popular(pop, n_candidates)
    take = min(k, n_candidates)
    out = np.full((users.size, k), -1, dtype=np.int64)
    for r, u in enumerate(np.asarray(users, dtype=np.int64).tolist()):
        rng = np.random.default_rng([int(seed), int(stream), int(u)])
        out[r, :take] = rng.choice(candidates, size=take, replace=False)
    return out


def sample_unseen(
    rows: np.ndarray, n_items: int, seen: PairIndex, rng: np.random.Generator, rounds: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """One item per entry of `rows`, uniform among the items that row's user has not seen:
    (items, valid). Vectorised rejection first; a user with few unseen items left after
    `rounds` draws from the explicit rest; `valid` is False where the user has seen every item
    (no negative exists)."""
    rows = np.asarray(rows, dtype=np.int64)
    items = rng.integers(0, n_items, size=rows.size, dtype=np.int64)
    bad = np.flatnonzero(seen.contains(rows, items))
    for _ in range(rounds):
        if bad.size == 0:
            break
        items[bad] = rng.integers(0, n_items, size=bad.size, dtype=np.int64)
        bad = bad[seen.contains(rows[bad], items[bad])]
    valid = np.ones(rows.size, dtype=bool)
    all_items = np.arange(n_items, dtype=np.int64)
    for r in np.unique(rows[bad]).tolist():
        idx = bad[rows[bad] == r]
        unseen = all_items[~seen.contains(np.full(n_items, r, dtype=np.int64), all_items)]
        if unseen.size:
            items[idx] = rng.choice(unseen, size=idx.size)
        else:
            valid[idx] = False
    return items, valid


def hits(lists: np.ndarray, held_out: np.ndarray) -> np.ndarray:
    """Per row, 1.0 if the held-out item is in the list (HR@k with k = the list length);
    NaN for rows without a held-out item (-1)."""
    held_out = np.asarray(held_out, dtype=np.int64)
    hit = (np.asarray(lists) == held_out[:, None]).any(axis=1).astype(np.float64)
    return np.where(held_out >= 0, hit, np.nan)


class Recommender(ABC):
    """A personalised recommender: trained on members' histories, it scores every item for a
    member, and (fold-in) for a user it was not trained on, from that user's history alone,
    leaving everything it learned from the members unchanged."""

    name = "?"

    def __init__(self, options: Mapping[str, Any], seed: int):
        self.options = dict(options)
        self.seed = int(seed)
        self.users = np.zeros(0, dtype=np.int64)  # the members, sorted
        self.n_items = 0

    def fit(self, histories: Histories, n_items: int) -> dict[str, Any]:
        """Train on the members' histories; returns what training did (JSON-able)."""
        self.users, rows, items = check_histories(histories, n_items)
        self.n_items = int(n_items)
        return {"users": int(self.users.size), "interactions": int(items.size), **self._fit(rows, items)}

    def rows_of(self, users: np.ndarray) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        pos = np.searchsorted(self.users, users)
        ok = (pos < self.users.size) & (self.users[np.minimum(pos, self.users.size - 1)] == users)
        if not ok.all():
            raise KeyError(f"users {users[~ok][:5].tolist()} were not trained on (members only)")
        return pos

    @abstractmethod
    def _fit(self, rows: np.ndarray, items: np.ndarray) -> dict[str, Any]: ...

    @abstractmethod
    def member_scores(self, users: np.ndarray) -> np.ndarray:
        """Scores of every item for members (float32 [n, n_items])."""

    @abstractmethod
    def fold_in_scores(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Scores of every item for users it was not trained on, from their histories only
        (`users` names them, so that any random draw of one user's fold-in is that user's own)."""
