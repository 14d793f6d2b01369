"""Attack metrics: attribute inference (classification) and membership inference (ROC at low FPR).

Conventions:
- Attribute metrics take class probabilities, so that AUC is computed from continuous scores.
  The hard predictions behind balanced accuracy, F1 and accuracy are passed as `y_pred` (an
  attacker's rule chosen on its training users, attacks/decision.py); without them they are
  the arg-max (ties go to the lowest class index).
- Weighted precision/recall/F1 are reported because the papers report them; they flatter a
  majority-class guesser, so balanced accuracy and AUC are the figures to read first.
- Membership metrics follow Carlini et al. (2022): ROC-AUC plus TPR at fixed low FPR, with an
  explicit flag when the number of non-members is too small to resolve that FPR.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

DEFAULT_FPR_LEVELS: tuple[float, ...] = (0.05, 0.01, 0.001)

# What the papers call their metric, so that reports can label the figure honestly.
PAPER_METRIC_NOTE = (
    "weighted_precision/recall/f1 are the papers' metrics (support-weighted); they reward the "
    "majority-class guess, compare balanced_accuracy and auc instead"
)


def _as_labels(y: np.ndarray, n_classes: int, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array of class indices, got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError(f"{what} must hold integer class indices 0..{n_classes - 1}; encode labels first")
        y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(
            f"{what} holds class indices outside 0..{n_classes - 1} (min {y.min()}, max {y.max()}); "
            f"pass the right n_classes or encode the labels"
        )
    return y.astype(np.int64)


def roc_auc_ovr(y_true: np.ndarray, proba: np.ndarray) -> float:
    """ROC-AUC of class probabilities: binary AUC of column 1 for two classes, else
    one-vs-rest macro over the classes that are present in `y_true` (a class missing from
    the test set has no positives, so it is skipped instead of failing). NaN when no class
    has both positives and negatives."""
    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype=np.float64)
    n_classes = proba.shape[1]
    if n_classes == 2:
        if np.unique(y_true).size < 2:
            return float("nan")
        return float(roc_auc_score(y_true == 1, proba[:, 1]))
    aucs = []
    for k in range(n_classes):
        positives = y_true == k
        if positives.all() or not positives.any():
            continue
        aucs.append(roc_auc_score(positives, proba[:, k]))
    return float(np.mean(aucs)) if aucs else float("nan")


def classification_metrics(
    y_true: np.ndarray, proba: np.ndarray, n_classes: int | None = None, *, y_pred: np.ndarray | None = None
) -> dict:
    """Metrics of an attribute attacker from its class probabilities [n, K] on the test users.

    Keys: auc (binary, or one-vs-rest macro; from `proba`), balanced_accuracy, macro_f1,
    accuracy, weighted_precision, weighted_recall, weighted_f1 (the papers' metrics; from
    `y_pred`, default the arg-max of `proba`), n.
    """
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2:
        raise ValueError(f"proba must be [n_users, n_classes], got shape {proba.shape}")
    if n_classes is None:
        n_classes = proba.shape[1]
    if proba.shape[1] != n_classes:
        raise ValueError(f"proba has {proba.shape[1]} columns but n_classes={n_classes}")
    y_true = _as_labels(y_true, n_classes, "y_true")
    if y_true.shape[0] != proba.shape[0]:
        raise ValueError(f"y_true has {y_true.shape[0]} labels but proba has {proba.shape[0]} rows")
    if y_true.size == 0:
        raise ValueError("no test users: cannot evaluate an attacker on an empty set")
    if y_pred is None:
        y_pred = proba.argmax(axis=1)
    y_pred = _as_labels(np.asarray(y_pred).reshape(-1), n_classes, "y_pred")
    if y_pred.shape != y_true.shape:
        raise ValueError(f"y_pred has {y_pred.size} predictions but y_true has {y_true.size} labels")
    with warnings.catch_warnings():
        # balanced accuracy warns when predictions use a class absent from y_true; expected.
        warnings.simplefilter("ignore", UserWarning)
        bacc = balanced_accuracy_score(y_true, y_pred)
    prec, rec, f1w, _ = precision_recall_fscore_support(y_true, y_pred, average="weighted", zero_division=0)
    return {
        "auc": roc_auc_ovr(y_true, proba),
        "balanced_accuracy": float(bacc),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "weighted_precision": float(prec),
        "weighted_recall": float(rec),
        "weighted_f1": float(f1w),
        "n": int(y_true.size),
    }


# ------------------------------------------------------------------------------ membership
def _check_membership(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    is_member = np.asarray(is_member).reshape(-1).astype(bool)
    if scores.shape != is_member.shape:
        raise ValueError(f"scores ({scores.size}) and is_member ({is_member.size}) differ in length")
    if not np.all(np.isfinite(scores)):
        raise ValueError("membership scores contain NaN or inf; give every user a finite score")
    n_pos = int(is_member.sum())
    if n_pos == 0 or n_pos == is_member.size:
        raise ValueError(f"membership evaluation needs both members and non-members, got {n_pos} members of {is_member.size}")
    return scores, is_member


def roc_points(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) of 'member if score >= threshold', every threshold kept."""
    scores, is_member = _check_membership(scores, is_member)
    return roc_curve(is_member, scores, drop_intermediate=False)


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, level: float) -> float:
    """TPR at FPR = `level`, linearly interpolated on the ROC.

    At an FPR where the ROC jumps vertically (tied scores) the highest TPR is taken (it is
    reachable at that FPR); between ROC points linear interpolation is the TPR of a randomised
    mix of the two neighbouring thresholds, so the figure is achievable."""
    ufpr, inverse = np.unique(fpr, return_inverse=True)
    best = np.full(ufpr.shape, -np.inf)
    np.maximum.at(best, inverse, tpr)
    return float(np.interp(level, ufpr, best))


def best_threshold(scores: np.ndarray, is_member: np.ndarray) -> float:
    """The threshold maximising TPR - FPR ('member if score >= t'), to be chosen on training."""
    fpr, tpr, thresholds = roc_points(scores, is_member)
    return float(thresholds[int(np.argmax(tpr - fpr))])


def _level_key(level: float) -> str:
    return f"{level:g}"


def membership_metrics(
    scores: np.ndarray,
    is_member: np.ndarray,
    *,
    threshold: float | None = None,
    fpr_levels: Sequence[float] = DEFAULT_FPR_LEVELS,
) -> dict:
    """Membership-inference metrics from continuous scores (higher = more likely a member).

    - auc: ROC-AUC.
    - tpr_at_fpr[level]: TPR at that FPR (interpolated); limited_by_sample_size[level] is True
      when 1 / n_nonmembers > level, i.e. not even one false positive fits in that budget.
    - advantage: max |TPR - FPR| over all thresholds.
    - paper_single_threshold_auc: (1 + TPR - FPR) / 2 at one threshold, what the
      MIA-against-recommenders paper calls "AUC" (a balanced accuracy). Pass the `threshold`
      chosen on the attacker's training data; without one it is chosen on these scores
      (optimistic) and `threshold_source` says so.
    """
    scores, is_member = _check_membership(scores, is_member)
    fpr, tpr, thresholds = roc_curve(is_member, scores, drop_intermediate=False)
    n_neg = int((~is_member).sum())
    source = "training"
    if threshold is None:
        threshold = float(thresholds[int(np.argmax(tpr - fpr))])
        source = "evaluation data (optimistic)"
    predicted = scores >= threshold
    t_tpr = float(predicted[is_member].mean())
    t_fpr = float(predicted[~is_member].mean())
    return {
        "auc": float(roc_auc_score(is_member, scores)),
        "tpr_at_fpr": {_level_key(a): tpr_at_fpr(fpr, tpr, a) for a in fpr_levels},
        "limited_by_sample_size": {_level_key(a): bool(1.0 / n_neg > a) for a in fpr_levels},
        "advantage": float(np.max(np.abs(tpr - fpr))),
        "paper_single_threshold_auc": (1.0 + t_tpr - t_fpr) / 2.0,
        "threshold": float(threshold) if math.isfinite(threshold) else None,
        "threshold_source": source,
        "threshold_tpr": t_tpr,
        "threshold_fpr": t_fpr,
        "n_members": int(is_member.sum()),
        "n_nonmembers": n_neg,
    }
