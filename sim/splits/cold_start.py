"""Cold-start split with explicit ratings (the PTUPCDR protocol PFCDR follows).

Both domains keep every rating 1-5 of their items (items are assigned to a domain by the run's
domain rule: `--split genre` or `--split year`, as `split_domains` describes it). Overlapping
users have at least one rating in each domain. Per seed, one random order of the overlapping
users decides:

- cold-start test users: the first round(beta * n_overlap); all their target ratings are held
  out (the target knows them only as ids the source also knows) and read only by the target's
  final report;
- validation users: the next round(valid_fraction * (n_overlap - n_cold)); their target
  ratings are held out the same way and select the target's settings (top-k size, bridge
  epoch), never the test users';
- warm users: the remaining overlapping users, whose target ratings train the target model and
  whose prototypes (or embeddings) train the bridge.

The same order serves every beta, so the cold users at beta = 20% are among those at 50% and
80%. Users with ratings in one domain only keep them there (they train that domain's model).
Each domain numbers its items 0..n-1 in dataset order over the items rated in it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from models.data import RatingData, Ratings

from ..datasets import Dataset
from .domains import DEFAULT_SOURCE_GENRES, DEFAULT_TARGET_GENRES, SplitError, genre_domains

if TYPE_CHECKING:
    from ..world import World

SPLIT_STREAM = 7101  # the numpy stream of the overlapping users' order (one per seed)
CACHE_SIZE = 8


@dataclass(frozen=True)
class DomainRatings:
    """The explicit ratings of both domains (no cold-start split yet)."""

    n_users: int
    source: Ratings  # item ids local to the source domain
    target: Ratings  # item ids local to the target domain
    source_items: np.ndarray  # dataset item id of each source item id
    target_items: np.ndarray
    overlap: np.ndarray  # users with ratings in both domains (sorted)
    description: dict[str, Any]


@dataclass(frozen=True)
class ColdStartSplit:
    """One seed's and one beta's cold-start split: what each party holds."""

    source: RatingData  # every source rating trains the source model (no held-out part)
    target: RatingData  # train: all but cold and validation users; valid: validation users; test: cold users
    overlap: np.ndarray
    cold: np.ndarray  # test users (sorted)
    valid: np.ndarray  # validation users (sorted)
    warm: np.ndarray  # overlapping users whose target ratings train (sorted)
    description: dict[str, Any]


def item_domains(ds: Dataset, split_description: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """Per dataset item 0 (source), 1 (target) or -1 (dropped), by the rule of the run's domain
    split (its description), and the rule in words."""
    by = split_description.get("by")
    if by == "genre":
        src = tuple(split_description.get("source_genres") or DEFAULT_SOURCE_GENRES)
        tgt = tuple(split_description.get("target_genres") or DEFAULT_TARGET_GENRES)
        rule = "item -> group of its first listed genre in either group; items in neither are dropped"
        return genre_domains(ds, src, tgt), {"by": by, "source_genres": list(src), "target_genres": list(tgt), "rule": rule}
    if by == "year":
        threshold = int(split_description["year_threshold"])
        year = ds.items["year"].to_numpy(dtype=np.float64)
        domain = np.where(~np.isnan(year) & (year >= threshold), 1, 0).astype(np.int64)
        return domain, {"by": by, "year_threshold": threshold, "rule": f"target: year >= {threshold}; source: earlier or unknown"}
    raise SplitError(f"cannot cut explicit-rating domains for split {by!r}; use --split genre or --split year")


def domain_ratings(ds: Dataset, split_description: dict[str, Any]) -> DomainRatings:
    """Both domains' explicit ratings and the overlapping users."""
    domain_of, rule = item_domains(ds, split_description)
    r = ds.ratings
    users, items = r["user"].to_numpy(np.int64), r["item"].to_numpy(np.int64)
    values = r["rating"].to_numpy(np.float32)
    item_domain = domain_of[items]
    parts, rated = [], []
    for d in (0, 1):
        rows = item_domain == d
        domain_items = np.unique(items[rows])
        if domain_items.size == 0:
            raise SplitError(f"the {'source' if d == 0 else 'target'} domain has no rating with this split ({rule['rule']})")
        local = np.full(ds.n_items, -1, dtype=np.int64)
        local[domain_items] = np.arange(domain_items.size)
        parts.append((Ratings(users[rows], local[items[rows]], values[rows]), domain_items))
        rated.append(np.bincount(users[rows], minlength=ds.n_users) > 0)
    overlap = np.flatnonzero(rated[0] & rated[1]).astype(np.int64)
    if overlap.size < 3:
        raise SplitError(f"only {overlap.size} users rated items of both domains; cold-start transfer needs overlapping users")
    (source, source_items), (target, target_items) = parts
    description = {
        **rule,
        "ratings": "explicit 1-5, every rating of the domain's items",
        "source": {"items": int(source_items.size), "ratings": len(source), "users": int(rated[0].sum())},
        "target": {"items": int(target_items.size), "ratings": len(target), "users": int(rated[1].sum())},
        "overlapping_users": int(overlap.size),
        "dropped_items": int((domain_of < 0).sum()),
    }
    return DomainRatings(ds.n_users, source, target, source_items, target_items, overlap, description)


def source_data(domains: DomainRatings) -> RatingData:
    """What the source holds: every source rating, for training (the same for every seed and beta)."""
    empty = Ratings(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    return RatingData(domains.n_users, int(domains.source_items.size), domains.source, empty, empty)


def cold_start_split(domains: DomainRatings, *, seed: int, beta: float, valid_fraction: float) -> ColdStartSplit:
    """Cold, validation and warm users of one seed and beta (module docstring)."""
    if not 0.0 < beta < 1.0:
        raise SplitError(f"beta (the cold-start fraction of overlapping users) must be in (0, 1), got {beta}")
    if not 0.0 < valid_fraction < 1.0:
        raise SplitError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    order = np.random.default_rng([int(seed), SPLIT_STREAM]).permutation(domains.overlap)
    n = order.size
    n_cold = min(n - 2, max(1, int(round(beta * n))))
    n_valid = min(n - n_cold - 1, max(1, int(round(valid_fraction * (n - n_cold)))))
    cold = np.sort(order[:n_cold])
    valid = np.sort(order[n_cold : n_cold + n_valid])
    warm = np.sort(order[n_cold + n_valid :])
    t = domains.target
    in_cold, in_valid = np.isin(t.users, cold), np.isin(t.users, valid)
    target = RatingData(
        domains.n_users, int(domains.target_items.size), t.select(~in_cold & ~in_valid), t.select(in_valid), t.select(in_cold)
    )
    source = source_data(domains)
    description = {
        **domains.description,
        "seed": int(seed),
        "beta": float(beta),
        "valid_fraction": float(valid_fraction),
        "cold_users": int(cold.size),
        "valid_users": int(valid.size),
        "warm_users": int(warm.size),
        "target_train_ratings": len(target.train),
        "target_valid_ratings": len(target.valid),
        "target_test_ratings": len(target.test),
    }
    return ColdStartSplit(source, target, domains.overlap, cold, valid, warm, description)


# Built where each party and the evaluation run, once per world (the World is cached per run key
# by sim.world, so its identity is the key; the cache holds the world, so the id stays its own).
_DOMAINS: OrderedDict[int, tuple[World, DomainRatings]] = OrderedDict()
_SPLITS: OrderedDict[tuple, tuple[World, ColdStartSplit]] = OrderedDict()


def _cached(cache: OrderedDict, key: tuple | int, world: World, build) -> Any:
    hit = cache.get(key)
    if hit is not None and hit[0] is world:
        cache.move_to_end(key)
        return hit[1]
    value = build()
    cache[key] = (world, value)
    while len(cache) > CACHE_SIZE:
        cache.popitem(last=False)
    return value


def domain_ratings_of(world: World) -> DomainRatings:
    """`domain_ratings` of the world's dataset by its split rule, cached."""
    return _cached(_DOMAINS, id(world), world, lambda: domain_ratings(world.dataset, world.split.description))


def cold_start_of(world: World, *, seed: int, beta: float, valid_fraction: float) -> ColdStartSplit:
    """`cold_start_split` of the world, cached per (world, seed, beta, valid_fraction)."""
    key = (id(world), int(seed), float(beta), float(valid_fraction))
    return _cached(
        _SPLITS, key, world, lambda: cold_start_split(domain_ratings_of(world), seed=seed, beta=beta, valid_fraction=valid_fraction)
    )
