"""Membership inference: was this user in the target model's training data?

Two attacks on per-user feature vectors, both trained on the attacker's shadow data
(features_train, member_train) and evaluated on the target's users (features_test, member_test):

- "learned": the MIA-against-recommenders paper's (Zhang et al., CCS 2021) attack model, an MLP
  with hidden layers 32 and 8 and a two-class output, here sklearn's MLPClassifier on
  standardised features. Its single threshold is chosen on out-of-fold training scores.
- "threshold": the strongest single statistic (one feature column or the feature vector's L2
  norm), picked and oriented by its ROC-AUC on the training data, thresholded where TPR - FPR is
  largest on the training data.

Both report `membership_metrics` (ROC-AUC, TPR at low FPR, advantage, and the paper's
single-threshold balanced accuracy), next to the attacker without an artifact (a constant
score: AUC 0.5, TPR = FPR).

`centroid_difference_features` builds the paper's per-user feature from interactions and
recommendation lists.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from .metrics import best_threshold, membership_metrics

__all__ = [
    "centroid_difference_features",
    "membership_inference",
    "membership_metrics",
]

_OOF_FOLDS = 3


def _learned_model(seed: int, n_train: int):
    # L-BFGS: on a few hundred to a few thousand users it converges where Adam with early
    # stopping halted on a noisy hold-out (see attacks.attackers.make_attacker).
    return make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=(32, 8), solver="lbfgs", alpha=1.0, max_iter=300, random_state=seed),
    )


def _fit_scores(model, X: np.ndarray, y: np.ndarray, X_eval: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
        proba = model.predict_proba(X_eval)
    return proba[:, list(model.classes_).index(True)]


def _oof_scores(X: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Out-of-fold member scores of the learned attack on its own training data."""
    n_splits = max(2, min(_OOF_FOLDS, int(y.sum()), int((~y).sum())))
    scores = np.zeros(y.size)
    for fit_idx, val_idx in StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(X, y):
        scores[val_idx] = _fit_scores(_learned_model(seed, fit_idx.size), X[fit_idx], y[fit_idx], X[val_idx])
    return scores


def _statistics(X: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Candidate scalar statistics of the threshold attack: each column and the L2 norm."""
    names = [f"feature {j}" for j in range(X.shape[1])]
    stats = X
    if X.shape[1] > 1:
        stats = np.column_stack([X, np.linalg.norm(X, axis=1)])
        names.append("l2_norm")
    return stats, names


def _as_2d(X: np.ndarray, what: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X.reshape(-1, 1)
    elif X.ndim > 2:
        X = X.reshape(X.shape[0], -1)
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{what} contains NaN or inf; give every user finite features")
    return X


def membership_inference(
    features_train: np.ndarray,
    member_train: np.ndarray,
    features_test: np.ndarray,
    member_test: np.ndarray,
    *,
    seed: int = 0,
    fpr_levels: Sequence[float] = (0.05, 0.01, 0.001),
) -> dict:
    """Learned and threshold membership attacks; JSON-able dict
    {"learned": metrics, "threshold": metrics, "baseline": metrics, "best": name,
     "selection": ..., "n_train", "n_test"}. `best` is chosen on the training data only
    (out-of-fold AUC for the learned attack, training AUC for the threshold attack)."""
    Xtr, Xte = _as_2d(features_train, "features_train"), _as_2d(features_test, "features_test")
    ytr = np.asarray(member_train).reshape(-1).astype(bool)
    yte = np.asarray(member_test).reshape(-1).astype(bool)
    if Xtr.shape[0] != ytr.size or Xte.shape[0] != yte.size:
        raise ValueError(
            f"features and membership labels differ in length: train {Xtr.shape[0]} vs {ytr.size}, test {Xte.shape[0]} vs {yte.size}"
        )
    if Xtr.shape[1] != Xte.shape[1]:
        raise ValueError(f"features_train has {Xtr.shape[1]} columns but features_test has {Xte.shape[1]}")
    if Xtr.shape[1] == 0:
        raise ValueError("no features: a membership attacker without an artifact is the baseline only")
    if ytr.all() or not ytr.any():
        raise ValueError(f"the attacker's training data needs members and non-members, got {int(ytr.sum())} of {ytr.size}")

    # Learned attack (paper 004): threshold from out-of-fold scores, final model on all training users.
    with threadpool_limits(limits=1):  # see attacks.attribute: avoids oversubscription
        oof = _oof_scores(Xtr, ytr, seed)
        learned_scores = _fit_scores(_learned_model(seed, ytr.size), Xtr, ytr, Xte)
    learned_threshold = best_threshold(oof, ytr)
    learned = membership_metrics(learned_scores, yte, threshold=learned_threshold, fpr_levels=fpr_levels)
    learned["train_auc_oof"] = float(roc_auc_score(ytr, oof))
    learned["model"] = "MLPClassifier(32, 8) on standardised features"

    # Threshold attack: pick and orient the strongest statistic on training data.
    stats_tr, names = _statistics(Xtr)
    aucs = np.array([roc_auc_score(ytr, stats_tr[:, j]) for j in range(stats_tr.shape[1])])
    j = int(np.argmax(np.abs(aucs - 0.5)))
    sign = 1.0 if aucs[j] >= 0.5 else -1.0
    stats_te, _ = _statistics(Xte)
    thr = best_threshold(sign * stats_tr[:, j], ytr)
    threshold = membership_metrics(sign * stats_te[:, j], yte, threshold=thr, fpr_levels=fpr_levels)
    threshold["train_auc"] = float(max(aucs[j], 1 - aucs[j]))
    threshold["statistic"] = names[j]
    threshold["orientation"] = "higher = member" if sign > 0 else "lower = member"

    # The attacker without an artifact: one constant score for everyone.
    baseline = membership_metrics(np.zeros(yte.size), yte, threshold=0.0, fpr_levels=fpr_levels)

    best = "learned" if learned["train_auc_oof"] >= threshold["train_auc"] else "threshold"
    return {
        "learned": learned,
        "threshold": threshold,
        "baseline": baseline,
        "best": best,
        "selection": "best by ROC-AUC on the attacker's training data (out-of-fold for the learned attack)",
        "n_train": int(ytr.size),
        "n_test": int(yte.size),
    }


def centroid_difference_features(user_items: list[np.ndarray], recommended: np.ndarray, item_vectors: np.ndarray) -> np.ndarray:
    """Paper 004's per-user feature: the mean vector of the user's interacted items minus the
    rank-weighted mean vector of the user's top-k recommended items, rank j (1-based) weighted
    (k - j + 1) / sum_{j'} (k - j' + 1).

    A user with no interactions gets a zero interaction centroid. Negative entries in
    `recommended` are padding (a list shorter than k): they are skipped and the weights of the
    remaining ranks renormalised. Returns float32 [n_users, dim].
    """
    item_vectors = np.asarray(item_vectors, dtype=np.float64)
    if item_vectors.ndim != 2:
        raise ValueError(f"item_vectors must be [n_items, dim], got shape {item_vectors.shape}")
    n_items, dim = item_vectors.shape
    recommended = np.asarray(recommended)
    if recommended.ndim != 2 or not np.issubdtype(recommended.dtype, np.integer):
        raise ValueError(f"recommended must be an integer array [n_users, k], got {recommended.dtype} {recommended.shape}")
    n_users, k = recommended.shape
    if len(user_items) != n_users:
        raise ValueError(f"user_items has {len(user_items)} users but recommended has {n_users}")
    if recommended.size and recommended.max() >= n_items:
        raise ValueError(f"recommended holds item {recommended.max()} but item_vectors has only {n_items} items")

    # Interaction centroids, vectorised with reduceat over the concatenated item lists.
    lengths = np.array([np.asarray(items).size for items in user_items], dtype=np.int64)
    flat = (
        np.concatenate([np.asarray(items, dtype=np.int64).reshape(-1) for items in user_items])
        if lengths.sum()
        else np.zeros(0, dtype=np.int64)
    )
    if flat.size and (flat.min() < 0 or flat.max() >= n_items):
        raise ValueError(f"user_items holds item ids outside 0..{n_items - 1}")
    centroid = np.zeros((n_users, dim))
    nonempty = lengths > 0
    if flat.size:
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])[nonempty]
        sums = np.add.reduceat(item_vectors[flat], starts, axis=0)
        centroid[nonempty] = sums / lengths[nonempty, None]

    # Rank-weighted recommendation centroid.
    weights = np.tile(np.arange(k, 0, -1, dtype=np.float64), (n_users, 1))
    valid = recommended >= 0
    weights = np.where(valid, weights, 0.0)
    totals = weights.sum(axis=1, keepdims=True)
    weights = np.divide(weights, totals, out=np.zeros_like(weights), where=totals > 0)
    rec_vectors = item_vectors[np.where(valid, recommended, 0)]  # [U, k, dim]
    rec_centroid = np.einsum("uk,ukd->ud", weights, rec_vectors)
    return (centroid - rec_centroid).astype(np.float32)
