"""Plain containers for one domain's ranking data.

`sim` builds these from a dataset; parties receive them as their own private data. They hold
only numpy arrays so that every package (models, parties, sim) can share them without
importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NO_ITEM = -1  # marks a user with no validation/test item in a domain


@dataclass(frozen=True)
class RankingData:
    """Implicit-feedback data of one domain, split leave-one-out per user.

    Users are shared across domains (ids 0..n_users-1 mean the same people everywhere);
    item ids are local to the domain (0..n_items-1).

    - `train_users`, `train_items`: training positives, ordered by (user, time).
    - `valid_items` / `test_items`: per user, the second-to-last / last positive, or NO_ITEM
      when the user has too few positives to hold one out (such users are not evaluated).
    - `valid_negatives` / `test_negatives`: per user, sampled items the user never interacted
      with in this domain (shape [n_users, n_negatives]; rows of unevaluated users are -1).
    """

    n_users: int
    n_items: int
    train_users: np.ndarray
    train_items: np.ndarray
    valid_items: np.ndarray
    valid_negatives: np.ndarray
    test_items: np.ndarray
    test_negatives: np.ndarray
    item_popularity: np.ndarray = field(default=None)  # training positives per item

    def __post_init__(self) -> None:
        if self.item_popularity is None:
            pop = np.bincount(self.train_items, minlength=self.n_items).astype(np.int64)
            object.__setattr__(self, "item_popularity", pop)

    @property
    def n_train(self) -> int:
        return int(self.train_users.shape[0])

    def eval_users(self, split: str = "test") -> np.ndarray:
        """Users that have a held-out item in `split` ('valid' or 'test')."""
        items = self.test_items if split == "test" else self.valid_items
        return np.flatnonzero(items != NO_ITEM)

    def candidates(self, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
        """(users, items[U, 1 + n_negatives]) with the held-out positive in column 0."""
        users = self.eval_users(split)
        if split == "test":
            pos, neg = self.test_items, self.test_negatives
        else:
            pos, neg = self.valid_items, self.valid_negatives
        return users, np.concatenate([pos[users, None], neg[users]], axis=1)

    def histories(self) -> list[np.ndarray]:
        """Each user's training items in time order (empty array for users with none)."""
        bounds = np.searchsorted(self.train_users, np.arange(self.n_users + 1))
        return [self.train_items[bounds[u] : bounds[u + 1]] for u in range(self.n_users)]

    def seen_mask_rows(self) -> list[set[int]]:
        """Per user, the set of training items (for sampling negatives)."""
        return [set(h.tolist()) for h in self.histories()]


@dataclass(frozen=True)
class UserAttributes:
    """Private attributes a party may hold. Label -1 means 'unknown to this holder'.

    `gender`: 0 = male, 1 = female. `age_group`: 0 = under 35, 1 = 35-45, 2 = over 45
    (PrivNet's groups).
    """

    gender: np.ndarray
    age_group: np.ndarray

    NAMES = ("gender", "age_group")
    N_CLASSES = {"gender": 2, "age_group": 3}

    def as_dict(self) -> dict[str, np.ndarray]:
        return {"gender": self.gender, "age_group": self.age_group}

    def known(self) -> np.ndarray:
        """Users whose attributes this holder knows."""
        return np.flatnonzero(self.gender >= 0)

    def restricted_to(self, users: np.ndarray) -> UserAttributes:
        """A copy in which only `users` keep their labels (the public users)."""
        keep = np.zeros(self.gender.shape[0], dtype=bool)
        keep[users] = True
        return UserAttributes(
            gender=np.where(keep, self.gender, -1),
            age_group=np.where(keep, self.age_group, -1),
        )
