"""Statistics over seeds: mean with a t-based 95% interval, and paired differences.

Paired differences compare a variant with the scenario's reference variant seed by seed: the
same seed means the same split, the same public users and the same negatives, so most of the
spread between seeds cancels and the interval is much tighter than comparing two means.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


def _finite(values: Sequence[Any]) -> np.ndarray:
    return np.asarray([float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)])


def mean_ci(values: Sequence[Any], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """{mean, ci95 (half-width of the t interval; 0 for one value), n, values}."""
    arr = _finite(values)
    if arr.size == 0:
        return {"mean": None, "ci95": None, "n": 0, "values": list(values)}
    half = 0.0
    if arr.size > 1:
        half = float(stats.t.ppf(0.5 + confidence / 2, arr.size - 1) * arr.std(ddof=1) / math.sqrt(arr.size))
    return {"mean": float(arr.mean()), "ci95": half, "n": int(arr.size), "values": [float(v) for v in arr]}


def paired_difference(values: Sequence[Any], reference: Sequence[Any], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Mean of value - reference over the seeds both have, its paired t interval, and whether
    the interval excludes zero (only with at least two seeds)."""
    pairs = [
        (float(a), float(b))
        for a, b in zip(values, reference)
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in (a, b))
    ]
    block = mean_ci([a - b for a, b in pairs], confidence)
    block["excludes_zero"] = bool(block["n"] > 1 and abs(block["mean"]) > block["ci95"])
    return block


def numeric_leaves(obj: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], float]:
    """Every number in a nested dict, by its path (booleans and lists are not figures)."""
    out: dict[tuple[str, ...], float] = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            out.update(numeric_leaves(value, (*prefix, str(key))))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix] = obj
    return out


def nest(flat: dict[tuple[str, ...], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in flat.items():
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


def over_seeds(per_seed: Sequence[dict[str, Any]], keep: Callable[[tuple[str, ...]], bool] = lambda path: True) -> dict[str, Any]:
    """The nested figures of several seeds as one nested dict of `mean_ci` blocks (a path
    missing in a seed counts as missing there)."""
    leaves = [numeric_leaves(d) for d in per_seed]
    paths = sorted({p for leaf in leaves for p in leaf if keep(p)})
    return nest({p: mean_ci([leaf.get(p) for leaf in leaves]) for p in paths})


def paired_over_seeds(
    per_seed: Sequence[dict[str, Any]], reference: Sequence[dict[str, Any]], keep: Callable[[tuple[str, ...]], bool]
) -> dict[str, Any]:
    """`paired_difference` of every kept figure; `per_seed` and `reference` aligned by seed."""
    mine, theirs = [numeric_leaves(d) for d in per_seed], [numeric_leaves(d) for d in reference]
    paths = sorted({p for leaf in mine for p in leaf if keep(p)} & {p for leaf in theirs for p in leaf})
    return nest({p: paired_difference([m.get(p) for m in mine], [t.get(p) for t in theirs]) for p in paths})
