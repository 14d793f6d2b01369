"""Defenses a source party applies to its own data before anything derived from it leaves.

Both operate on the source's training positives (a `RankingData`) and return a perturbed copy;
validation and test items are untouched, so utility is always measured on real data.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
from sklearn.linear_model import LogisticRegression

from models.data import RankingData, UserAttributes


def _rebuild(data: RankingData, users: np.ndarray, items: np.ndarray) -> RankingData:
    # keep (user, time) order: a stable sort on users preserves each user's sequence
    order = np.argsort(users, kind="stable")
    return replace(data, train_users=users[order], train_items=items[order], item_popularity=None)


def ldp_randomized_response(data: RankingData, noise: float, seed: int) -> tuple[RankingData, dict]:
    """k-ary randomized response on every training interaction (local DP per interaction).

    Each item is kept with probability 1 - noise and otherwise replaced by an item drawn
    uniformly from the other n - 1 items. Keeping with probability e^eps / (e^eps + n - 1) is
    eps-LDP, so noise = 0.1 over n items gives eps = ln(0.9 (n - 1) / 0.1).
    """
    if not 0.0 < noise < 1.0:
        raise ValueError(f"LDP noise must be in (0, 1), got {noise}")
    rng = np.random.default_rng(seed)
    n = data.n_items
    items = data.train_items.copy()
    flip = rng.random(items.shape[0]) < noise
    # uniform over the other n-1 items: draw from n-1 and skip the true item
    draw = rng.integers(0, n - 1, size=int(flip.sum()))
    draw = draw + (draw >= items[flip])
    items[flip] = draw
    epsilon = math.log((1.0 - noise) * (n - 1) / noise)
    info = {"mechanism": "k-ary randomized response", "noise": noise, "epsilon": epsilon, "flipped": int(flip.sum())}
    return _rebuild(data, data.train_users.copy(), items), info


def blurme(data: RankingData, attributes: UserAttributes, k: int, seed: int, top: int = 50) -> tuple[RankingData, dict]:
    """BlurMe: add k dummy items per user, drawn from the items most indicative of the other gender.

    Indicative items are the largest coefficients of a logistic regression from item
    indicators to gender, trained on the public users (the only labels the source holds). A
    private user's own gender is unknown to the source, so it uses that regression's
    prediction; BlurMe proper runs on the user's device with the true gender, which makes this
    simulation an upper bound on what a server-side BlurMe leaks.
    """
    rng = np.random.default_rng(seed)
    n_users, n_items = data.n_users, data.n_items
    x = np.zeros((n_users, n_items), dtype=np.float32)
    x[data.train_users, data.train_items] = 1.0
    known = attributes.known()
    y = attributes.gender[known]
    if known.size < 10 or np.unique(y).size < 2:
        raise ValueError("BlurMe needs public users of both genders to find indicative items")
    clf = LogisticRegression(C=1.0, max_iter=1000).fit(x[known], y)
    coef = clf.coef_[0]
    female_items = np.argsort(-coef)[:top]  # most indicative of gender 1
    male_items = np.argsort(coef)[:top]  # most indicative of gender 0
    gender = clf.predict(x).astype(np.int64)
    gender[known] = attributes.gender[known]
    users, items = [data.train_users], [data.train_items]
    seen = x.astype(bool)
    added = 0
    for u in range(n_users):
        pool = male_items if gender[u] == 1 else female_items
        pool = pool[~seen[u, pool]]
        if pool.size == 0:
            continue
        pick = rng.choice(pool, size=min(k, pool.size), replace=False)
        users.append(np.full(pick.size, u, dtype=np.int64))
        items.append(pick.astype(np.int64))
        added += int(pick.size)
    # dummy items are appended at the end of each user's sequence (most recent), where they
    # enter the windows the source network reads
    info = {"k": k, "indicative_pool": top, "dummies_added": added, "gender_of_private_users": "predicted"}
    return _rebuild(data, np.concatenate(users), np.concatenate(items)), info
