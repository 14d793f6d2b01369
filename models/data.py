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
class RatingLog:
    """Every rating of a domain's training portion (positives and the rest, held-out items
    excluded), in (user, time, item) order: what a mechanism on rating values (local DP noise)
    perturbs before the positive threshold `min_rating` is applied."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray  # float32
    timestamps: np.ndarray
    min_rating: float

    def positives(self, ratings: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(users, items) rated >= min_rating (by `ratings`, default the true ones), in order."""
        keep = (self.ratings if ratings is None else ratings) >= self.min_rating
        return self.users[keep], self.items[keep]


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
    ratings: RatingLog | None = None  # the training portion's ratings, when the holder has them

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

    def histories(self, through: str = "train") -> list[np.ndarray]:
        """Each user's items in time order (empty array for users with none): the training
        items (`through="train"`), or those followed by the user's validation item
        (`through="valid"`): the history a model may read when it scores the test item, which
        came after both."""
        if through not in ("train", "valid"):
            raise ValueError(f"through must be 'train' or 'valid', got {through!r}")
        bounds = np.searchsorted(self.train_users, np.arange(self.n_users + 1))
        out = [self.train_items[bounds[u] : bounds[u + 1]] for u in range(self.n_users)]
        if through == "valid":
            for u in np.flatnonzero(self.valid_items != NO_ITEM):
                out[u] = np.append(out[u], self.valid_items[u])
        return out

    def held_out_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(users, items) of the validation and test items (never a training negative)."""
        users, items = [], []
        for held in (self.valid_items, self.test_items):
            ev = np.flatnonzero(held != NO_ITEM)
            users.append(ev)
            items.append(held[ev])
        return np.concatenate(users).astype(np.int64), np.concatenate(items).astype(np.int64)

    def known_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(users, items) of every interaction this holder knows: training positives, held-out
        items and other ratings. Training negatives are drawn outside these."""
        held_users, held_items = self.held_out_pairs()
        users, items = [self.train_users, held_users], [self.train_items, held_items]
        if self.ratings is not None:
            users.append(self.ratings.users)
            items.append(self.ratings.items)
        return np.concatenate(users).astype(np.int64), np.concatenate(items).astype(np.int64)


@dataclass(frozen=True)
class UserAttributes:
    """Private attributes a party may hold. Label -1 means 'unknown to this holder'.

    `gender`: 0 = male, 1 = female. `age_group`: 0 = under 35, 1 = 35-45, 2 = over 45
    (PrivNet's groups). `age_bracket` (when known): the 7 MovieLens-1M brackets <18, 18-24,
    25-34, 35-44, 45-49, 50-55, 56+ (the privacy-adversarial BPR paper's age attribute).
    """

    gender: np.ndarray
    age_group: np.ndarray
    age_bracket: np.ndarray | None = None

    NAMES = ("gender", "age_group")
    N_CLASSES = {"gender": 2, "age_group": 3, "age_bracket": 7}

    def as_dict(self) -> dict[str, np.ndarray]:
        out = {"gender": self.gender, "age_group": self.age_group}
        if self.age_bracket is not None:
            out["age_bracket"] = self.age_bracket
        return out

    def known(self) -> np.ndarray:
        """Users whose attributes this holder knows."""
        return np.flatnonzero(self.gender >= 0)

    def restricted_to(self, users: np.ndarray) -> UserAttributes:
        """A copy in which only `users` keep their labels (the public users)."""
        keep = np.zeros(self.gender.shape[0], dtype=bool)
        keep[users] = True

        def only(values: np.ndarray | None) -> np.ndarray | None:
            return None if values is None else np.where(keep, values, -1)

        return UserAttributes(gender=only(self.gender), age_group=only(self.age_group), age_bracket=only(self.age_bracket))


@dataclass(frozen=True)
class Ratings:
    """Explicit ratings as parallel arrays: user ids, item ids (local to the holder's domain),
    rating values (float32)."""

    users: np.ndarray
    items: np.ndarray
    values: np.ndarray

    def __post_init__(self) -> None:
        if not (self.users.shape == self.items.shape == self.values.shape) or self.users.ndim != 1:
            raise ValueError(
                f"users, items, values must be 1-d and equally long, got {self.users.shape}, {self.items.shape}, {self.values.shape}"
            )

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def select(self, rows: np.ndarray) -> Ratings:
        """The ratings at `rows` (a boolean mask or indices)."""
        return Ratings(self.users[rows], self.items[rows], self.values[rows])

    def of_users(self, users: np.ndarray) -> Ratings:
        """The ratings of the given users."""
        return self.select(np.isin(self.users, users))

    def per_user(self, n_users: int) -> np.ndarray:
        """How many ratings each user has."""
        return np.bincount(self.users, minlength=n_users)


@dataclass(frozen=True)
class RatingData:
    """Explicit-feedback data of one domain, split into training, validation and test ratings.
    Validation ratings are for model selection only; test ratings are read only to report."""

    n_users: int
    n_items: int
    train: Ratings
    valid: Ratings
    test: Ratings
