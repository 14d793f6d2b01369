"""The membership scenario's split of one dataset (paper 004, §3.1), built the same way for a
seed wherever a party or the evaluation runs.

- Users with fewer than MIN_INTERACTIONS interactions (any rating counts: implicit feedback)
  are dropped.
- The rest are shuffled (seeded) and cut into three disjoint groups of (nearly) equal size:
  the item-feature set (public data the attacker factorises into item vectors), the shadow
  set (the attacker's own users) and the target set (the users the service is asked about).
- Half of the shadow users and half of the target users are members: the shadow service
  trains on the shadow members, the attacked service on the target members.
- Each shadow and target user's last interaction (by time, then item id) is held out: no
  service and no attacker sees it; it scores HR@100. A user's *history* is everything else,
  in time order: what a service holds about a member (training data) or, under the fold-in
  policy, a non-member, and what the attacker is assumed to know about every target user
  (the paper's auxiliary knowledge).

Cached per (dataset fingerprint, seed).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..datasets import Dataset

MIN_INTERACTIONS = 20
SPLIT_STREAM = 404  # the split's own random stream of the seed
ATTACKER_KNOWLEDGE = (
    "the attacker (curious requester or wire eavesdropper) knows the item-feature set's ratings, "
    "its shadow set's histories and which shadow users it made members, and each target user's "
    "history (every interaction but the held-out last one: the paper's auxiliary knowledge); "
    "it never sees the target service's model or who its members are"
)
_CACHE: OrderedDict[tuple[str, int], MembershipSplit] = OrderedDict()
_CACHE_SIZE = 4


@dataclass(frozen=True)
class MembershipSplit:
    n_items: int
    feature_users: np.ndarray  # sorted dataset user ids of each group
    shadow_members: np.ndarray
    shadow_nonmembers: np.ndarray
    target_members: np.ndarray
    target_nonmembers: np.ndarray
    histories: dict[int, np.ndarray]  # shadow and target users: their items in time order, held-out item excluded
    held_out: dict[int, int]  # shadow and target users: their last interaction
    feature_ratings: tuple[np.ndarray, np.ndarray, np.ndarray]  # (users, items, rating values) of the item-feature set
    description: dict[str, Any]

    @property
    def target_users(self) -> np.ndarray:
        return np.union1d(self.target_members, self.target_nonmembers)

    @property
    def shadow_users(self) -> np.ndarray:
        return np.union1d(self.shadow_members, self.shadow_nonmembers)

    def of(self, users: np.ndarray) -> dict[int, np.ndarray]:
        return {int(u): self.histories[int(u)] for u in np.asarray(users).tolist()}

    def held_out_of(self, users: np.ndarray) -> np.ndarray:
        return np.array([self.held_out.get(int(u), -1) for u in np.asarray(users).tolist()], dtype=np.int64)


def membership_split(dataset: Dataset, seed: int) -> MembershipSplit:
    key = (dataset.fingerprint(), int(seed))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    split = _build(dataset, int(seed))
    _CACHE[key] = split
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return split


def _halves(users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(members, non-members): the first half of a shuffled group, and the rest."""
    cut = users.size // 2
    return np.sort(users[:cut]), np.sort(users[cut:])


def _build(dataset: Dataset, seed: int) -> MembershipSplit:
    r = dataset.ratings  # sorted by (user, time, item)
    users, items = r["user"].to_numpy(np.int64), r["item"].to_numpy(np.int64)
    counts = np.bincount(users, minlength=dataset.n_users)
    eligible = np.flatnonzero(counts >= MIN_INTERACTIONS)
    if eligible.size < 6:
        raise ValueError(f"only {eligible.size} users have >= {MIN_INTERACTIONS} interactions; the membership split needs at least 6")
    rng = np.random.default_rng([seed, SPLIT_STREAM])
    feature, shadow, target = np.array_split(rng.permutation(eligible), 3)
    shadow_members, shadow_nonmembers = _halves(shadow)
    target_members, target_nonmembers = _halves(target)
    starts = np.concatenate([[0], np.cumsum(counts)])
    histories, held_out = {}, {}
    for u in np.concatenate([shadow, target]).tolist():
        own = items[starts[u] : starts[u + 1]]
        histories[int(u)] = own[:-1].copy()
        held_out[int(u)] = int(own[-1])
    in_feature = np.isin(users, feature)
    feature_ratings = (users[in_feature], items[in_feature], r["rating"].to_numpy(np.float32)[in_feature])
    covered = np.unique(feature_ratings[1])
    description = {
        "rule": "paper 004 §3.1: users with >= 20 interactions, split into three disjoint groups; half of the shadow and of the target users are members",
        "seed": seed,
        "min_interactions": MIN_INTERACTIONS,
        "eligible_users": int(eligible.size),
        "dropped_users": int(dataset.n_users - eligible.size),
        "feature_users": int(feature.size),
        "shadow_members": int(shadow_members.size),
        "shadow_nonmembers": int(shadow_nonmembers.size),
        "target_members": int(target_members.size),
        "target_nonmembers": int(target_nonmembers.size),
        "items": int(dataset.n_items),
        "items_without_feature_vector": int(dataset.n_items - covered.size),
        "held_out": "each shadow and target user's last interaction: never trained on or served from, it scores HR@100",
        "attacker_knowledge": ATTACKER_KNOWLEDGE,
    }
    return MembershipSplit(
        n_items=int(dataset.n_items),
        feature_users=np.sort(feature),
        shadow_members=shadow_members,
        shadow_nonmembers=shadow_nonmembers,
        target_members=target_members,
        target_nonmembers=target_nonmembers,
        histories=histories,
        held_out=held_out,
        feature_ratings=feature_ratings,
        description=description,
    )
