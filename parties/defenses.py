"""Defenses applied to the source domain's data before anything derived from it leaves.

Who runs each one matters, so each says it:

- `ldp` (user side, the PrivNet paper's LDP baseline): every user adds Laplace noise to their
  own rating values before sharing them; which items a user rated is unchanged, only whether a
  rating clears the positive threshold moves.
- `ldp-items` (user side): k-ary randomized response on the items themselves (each training
  positive is replaced, with probability `noise`, by an item the user never rated).
- `blurme` (user side, BlurMe as published): every user adds k dummy items from the items most
  indicative of the *other* gender, chosen with their *own* gender.
- `blurme-server` (server side): the source adds the dummies itself; it knows only the public
  users' genders and uses its own prediction for the others.

All return a perturbed copy of the training positives (validation and test items untouched, so
utility is always measured on real data) and a JSON-able description of what was done.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
from sklearn.linear_model import LogisticRegression

from models.data import RankingData, UserAttributes

from .names import DEFENSES

RATING_RANGE = (1.0, 5.0)  # MovieLens stars: a rating's sensitivity is their span
INDICATIVE_POOL = 50  # most gender-indicative items per gender that dummies are drawn from


def _rebuild(data: RankingData, users: np.ndarray, items: np.ndarray) -> RankingData:
    """New training positives; (users, items) must already be in (user, time) order."""
    return replace(data, train_users=users.astype(np.int64), train_items=items.astype(np.int64), item_popularity=None)


def ldp_ratings(data: RankingData, noise: float, seed: int) -> tuple[RankingData, dict]:
    """Laplace noise on every training rating value (local DP per rating), then the positive
    threshold on the noisy value. Scale b = noise x span of the rating scale, so a rating value
    (sensitivity = span) is released with epsilon = span / b = 1 / noise."""
    if not 0.0 < noise < 1.0:
        raise ValueError(f"LDP noise must be in (0, 1), got {noise}")
    if data.ratings is None:
        raise ValueError("LDP on rating values needs the domain's ratings (RankingData.ratings)")
    log = data.ratings
    span = RATING_RANGE[1] - RATING_RANGE[0]
    scale = noise * span
    rng = np.random.default_rng(seed)
    noisy = np.clip(log.ratings + rng.laplace(0.0, scale, log.ratings.size), *RATING_RANGE)
    users, items = log.positives(noisy)
    before = int((log.ratings >= log.min_rating).sum())
    info = {
        "mechanism": "Laplace noise on rating values (user side)",
        "noise": noise,
        "laplace_scale": scale,
        "epsilon_per_rating": span / scale,
        "ratings": int(log.ratings.size),
        "positives_before": before,
        "positives_after": int(users.size),
        "positives_flipped": int(((noisy >= log.min_rating) != (log.ratings >= log.min_rating)).sum()),
    }
    return _rebuild(data, users, items), info


def ldp_items(data: RankingData, noise: float, seed: int) -> tuple[RankingData, dict]:
    """k-ary randomized response on items: each training positive is kept with probability
    1 - noise, else replaced by an item drawn uniformly among those the user never rated (no
    duplicates). Over n items that is epsilon = ln((1 - noise)(n - 1) / noise) per item."""
    if not 0.0 < noise < 1.0:
        raise ValueError(f"LDP noise must be in (0, 1), got {noise}")
    rng = np.random.default_rng(seed)
    n = data.n_items
    known_users, known_items = data.known_pairs()
    taken = np.zeros((data.n_users, n), dtype=bool)
    taken[known_users, known_items] = True
    items = data.train_items.copy()
    flip = np.flatnonzero(rng.random(items.shape[0]) < noise)
    for row in flip:  # a few thousand draws; each must avoid what the user already has
        u = data.train_users[row]
        free = np.flatnonzero(~taken[u])
        if free.size == 0:
            continue
        new = int(rng.choice(free))
        taken[u, new] = True
        items[row] = new
    info = {
        "mechanism": "k-ary randomized response on items (user side)",
        "noise": noise,
        "epsilon": math.log((1.0 - noise) * (n - 1) / noise),
        "flipped": int(flip.size),
    }
    return _rebuild(data, data.train_users.copy(), items), info


def indicative_items(
    data: RankingData, attributes: UserAttributes, top: int = INDICATIVE_POOL
) -> tuple[np.ndarray, np.ndarray, LogisticRegression]:
    """(female-indicative, male-indicative) items: the largest and smallest coefficients of a
    logistic regression from item indicators to gender, fitted on the users whose gender is
    known to `attributes` (the public ones); and the fitted model."""
    x = np.zeros((data.n_users, data.n_items), dtype=np.float32)
    x[data.train_users, data.train_items] = 1.0
    known = attributes.known()
    y = attributes.gender[known]
    if known.size < 10 or np.unique(y).size < 2:
        raise ValueError("BlurMe needs public users of both genders to find indicative items")
    clf = LogisticRegression(C=1.0, max_iter=1000).fit(x[known], y)
    coef = clf.coef_[0]
    return np.argsort(-coef)[:top], np.argsort(coef)[:top], clf


def blurme(data: RankingData, gender: np.ndarray, indicative: tuple[np.ndarray, np.ndarray], k: int, seed: int) -> tuple[RankingData, dict]:
    """Add k dummy items per user from the other gender's indicative items (female users get
    male-indicative items and vice versa), each at a uniformly random place in the user's time
    line *before* their last real item: dummies join the profile without becoming its latest
    events, and the last real item stays the user's query candidate. `gender[u]` is what user u
    uses (-1: no dummies)."""
    rng = np.random.default_rng(seed)
    female_items, male_items = indicative
    known_users, known_items = data.known_pairs()
    rated = np.zeros((data.n_users, data.n_items), dtype=bool)
    rated[known_users, known_items] = True
    bounds = np.searchsorted(data.train_users, np.arange(data.n_users + 1))
    users, items = [], []
    added = 0
    for u in range(data.n_users):
        history = data.train_items[bounds[u] : bounds[u + 1]]
        if history.size and gender[u] in (0, 1):
            pool = male_items if gender[u] == 1 else female_items
            pool = pool[~rated[u, pool]]
            pick = rng.choice(pool, size=min(k, pool.size), replace=False) if pool.size else np.zeros(0, np.int64)
            # insertion points among the first len-1 gaps: never after the last real item
            where = np.sort(rng.integers(0, history.size, size=pick.size))
            history = np.insert(history, where, pick)
            added += int(pick.size)
        users.append(np.full(history.size, u, dtype=np.int64))
        items.append(history.astype(np.int64))
    info = {"k": k, "indicative_pool": int(female_items.size), "dummies_added": added, "placement": "random, before the last real item"}
    return _rebuild(data, np.concatenate(users), np.concatenate(items)), info


def apply_defense(
    name: str,
    data: RankingData,
    *,
    public: UserAttributes,
    own_gender: np.ndarray | None,
    noise: float = 0.1,
    k: int = 5,
    seed: int = 0,
) -> tuple[RankingData, dict]:
    """The source data after defense `name`. `public` holds the public users' attributes (what
    a server knows); `own_gender` each user's own gender, used only by the user-side BlurMe
    (it runs on each user's device, where the user knows it)."""
    if name not in DEFENSES:
        raise ValueError(f"unknown defense {name!r}; valid: {', '.join(DEFENSES)}")
    info: dict = {"defense": name}
    if name == "none":
        return data, info
    if name == "ldp":
        data, more = ldp_ratings(data, noise, seed)
    elif name == "ldp-items":
        data, more = ldp_items(data, noise, seed)
    else:
        female, male, clf = indicative_items(data, public)
        if name == "blurme":
            if own_gender is None:
                raise ValueError("user-side BlurMe needs each user's own gender")
            gender, whose = np.asarray(own_gender), "each user's own (user side)"
        else:
            x = np.zeros((data.n_users, data.n_items), dtype=np.float32)
            x[data.train_users, data.train_items] = 1.0
            gender = clf.predict(x).astype(np.int64)
            known = public.known()
            gender[known] = public.gender[known]
            whose = "public users' own, the source's prediction for the others (server side)"
        data, more = blurme(data, gender, (female, male), k, seed)
        more["gender_used"] = whose
    return data, {**info, **more}
