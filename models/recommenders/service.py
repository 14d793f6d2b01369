"""A recommendation service as paper 004 runs one: a personalised algorithm trained on its
members only, and a rule for everyone else (the non-member policy).

- members get the top-k of their personalised scores over the items they have not
  interacted with;
- non-members get, by policy:
  `popular` (the paper): the k items most popular among the members, the same list for all;
  `popularity-randomization` (the paper's defense, Appendix A): k items drawn at random from
  the k / ratio most popular (ratio 0.1: from the top 1,000 for k = 100), a fresh draw each;
  `fold-in` (beyond the paper): a personalised list computed from the non-member's own
  history without training on it (Item-CF from their history; LFM and NCF fold in a user
  vector with everything learned from the members frozen), over the items not in it; a
  non-member without a history gets the popular list.

The same class is the attacked service and the attacker's shadow service.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..training import Stopwatch
from .base import Histories, Recommender, most_popular, popularity, randomized_popular, top_k
from .itemcf import ItemCF
from .lfm import LFM
from .ncf import NCF

ALGORITHMS: dict[str, type[Recommender]] = {"item": ItemCF, "lfm": LFM, "ncf": NCF}
POLICIES = ("popular", "popularity-randomization", "fold-in")
RANDOMIZATION_STREAM = 51


def make_recommender(algorithm: str, options: Mapping[str, Any], seed: int) -> Recommender:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown recommendation algorithm {algorithm!r}; choose from {', '.join(ALGORITHMS)}")
    return ALGORITHMS[algorithm](options, seed)


class ListService:
    """Trains `algorithm` on members' histories and serves top-k lists by `policy`."""

    def __init__(self, algorithm: str, policy: str, options: Mapping[str, Any], seed: int, *, k: int = 100, ratio: float = 0.1):
        if policy not in POLICIES:
            raise ValueError(f"unknown non-member policy {policy!r}; choose from {', '.join(POLICIES)}")
        self.recommender = make_recommender(algorithm, options, seed)
        self.algorithm, self.policy, self.seed, self.k, self.ratio = algorithm, policy, int(seed), int(k), float(ratio)
        self.members: dict[int, np.ndarray] = {}
        self.popularity = np.zeros(0, dtype=np.int64)

    def train(self, members: Histories, n_items: int) -> dict[str, Any]:
        clock = Stopwatch()
        self.members = {int(u): np.asarray(h, dtype=np.int64) for u, h in members.items()}
        self.popularity = popularity(self.members, n_items)
        info = self.recommender.fit(self.members, n_items)
        return {"algorithm": self.algorithm, **info, "train_seconds": clock.seconds}

    def is_member(self, users: np.ndarray) -> np.ndarray:
        return np.isin(np.asarray(users, dtype=np.int64), self.recommender.users)

    def serve(self, users: np.ndarray, nonmember_histories: Histories | None = None) -> np.ndarray:
        """Top-k lists (int64 [n, k]) for `users`, in their order. Each group is computed in
        user-id order, so that no list depends on who else was asked or in which order."""
        users = np.asarray(users, dtype=np.int64)
        if self.popularity.size == 0:
            raise RuntimeError("serve before train")
        out = np.full((users.size, self.k), -1, dtype=np.int64)
        member = self.is_member(users)
        if member.any():
            ids, pos = np.unique(users[member], return_index=True)
            rows = np.flatnonzero(member)[pos]
            out[rows] = top_k(self.recommender.member_scores(ids), self.k, [self.members[u] for u in ids.tolist()])
        non = np.flatnonzero(~member)
        if non.size == 0:
            return out
        if self.policy == "popularity-randomization":
            out[non] = randomized_popular(self.popularity, self.k, self.ratio, users[non], self.seed, RANDOMIZATION_STREAM)
            return out
        popular = most_popular(self.popularity, self.k)
        out[non, : popular.size] = popular
        if self.policy == "fold-in":
            known = nonmember_histories or {}
            with_history = np.array(sorted({int(u) for u in users[non] if len(known.get(int(u), ())) > 0}), dtype=np.int64)
            if with_history.size:
                histories = [np.asarray(known[u], dtype=np.int64) for u in with_history.tolist()]
                lists = top_k(self.recommender.fold_in_scores(with_history, histories), self.k, histories)
                by_user = dict(zip(with_history.tolist(), lists))
                for r in non:
                    if int(users[r]) in by_user:
                        out[r] = by_user[int(users[r])]
        return out
