"""Two domains from one dataset, leave-one-out ranking splits, and the attacker's public users.

Domains (`split_domains`):

- `by="year"` (PrivNet): source = older movies, target = newer. An item goes to the target when
  its year >= the threshold, else to the source; items with unknown year go to the source. The
  default threshold is the year that makes the two domains' positive counts (rating >=
  min_rating) most nearly equal (ties: the earliest such year).
- `by="genre"`: two disjoint genre groups, by default
  source = DEFAULT_SOURCE_GENRES (Comedy, Romance, Drama, Musical, Children's, Animation),
  target = DEFAULT_TARGET_GENRES (Action, Adventure, Thriller, Crime, Sci-Fi, Horror, War,
  Western, Mystery, Film-Noir, Fantasy).
  An item goes to the group of the first of its listed genres that belongs to either group
  (ML-100K lists genres alphabetically, ML-1M in its own order); items with no genre in either
  group (e.g. only Documentary or "unknown") are dropped.

Users are shared: both domains number users as the dataset does. With `population="overlap"`
(the default, PrivNet's and every cross-domain paper's setting) only users with positives in
both domains keep their data, in both domains: transfer concerns users present on both sides,
and a user without source data would receive an empty representation that dilutes every
leakage figure. `population="all"` keeps every user (each domain then has users with no data
in it). Each domain numbers its items
0..n-1 (in dataset item order) over the items that have at least one positive in it.
Negatives exclude everything the user rated in that domain, whatever the rating. A user with
fewer than n_negatives unseen items in a domain is not evaluated there (counted in
description[domain]["skipped_few_unseen"]).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from models.data import NO_ITEM, RankingData, RatingLog, UserAttributes

from ..datasets import Dataset, DatasetError, order_by_user_time_item

DEFAULT_SOURCE_GENRES = ("Comedy", "Romance", "Drama", "Musical", "Children's", "Animation")
DEFAULT_TARGET_GENRES = (
    "Action", "Adventure", "Thriller", "Crime", "Sci-Fi", "Horror", "War", "Western",
    "Mystery", "Film-Noir", "Fantasy",
)  # fmt: skip
SPLIT_BY = ("year", "genre")
POPULATIONS = ("overlap", "all")
MIN_POSITIVES_TO_EVALUATE = 3  # one for test, one for validation, at least one to train on


class SplitError(DatasetError, ValueError):
    """The data cannot be split as asked; the message says why and what to change."""


@dataclass(frozen=True)
class DomainSplit:
    source: RankingData
    target: RankingData
    source_items: np.ndarray  # dataset item id of each source-domain item id
    target_items: np.ndarray  # dataset item id of each target-domain item id
    description: dict[str, Any]  # how it was split; JSON-able
    population: np.ndarray  # user ids whose data the split kept (sorted)


def split_domains(
    ds: Dataset,
    by: str = "year",
    *,
    seed: int = 0,
    n_negatives: int = 99,
    min_rating: float = 4.0,
    population: str = "overlap",
    year_threshold: int | None = None,
    source_genres: Sequence[str] | None = None,
    target_genres: Sequence[str] | None = None,
) -> DomainSplit:
    """Split `ds` into a source and a target domain and build each one's leave-one-out data."""
    if by not in SPLIT_BY:
        raise SplitError(f"unknown split {by!r}; valid: {', '.join(SPLIT_BY)}")
    if population not in POPULATIONS:
        raise SplitError(f"unknown population {population!r}; valid: {', '.join(POPULATIONS)}")
    if by == "year" and (source_genres is not None or target_genres is not None):
        raise SplitError("source_genres / target_genres apply only to by='genre'")
    if by == "genre" and year_threshold is not None:
        raise SplitError("year_threshold applies only to by='year'")

    r = ds.ratings
    positive = r["rating"].to_numpy() >= min_rating
    if not positive.any():
        raise SplitError(f"no rating >= {min_rating} in {ds.name}: lower min_rating")
    description: dict[str, Any] = {"by": by, "seed": int(seed), "min_rating": float(min_rating), "n_negatives": int(n_negatives)}

    # domain_of[item] = 0 (source), 1 (target) or -1 (dropped)
    if by == "year":
        domain_of, threshold = _year_domains(ds, positive, year_threshold)
        description.update(
            year_threshold=int(threshold),
            rule=f"target: year >= {threshold}; source: year < {threshold} or unknown",
            threshold_chosen="given" if year_threshold is not None else "balances positives",
        )
    else:
        src = tuple(DEFAULT_SOURCE_GENRES if source_genres is None else source_genres)
        tgt = tuple(DEFAULT_TARGET_GENRES if target_genres is None else target_genres)
        domain_of = genre_domains(ds, src, tgt)
        description.update(
            source_genres=list(src),
            target_genres=list(tgt),
            rule="item -> group of its first listed genre in either group; items in neither are dropped",
        )

    item_domain = domain_of[r["item"].to_numpy()]
    user_col = r["user"].to_numpy()
    in_both = np.ones(ds.n_users, dtype=bool)
    for d in (0, 1):
        in_both &= np.bincount(user_col[(item_domain == d) & positive], minlength=ds.n_users) > 0
    kept = in_both if population == "overlap" else np.ones(ds.n_users, dtype=bool)
    item_domain = np.where(kept[user_col], item_domain, -1)  # a dropped user's rows go nowhere
    description["population"] = {
        "rule": population,
        "users": int(kept.sum()),
        "users_in_both_domains": int(in_both.sum()),
        "dropped_users": int(ds.n_users - kept.sum()),
    }
    seeds = np.random.SeedSequence(seed).spawn(2)
    parts = []
    for d, name in ((0, "source"), (1, "target")):
        in_domain = item_domain == d
        pos_items = np.flatnonzero(np.bincount(r["item"].to_numpy()[in_domain & positive], minlength=ds.n_items))
        if pos_items.size == 0:
            raise SplitError(f"the {name} domain has no positive ratings with this split ({description['rule']})")
        local = np.full(ds.n_items, -1, dtype=np.int64)
        local[pos_items] = np.arange(pos_items.size)
        # All of the user's ratings in the domain count as seen (ratings of items without any
        # positive have no local id and cannot be sampled anyway).
        seen = in_domain & (local[r["item"].to_numpy()] >= 0)
        sel = in_domain & positive
        data = leave_one_out(
            ds.n_users,
            int(pos_items.size),
            r["user"].to_numpy()[sel],
            local[r["item"].to_numpy()[sel]],
            r["timestamp"].to_numpy()[sel],
            seed=seeds[d],
            n_negatives=n_negatives,
            seen_users=r["user"].to_numpy()[seen],
            seen_items=local[r["item"].to_numpy()[seen]],
        )
        data = replace(data, ratings=_training_ratings(r, in_domain & (local[r["item"].to_numpy()] >= 0), local, data, min_rating))
        if data.eval_users("test").size == 0:
            raise SplitError(
                f"no user of the {name} domain can be evaluated: each needs >= {MIN_POSITIVES_TO_EVALUATE} "
                f"positives and >= n_negatives={n_negatives} unseen items among its {pos_items.size} items; "
                "use more data or lower n_negatives"
            )
        parts.append((data, pos_items))
        description[name] = {
            "items": int(pos_items.size),
            "ratings": int(in_domain.sum()),
            "positives": int(sel.sum()),
            "users_with_positives": int(np.count_nonzero(np.bincount(r["user"].to_numpy()[sel], minlength=ds.n_users))),
            "eval_users": int(data.eval_users("test").size),
            # users with >= 3 positives but fewer than n_negatives unseen items: not evaluated
            "skipped_few_unseen": int(
                (np.bincount(r["user"].to_numpy()[sel], minlength=ds.n_users) >= MIN_POSITIVES_TO_EVALUATE).sum()
                - data.eval_users("test").size
            ),
            "train_positives": int(data.n_train),
        }
    description["dropped_items"] = int((domain_of < 0).sum())
    description["items_without_positive"] = int(ds.n_items - description["dropped_items"] - parts[0][1].size - parts[1][1].size)
    description["n_users"] = int(ds.n_users)
    (source, source_items), (target, target_items) = parts
    return DomainSplit(source, target, source_items, target_items, description, np.flatnonzero(kept))


def _training_ratings(r: pd.DataFrame, rows: np.ndarray, local: np.ndarray, data: RankingData, min_rating: float) -> RatingLog:
    """The domain's ratings without its held-out items (validation and test stay true)."""
    users = r["user"].to_numpy()[rows]
    items = local[r["item"].to_numpy()[rows]]
    held = np.zeros(users.size, dtype=bool)
    for held_items in (data.valid_items, data.test_items):
        held |= held_items[users] == items
    keep = ~held
    users, items = users[keep], items[keep]
    times = r["timestamp"].to_numpy()[rows][keep]
    order = order_by_user_time_item(users, times, items)
    return RatingLog(
        users=users[order].astype(np.int64),
        items=items[order].astype(np.int64),
        ratings=r["rating"].to_numpy()[rows][keep][order].astype(np.float32),
        timestamps=times[order].astype(np.int64),
        min_rating=float(min_rating),
    )


def _year_domains(ds: Dataset, positive: np.ndarray, threshold: int | None) -> tuple[np.ndarray, int]:
    year = ds.items["year"].to_numpy(dtype=np.float64)
    known = ~np.isnan(year)
    if not known.any():
        raise SplitError(f"{ds.name} has no item with a known year: use by='genre'")
    if threshold is None:
        # Positives per year; source gets years < T plus unknown years, target gets >= T.
        pos_items = ds.ratings["item"].to_numpy()[positive]
        pos_year = year[pos_items]
        unknown = int(np.isnan(pos_year).sum())
        years, counts = np.unique(pos_year[~np.isnan(pos_year)], return_counts=True)
        if years.size < 2:
            raise SplitError(f"positives of {ds.name} fall in fewer than two distinct years: use by='genre'")
        below = unknown + np.concatenate([[0], np.cumsum(counts)[:-1]])  # source size if T = years[j]
        total = unknown + int(counts.sum())
        gap = np.abs(total - 2 * below)
        gap[0] = np.iinfo(np.int64).max  # T = the first year would leave the source with unknowns only
        threshold = int(years[int(np.argmin(gap))])
    domain = np.where(known & (year >= threshold), 1, 0).astype(np.int64)
    return domain, int(threshold)


def genre_domains(ds: Dataset, source: tuple[str, ...], target: tuple[str, ...]) -> np.ndarray:
    """Per dataset item: 0 (source), 1 (target) or -1 (dropped), by the genre rule above."""
    overlap = set(source) & set(target)
    if overlap:
        raise SplitError(f"source and target genres must be disjoint; both contain {sorted(overlap)}")
    if not source or not target:
        raise SplitError("source_genres and target_genres must each name at least one genre")
    present = sorted({g for gs in ds.items["genres"] for g in gs})
    unknown = [g for g in (*source, *target) if g not in present]
    if unknown:
        raise SplitError(f"genre(s) {unknown} do not occur in {ds.name}; its genres are: {', '.join(present)}")
    group = {**{g: 0 for g in source}, **{g: 1 for g in target}}
    domain = np.full(ds.n_items, -1, dtype=np.int64)
    for i, genres in enumerate(ds.items["genres"]):
        for g in genres:
            if g in group:
                domain[i] = group[g]
                break
    return domain


def leave_one_out(
    n_users: int,
    n_items: int,
    users: np.ndarray,
    items: np.ndarray,
    timestamps: np.ndarray,
    *,
    seed: int | np.random.SeedSequence,
    n_negatives: int = 99,
    seen_users: np.ndarray | None = None,
    seen_items: np.ndarray | None = None,
    too_few_unseen: str = "skip",
) -> RankingData:
    """Leave-last-out ranking data of one domain from its positives (users, items, timestamps).

    Per user, positives sorted by (timestamp, item): the last is the test item, the
    second-to-last the validation item, the rest train; users with fewer than 3 positives keep
    all of them in train and get NO_ITEM. For each evaluated user, `n_negatives` validation and
    (independently) `n_negatives` test negatives are drawn uniformly without replacement from
    the items the user never interacted with: by default the positives, or every (user, item)
    in `seen_users`/`seen_items` (pass all ratings there so a low rating is not a negative).
    A user with fewer than `n_negatives` unseen items cannot get a full candidate list: with
    too_few_unseen="skip" (default) such a user is not evaluated (all positives train, NO_ITEM,
    like a user with too few positives); with "raise" it is a SplitError.
    """
    if too_few_unseen not in ("skip", "raise"):
        raise SplitError(f"too_few_unseen must be 'skip' or 'raise', got {too_few_unseen!r}")
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    timestamps = np.asarray(timestamps, dtype=np.int64)
    if not (users.shape == items.shape == timestamps.shape) or users.ndim != 1:
        raise SplitError(f"users, items, timestamps must be 1-d and equally long, got {users.shape}, {items.shape}, {timestamps.shape}")
    if n_negatives < 0:
        raise SplitError(f"n_negatives must be >= 0, got {n_negatives}")
    if users.size and (users.min() < 0 or users.max() >= n_users or items.min() < 0 or items.max() >= n_items):
        raise SplitError(f"user ids must be in 0..{n_users - 1} and item ids in 0..{n_items - 1}")
    order = order_by_user_time_item(users, timestamps, items)
    users, items = users[order], items[order]
    if users.size > 1:
        sorted_pairs = np.sort(users * n_items + items)
        if (sorted_pairs[1:] == sorted_pairs[:-1]).any():
            raise SplitError("a (user, item) pair occurs more than once among the positives; deduplicate first")

    if seen_users is None:
        seen_users, seen_items = users, items
    else:
        seen_users = np.concatenate([np.asarray(seen_users, dtype=np.int64), users])
        seen_items = np.concatenate([np.asarray(seen_items, dtype=np.int64), items])
        if seen_items.size and (seen_items.min() < 0 or seen_items.max() >= n_items):
            raise SplitError(f"seen_items must be in 0..{n_items - 1}")
        if seen_users.size and (seen_users.min() < 0 or seen_users.max() >= n_users):
            raise SplitError(f"seen_users must be in 0..{n_users - 1}")
    counts = np.bincount(users, minlength=n_users)
    ends = np.cumsum(counts)
    evaluated = counts >= MIN_POSITIVES_TO_EVALUATE
    n_seen = np.bincount(unique_sorted(seen_users * n_items + seen_items) // n_items, minlength=n_users)
    short = evaluated & (n_items - n_seen < n_negatives)
    if short.any():
        if too_few_unseen == "raise":
            u = int(np.flatnonzero(short)[0])
            raise SplitError(
                f"{int(short.sum())} user(s) have fewer than n_negatives={n_negatives} unseen items "
                f"(e.g. user {u}: {n_items - int(n_seen[u])} of {n_items}); lower n_negatives, use more items, "
                "or pass too_few_unseen='skip'"
            )
        evaluated &= ~short
    test_items = np.full(n_users, NO_ITEM, dtype=np.int64)
    valid_items = np.full(n_users, NO_ITEM, dtype=np.int64)
    ev = np.flatnonzero(evaluated)
    test_items[ev] = items[ends[ev] - 1]
    valid_items[ev] = items[ends[ev] - 2]
    held_out = np.zeros(users.size, dtype=bool)
    held_out[ends[ev] - 1] = True
    held_out[ends[ev] - 2] = True
    train_users, train_items = users[~held_out], items[~held_out]

    rng = np.random.default_rng(seed)
    valid_neg = _sample_negatives(n_users, n_items, ev, seen_users, seen_items, n_negatives, rng)
    test_neg = _sample_negatives(n_users, n_items, ev, seen_users, seen_items, n_negatives, rng)
    return RankingData(
        n_users=int(n_users),
        n_items=int(n_items),
        train_users=train_users,
        train_items=train_items,
        valid_items=valid_items,
        valid_negatives=valid_neg,
        test_items=test_items,
        test_negatives=test_neg,
    )


def _sample_negatives(
    n_users: int,
    n_items: int,
    eval_users: np.ndarray,
    seen_users: np.ndarray,
    seen_items: np.ndarray,
    n_negatives: int,
    rng: np.random.Generator,
    chunk_elements: int = 4_000_000,
) -> np.ndarray:
    """Per evaluated user, n_negatives distinct unseen items, uniformly (sorted per row).

    Random keys over all items with seen items pushed to +inf; the n smallest keys are a
    uniform draw without replacement from the unseen items (every evaluated user has at least
    n unseen items, checked by the caller). Chunked to bound memory.
    """
    # Item ids fit in 32 bits: half the memory of these [n_users, n_negatives] tables (the
    # candidate lists built from them are int64 again, RankingData.candidates).
    out = np.full((n_users, n_negatives), -1, dtype=np.int32 if n_items < 2**31 else np.int64)
    if eval_users.size == 0 or n_negatives == 0:
        return out
    # Seen matrix rows for the evaluated users only, as a (row, item) list sorted by row, so
    # that each chunk of rows finds its entries by bisection (not by a pass over all of them).
    row_of = np.full(n_users, -1, dtype=np.int64)
    row_of[eval_users] = np.arange(eval_users.size)
    keep = row_of[seen_users] >= 0
    seen_rows, seen_cols = row_of[seen_users[keep]], seen_items[keep]
    by_row = np.argsort(seen_rows, kind="stable")
    seen_rows, seen_cols = seen_rows[by_row], seen_cols[by_row]
    step = max(1, chunk_elements // max(n_items, 1))
    for lo in range(0, eval_users.size, step):
        hi = min(eval_users.size, lo + step)
        keys = rng.random((hi - lo, n_items), dtype=np.float32)
        a, b = np.searchsorted(seen_rows, (lo, hi))
        keys[seen_rows[a:b] - lo, seen_cols[a:b]] = np.inf
        if n_negatives < n_items:
            picked = np.argpartition(keys, n_negatives - 1, axis=1)[:, :n_negatives]
        else:
            picked = np.argsort(keys, axis=1)[:, :n_negatives]
        out[eval_users[lo:hi]] = np.sort(picked, axis=1)
    return out


def unique_sorted(values: np.ndarray) -> np.ndarray:
    """np.unique(values) by sorting: numpy's hash-based unique is ~20x slower on millions of
    distinct keys (e.g. user * n_items + item over a large dataset)."""
    out = np.sort(values)
    if out.size:
        out = out[np.concatenate(([True], out[1:] != out[:-1]))]
    return out


def public_users(attrs: UserAttributes, fraction: float = 0.8, *, seed: int = 0, population: np.ndarray | None = None) -> np.ndarray:
    """Users whose attributes the attacker knows: `fraction` of the users with a known gender
    (among `population`, default every user), drawn per gender (stratified: each gender keeps
    round(fraction * its count), at least one when fraction > 0 and the group is not empty).
    Sorted user ids."""
    if not 0.0 < fraction <= 1.0:
        raise SplitError(f"public fraction must be in (0, 1], got {fraction}")
    gender = np.asarray(attrs.gender).copy()
    if population is not None:
        outside = np.ones(gender.size, dtype=bool)
        outside[population] = False
        gender[outside] = -1
    rng = np.random.default_rng(seed)
    chosen = []
    for g in np.unique(gender[gender >= 0]):  # sorted, so the draw order is deterministic
        members = np.flatnonzero(gender == g)
        k = min(members.size, max(1, int(round(fraction * members.size))))
        chosen.append(rng.choice(members, size=k, replace=False))
    if not chosen:
        raise SplitError("no user has a known gender; cannot choose public users")
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def split_table(split: DomainSplit) -> pd.DataFrame:
    """The per-domain counts of `split.description` as a small table (for reports)."""
    rows = {name: split.description[name] for name in ("source", "target")}
    return pd.DataFrame(rows).T
