"""The simulated world: data loaded once per (dataset, split, seed) and handed out per party.

Every party rebuilds its own world deterministically from the JSON-able run config wherever
it runs (this process, a worker, a Ray actor, a Flower node), so no party's data ever travels
through another party. The ground-truth attributes are for evaluation only.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from models.data import UserAttributes

from .datasets import Dataset, load_dataset
from .splits import DomainSplit, public_users, split_domains


@dataclass(frozen=True)
class World:
    dataset: Dataset
    split: DomainSplit
    attributes: UserAttributes  # ground truth, for evaluation only
    public: np.ndarray  # user ids whose attributes are public (attacker's auxiliary knowledge)

    @property
    def population(self) -> np.ndarray:
        """The users the run concerns (with population "overlap": data in both domains)."""
        return self.split.population

    @property
    def private(self) -> np.ndarray:
        """Users of the population whose attributes are private (the attacks' test users)."""
        return np.setdiff1d(self.population, self.public)


def data_key(run: dict[str, Any]) -> tuple:
    synthetic = tuple(sorted((run.get("synthetic") or {}).items()))
    return (
        run["dataset"],
        run.get("data_dir"),
        run.get("split", "year"),
        int(run["seed"]),
        float(run.get("public_fraction", 0.8)),
        synthetic,
        run.get("population", "overlap"),
    )


@lru_cache(maxsize=2)
def _dataset(name: str, data_dir: str | None, synthetic: tuple) -> Dataset:
    # The dataset itself does not depend on the seed (except synthetic data, which is seeded
    # by its own options), so all seeds evaluate the same users and items: loaded (or
    # generated) once for all of them.
    return load_dataset(name, data_dir, seed=int(dict(synthetic).get("seed", 0)), synthetic=dict(synthetic) or None)


def dataset_of(run: dict[str, Any]) -> Dataset:
    """The run's dataset, before any split (cached like the worlds made from it)."""
    name, data_dir, _, _, _, synthetic, _ = data_key(run)
    return _dataset(name, data_dir, synthetic)


@lru_cache(maxsize=4)
def _world(key: tuple) -> World:
    name, data_dir, split_by, seed, public_fraction, synthetic, population = key
    dataset = _dataset(name, data_dir, synthetic)
    split = split_domains(dataset, by=split_by, seed=seed, population=population)
    attributes = dataset.attributes()
    public = public_users(attributes, public_fraction, seed=seed, population=split.population)
    return World(dataset, split, attributes, public)


def world(run: dict[str, Any]) -> World:
    return _world(data_key(run))
