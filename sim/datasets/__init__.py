"""Datasets: MovieLens-100K (embedded RecBole copy or a GroupLens directory), MovieLens-1M, and a
synthetic generator with a planted dependence between user attributes and interactions.
Conventions (ids, gender, age groups, years, genres): `sim.datasets.dataset`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import DATASETS
from .dataset import Dataset, DatasetError, age_group_of, order_by_user_time_item
from .movielens import (
    RECBOLE_PIN,
    find_embedded_ml100k,
    load_atomic,
    load_grouplens_1m,
    load_grouplens_100k,
    load_movielens,
)
from .synthetic import make_synthetic


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    seed: int = 0,
    synthetic: dict[str, Any] | None = None,
) -> Dataset:
    """Load a dataset by name.

    - "ml-100k": with no `data_dir`, the RecBole atomic copy inside the installed recbole
      wheel; with `data_dir`, a GroupLens ml-100k directory (u.data, u.user, u.item) or a
      directory with RecBole atomic files (<name>.inter/.user/.item).
    - "ml-1m": a GroupLens ml-1m directory (ratings.dat, users.dat, movies.dat); needs `data_dir`.
    - "synthetic": `make_synthetic(seed=seed, **synthetic)`; a "seed" key in `synthetic` wins
      over `seed`.
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    if name == "synthetic":
        if data_dir is not None:
            raise DatasetError("the synthetic dataset is generated, not read: drop data_dir / --data-dir")
        options = dict(synthetic or {})
        options.setdefault("seed", seed)
        try:
            return make_synthetic(**options)
        except TypeError as exc:
            raise DatasetError(f"bad synthetic options {sorted(options)}: {exc}") from exc
    if synthetic:
        raise DatasetError(f"synthetic options apply only to dataset 'synthetic', not {name!r}: drop them")
    return load_movielens(name, data_dir)


__all__ = [
    "DATASETS",
    "RECBOLE_PIN",
    "Dataset",
    "DatasetError",
    "age_group_of",
    "find_embedded_ml100k",
    "load_atomic",
    "load_dataset",
    "load_grouplens_100k",
    "load_grouplens_1m",
    "make_synthetic",
    "order_by_user_time_item",
]
