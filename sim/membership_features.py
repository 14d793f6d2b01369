"""The membership attacker's feature pipeline (paper 004, §2.4-2.5), run by the evaluation
for each threat model on what it captured.

The attacker holds only its own data (sim.splits.membership): the item-feature set's ratings,
its shadow set (whose members it chose) and each target user's history (the paper's
auxiliary knowledge). From them:

1. item vectors: the item-feature rating matrix factorised with l factors (`feature_dim`,
   the paper's l = 100);
2. a shadow service: the attacker's own ListService, trained on its shadow members with the
   shadow algorithm it chose, serving its shadow users by the non-member policy the attacker
   assumes (`shadow_policy`: `same`, the service's, which the paper's defense evaluation
   assumes the attacker knows; or `popular`, the paper's policy, for an attacker that does not
   adapt to a defense);
3. each user's feature: the mean vector of their history minus the rank-weighted mean vector
   of the first `feature_k` items of their list (the paper's k = 100);
4. the attack trains on the shadow users' features and labels and scores the target users'
   features built from the intercepted lists (the RECOMMENDATION_LISTS artifact).

Membership of the target users enters only as the labels the attack is scored against. Item
vectors and shadow lists depend only on the attacker's data, its choices and the seed, so they
are cached across the variants of a run.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from attacks.membership import centroid_difference_features, item_vectors_from_ratings
from attacks.tap import Eavesdropper
from models.recommenders import ListService
from parties.names import RECOMMENDATION_LISTS

from .splits.membership import MembershipSplit, membership_split
from .world import World

LIST_LENGTH = 100  # k: what the services serve (paper 004); `feature_k` may read fewer
SHADOW_STREAM = 7  # the attacker's shadow service draws from its own stream of the seed
SHADOW_OPTIONS = (
    "lfm_dim", "lfm_epochs", "lfm_lr", "lfm_reg", "lfm_batch",
    "ncf_gmf_dim", "ncf_mlp", "ncf_epochs", "ncf_lr", "ncf_batch", "ncf_negatives", "fold_in_epochs", "pr_ratio",
)  # fmt: skip
_CACHE: OrderedDict[Hashable, Any] = OrderedDict()
_CACHE_SIZE = 32


def _cached(key: Hashable, make: Callable[[], Any]) -> Any:
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    value = _CACHE[key] = make()
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return value


def intercepted_lists(capture: Eavesdropper) -> tuple[np.ndarray, np.ndarray] | None:
    """(user ids, lists [n, k]) of the complete RECOMMENDATION_LISTS artifact the capture
    could read, or None (e.g. the wire on the secure channel)."""
    for artifact in capture.artifacts().values():
        if artifact.kind == RECOMMENDATION_LISTS and artifact.complete and "items" in artifact.arrays:
            return np.asarray(artifact.user_ids, dtype=np.int64), np.asarray(artifact.arrays["items"], dtype=np.int64)
    return None


def shadow_seed(seed: int) -> int:
    return int(np.random.SeedSequence([int(seed), SHADOW_STREAM]).generate_state(1)[0] & 0x7FFF_FFFF)


def shadow_policy(options: dict[str, Any]) -> str:
    assumed = str(options.get("shadow_policy", "same"))
    return str(options["policy"]) if assumed == "same" else assumed


def shadow_lists(split: MembershipSplit, seed: int, options: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(shadow user ids, their lists from the attacker's shadow service, what training did)."""
    service = ListService(
        str(options["shadow"]), shadow_policy(options), options, shadow_seed(seed), k=LIST_LENGTH, ratio=float(options.get("pr_ratio", 0.1))
    )
    info = service.train(split.of(split.shadow_members), split.n_items)
    users = split.shadow_users
    return users, service.serve(users, split.of(split.shadow_nonmembers)), info


def membership_features(
    capture: Eavesdropper, world: World, seed: int, options: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """MembershipAttack.features: (X_shadow, member_shadow, X_target, member_target), or None
    when the capture holds no readable list."""
    found = intercepted_lists(capture)
    if found is None:
        return None
    users, lists = found
    split = membership_split(world.dataset, seed)
    fingerprint = world.dataset.fingerprint()
    dim, k = int(options.get("feature_dim", 100)), int(options.get("feature_k", LIST_LENGTH))
    vectors = _cached(("vectors", fingerprint, seed, dim), lambda: item_vectors_from_ratings(*split.feature_ratings, split.n_items, dim))
    chosen = tuple((name, repr(options.get(name))) for name in SHADOW_OPTIONS)
    key = ("shadow", fingerprint, seed, str(options["shadow"]), shadow_policy(options), chosen)
    shadow_users, shadow, _ = _cached(key, lambda: shadow_lists(split, seed, options))
    X_train = centroid_difference_features([split.histories[u] for u in shadow_users.tolist()], shadow[:, :k], vectors)
    unknown = [int(u) for u in users.tolist() if int(u) not in split.histories]
    if unknown:
        raise ValueError(f"the intercepted lists name users outside the target set: {unknown[:5]}")
    X_test = centroid_difference_features([split.histories[int(u)] for u in users.tolist()], lists[:, :k], vectors)
    member_train = np.isin(shadow_users, split.shadow_members)
    member_test = np.isin(users, split.target_members)  # ground truth: scores the attack, never read by it
    return X_train, member_train, X_test, member_test
