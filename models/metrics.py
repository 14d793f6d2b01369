"""Ranking metrics for the "1 held-out positive vs sampled negatives" protocol.

Every scorer hands us a matrix `scores[U, 1 + n_neg]` with the held-out positive in column 0.
Ties count against the model: a negative scored equal to the positive ranks above it, so a
model that returns a constant scores HR@k = 0 (for k <= n_neg) instead of a lucky 1.
"""

from __future__ import annotations

import numpy as np

METRIC_NAMES = ("HR", "NDCG", "MRR", "AUC")


def _check_scores(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(
            f"scores must have shape [users, 1 + n_negatives] with the positive in column 0 "
            f"and at least one negative; got shape {scores.shape}"
        )
    if not np.issubdtype(scores.dtype, np.number):
        raise TypeError(f"scores must be numeric, got dtype {scores.dtype}")
    if np.isnan(scores).any():
        bad = int(np.isnan(scores).any(axis=1).sum())
        raise ValueError(f"scores contain NaN for {bad} user(s); a scorer must return finite values")
    return scores


def rank_of_positive(scores: np.ndarray) -> np.ndarray:
    """0-based rank of the positive: the number of negatives scored >= the positive (int64 [U])."""
    scores = _check_scores(scores)
    return (scores[:, 1:] >= scores[:, :1]).sum(axis=1).astype(np.int64)


def per_user_ranking_metrics(scores: np.ndarray, k: int = 10) -> dict[str, np.ndarray]:
    """Per-user HR@k, NDCG@k, MRR@k and AUC (float64 arrays [U]), e.g. for confidence intervals.

    AUC is the fraction of negatives scored strictly below the positive (ties count against).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    scores = _check_scores(scores)
    rank = rank_of_positive(scores)
    hit = rank < k
    return {
        f"HR@{k}": hit.astype(np.float64),
        f"NDCG@{k}": np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0),
        f"MRR@{k}": np.where(hit, 1.0 / (rank + 1.0), 0.0),
        "AUC": (scores[:, 1:] < scores[:, :1]).mean(axis=1, dtype=np.float64),
    }


def ranking_metrics(scores: np.ndarray, k: int = 10) -> dict[str, float]:
    """Means over users of `per_user_ranking_metrics` (keys 'HR@10', 'NDCG@10', 'MRR@10', 'AUC')."""
    per_user = per_user_ranking_metrics(scores, k)
    if next(iter(per_user.values())).size == 0:
        raise ValueError("no users to evaluate: scores has zero rows")
    return {name: float(values.mean()) for name, values in per_user.items()}


def popularity_scores(pop: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The non-learned floor: score each candidate by its training popularity.

    No random tie-breaking: equally popular negatives tie with the positive and, through
    `rank_of_positive`, count against it.
    """
    pop = np.asarray(pop)
    items = np.asarray(items)
    if pop.ndim != 1:
        raise ValueError(f"pop must be a 1-D count per item, got shape {pop.shape}")
    if items.size and (items.min() < 0 or items.max() >= pop.shape[0]):
        raise ValueError(
            f"candidate item ids must lie in [0, {pop.shape[0]}); got range "
            f"[{items.min()}, {items.max()}] (did unevaluated users' -1 rows slip in? use "
            f"RankingData.candidates())"
        )
    return pop[items].astype(np.float64)
