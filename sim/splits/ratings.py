"""Per-user splits of explicit ratings, for single-domain rating scenarios (`privacy-budget`).

Each user's ratings are cut at random into training, validation and test ratings: of a user
with n ratings, round(0.1 n) go to the test and as many to validation (at least one each when
n >= 3; a user with fewer keeps all of them for training and is not evaluated), the rest are
training ratings. The draw depends on the seed only, so every process that rebuilds the split
from the same dataset and seed (a party on a Flower node, a Ray actor, the evaluation) gets
the same one. Within each part, ratings keep the dataset's order (user, time, item).

Users and items keep the dataset's ids: every user with ratings is a user of the split, and
the item catalogue is the dataset's (an item may have no training rating).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from threading import Lock
from typing import Any

import numpy as np

from models.data import RatingData, Ratings

from ..datasets import Dataset

VALID_FRACTION = 0.1
TEST_FRACTION = 0.1
MIN_RATINGS_TO_EVALUATE = 3  # one test, one validation and one training rating
STREAM_SPLIT = 8101
CACHED_SPLITS = 4


@dataclass(frozen=True)
class RatingSplit:
    data: RatingData
    users: np.ndarray  # every user with ratings (sorted): the population of the split
    description: dict[str, Any]  # JSON-able


def split_ratings(ds: Dataset, seed: int, *, valid_fraction: float = VALID_FRACTION, test_fraction: float = TEST_FRACTION) -> RatingSplit:
    """Cut every user's ratings into training, validation and test ratings at random (seeded)."""
    if not (0 < valid_fraction < 1 and 0 < test_fraction < 1 and valid_fraction + test_fraction < 1):
        raise ValueError(f"valid and test fractions must be in (0, 1) with a sum below 1, got {valid_fraction}, {test_fraction}")
    r = ds.ratings
    users = r["user"].to_numpy(np.int64)
    items = r["item"].to_numpy(np.int64)
    values = r["rating"].to_numpy(np.float32)
    n = users.size
    counts = np.bincount(users, minlength=ds.n_users)
    # A random rank of each rating within its user: the first n_test ranks are test ratings,
    # the next n_valid validation ratings.
    key = np.random.default_rng([int(seed), STREAM_SPLIT]).random(n)
    order = np.lexsort((key, users))
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - start[users[order]]
    evaluated = counts >= MIN_RATINGS_TO_EVALUATE
    n_test = np.where(evaluated, np.maximum(1, np.rint(counts * test_fraction)), 0).astype(np.int64)
    n_valid = np.where(evaluated, np.maximum(1, np.rint(counts * valid_fraction)), 0).astype(np.int64)
    is_test = rank < n_test[users]
    is_valid = ~is_test & (rank < (n_test + n_valid)[users])
    is_train = ~is_test & ~is_valid

    def part(mask: np.ndarray) -> Ratings:
        return Ratings(users[mask], items[mask], values[mask])

    data = RatingData(ds.n_users, ds.n_items, part(is_train), part(is_valid), part(is_test))
    population = np.flatnonzero(counts > 0).astype(np.int64)
    description = {
        "kind": "per-user random split of explicit ratings",
        "fractions": {"train": 1 - valid_fraction - test_fraction, "valid": valid_fraction, "test": test_fraction},
        "seed": int(seed),
        "users": int(population.size),
        "evaluated_users": int(evaluated.sum()),
        "items": int(ds.n_items),
        "ratings": {"train": int(is_train.sum()), "valid": int(is_valid.sum()), "test": int(is_test.sum())},
    }
    return RatingSplit(data, population, description)


_cache: OrderedDict[tuple[int, int], tuple[Dataset, RatingSplit]] = OrderedDict()
_lock = Lock()


def rating_split(ds: Dataset, seed: int) -> RatingSplit:
    """`split_ratings(ds, seed)`, cached per (dataset object, seed) like the world itself (the
    cache holds the dataset, so an id is never reused while its entry lives)."""
    key = (id(ds), int(seed))
    with _lock:
        hit = _cache.get(key)
        if hit is not None and hit[0] is ds:
            _cache.move_to_end(key)
            return hit[1]
    split = split_ratings(ds, seed)
    with _lock:
        _cache[key] = (ds, split)
        while len(_cache) > CACHED_SPLITS:
            _cache.popitem(last=False)
    return split
