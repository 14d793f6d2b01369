"""Attribute inference: predict a private attribute (gender, age group) from per-user features.

Threat model (IBM ART's "black-box attribute inference" in spirit): the attacker knows the
attribute of some public users, trains classifiers on their features, and predicts it for the
private users. Several attacker families are tried because linear defenses only stop linear
attackers; the one reported as "best" is chosen by cross-validated ROC-AUC on the training
(public) users only, never on the test users. Each attacker's hard guesses (behind balanced
accuracy, F1, accuracy) follow a decision rule chosen on its out-of-fold training probabilities
(attacks/decision.py), not the arg-max, which guesses the majority class when the signal is
weak. Every result comes with the same evaluation of an attacker that has no artifact (it
predicts the training class prior for everyone; its balanced accuracy stays at chance).
Several releases of one artifact: attacks/releases.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import v_measure_score
from threadpoolctl import threadpool_limits

from .attackers import ATTACKERS, CV_FOLDS, PRIOR, AttackerRun, check_attackers, cv_folds, make_attacker, run_attacker
from .decision import Decision
from .jsonable import json_safe
from .metrics import PAPER_METRIC_NOTE, classification_metrics

# make_attacker lives in attacks.attackers; re-exported for callers of the old location.
__all__ = ["ATTACKERS", "AttributeResult", "attribute_inference", "kmeans_vmeasure", "make_attacker"]


@dataclass
class AttributeResult:
    """`metrics` are the best attacker's figures on the test users (best by CV ROC-AUC on the
    training users), `baseline` the no-artifact attacker's, `attackers` every attacker's.
    Hard-decision figures (balanced accuracy, F1, ...) use each attacker's decision rule,
    chosen on its out-of-fold training probabilities (`decisions`, `baseline_decision`)."""

    best: str
    metrics: dict
    baseline: dict
    attackers: dict[str, dict]
    cv_auc: dict[str, float]
    n_train: int
    n_test: int
    classes: list = field(default_factory=list)
    # Per-test-user class probabilities of the best attacker (per-user risk scores); not in to_dict.
    test_proba: np.ndarray | None = field(default=None, repr=False)
    decisions: dict[str, Decision] = field(default_factory=dict)
    baseline_decision: Decision | None = None
    # Everything each attacker computed (out-of-fold and test probabilities, test guesses); not in to_dict.
    runs: dict[str, AttackerRun] = field(default_factory=dict, repr=False)
    baseline_run: AttackerRun | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """JSON-able (NaN becomes null)."""
        return json_safe(
            {
                "best": self.best,
                "metrics": self.metrics,
                "baseline": self.baseline,
                "attackers": self.attackers,
                "cv_auc": self.cv_auc,
                "decision": self.decisions[self.best].to_dict() if self.best in self.decisions else None,
                "decisions": {name: d.to_dict() for name, d in self.decisions.items()},
                "baseline_decision": self.baseline_decision.to_dict() if self.baseline_decision else None,
                "n_train": self.n_train,
                "n_test": self.n_test,
                "classes": self.classes,
                "selection": f"best by {CV_FOLDS}-fold stratified CV ROC-AUC on the training users only",
                "note": PAPER_METRIC_NOTE,
            }
        )


def best_by_cv(runs: dict[str, AttackerRun], order: Sequence[str]) -> str:
    """Highest CV AUC wins; ties (and NaN) go to the earlier attacker in `order`."""
    return max(order, key=lambda a: (-math.inf if math.isnan(runs[a].cv_auc) else runs[a].cv_auc, -list(order).index(a)))


def scored(run: AttackerRun, y_test: np.ndarray, n_classes: int) -> dict:
    """One run's figures on the test users, plus `accuracy_argmax`: the accuracy of the arg-max
    guess (the papers' figure, read next to the majority class's share, which is the
    no-artifact attacker's `accuracy_argmax`); every other hard figure uses the run's rule."""
    metrics = classification_metrics(y_test, run.test_proba, n_classes, y_pred=run.test_pred)
    metrics["accuracy_argmax"] = float(np.mean(np.argmax(run.test_proba, axis=1) == y_test))
    return metrics


def result_from_runs(
    runs: dict[str, AttackerRun], baseline_run: AttackerRun, y_test: np.ndarray, n_classes: int, classes: list, n_train: int
) -> AttributeResult:
    """Score each run on the test users (the only place test labels are read) and pick the best by CV."""
    results = {name: scored(run, y_test, n_classes) for name, run in runs.items()}
    best = best_by_cv(runs, list(runs))
    return AttributeResult(
        best=best,
        metrics=dict(results[best]),
        baseline=scored(baseline_run, y_test, n_classes),
        attackers=results,
        cv_auc={name: run.cv_auc for name, run in runs.items()},
        n_train=n_train,
        n_test=int(y_test.size),
        classes=classes,
        test_proba=runs[best].test_proba,
        decisions={name: run.decision for name, run in runs.items()},
        baseline_decision=baseline_run.decision,
        runs=runs,
        baseline_run=baseline_run,
    )


def encode_labels(y_train: np.ndarray, y_test: np.ndarray, n_classes: int | None) -> tuple[np.ndarray, np.ndarray, int, list]:
    y_train, y_test = np.asarray(y_train).reshape(-1), np.asarray(y_test).reshape(-1)
    if n_classes is not None:
        for what, y in (("y_train", y_train), ("y_test", y_test)):
            if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes):
                raise ValueError(f"{what} must hold integer class indices 0..{n_classes - 1} when n_classes is given")
        return y_train.astype(np.int64), y_test.astype(np.int64), int(n_classes), list(range(n_classes))
    # The label set (not the labels' values per user) is all that is taken from the test side.
    classes, codes = np.unique(np.concatenate([y_train, y_test]), return_inverse=True)
    codes = codes.reshape(-1)
    return codes[: y_train.size], codes[y_train.size :], int(classes.size), classes.tolist()


def as_features(X: np.ndarray, what: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X.reshape(-1, 1)
    if X.ndim != 2:
        X = X.reshape(X.shape[0], -1)
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{what} contains NaN or inf; impute or drop those users before attacking")
    return X


def attribute_inference(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    *,
    attackers: Sequence[str] = ATTACKERS,
    seed: int = 0,
    n_classes: int | None = None,
) -> AttributeResult:
    """Train each attacker on the public users (X_train, y_train), test on the private users.

    Labels are class indices 0..n_classes-1 when `n_classes` is given, otherwise any values
    (encoded in sorted order). With zero feature columns (e.g. nothing decodable on a secure
    channel) every attacker is the prior attacker.
    """
    X_train, X_test = as_features(X_train, "X_train"), as_features(X_test, "X_test")
    if X_train.shape[1] != X_test.shape[1]:
        raise ValueError(f"X_train has {X_train.shape[1]} features but X_test has {X_test.shape[1]}")
    if X_train.shape[0] != np.asarray(y_train).size or X_test.shape[0] != np.asarray(y_test).size:
        raise ValueError(
            f"features and labels differ in length: X_train {X_train.shape[0]} vs y_train "
            f"{np.asarray(y_train).size}, X_test {X_test.shape[0]} vs y_test {np.asarray(y_test).size}"
        )
    check_attackers(attackers)
    ytr, yte, K, classes = encode_labels(y_train, y_test, n_classes)
    if np.unique(ytr).size < 2:
        raise ValueError(
            f"the public (training) users all have the same label ({classes[int(ytr[0])] if ytr.size else 'none'}); "
            "an attacker needs at least two classes: use more public users"
        )

    folds = cv_folds(ytr, seed)
    # One thread for BLAS/OpenMP while attacking: with other work on the machine, OpenMP's
    # spinning threads made gradient boosting ~10x slower (measured); results are unchanged.
    with threadpool_limits(limits=1):
        baseline_run = run_attacker(PRIOR, X_train, ytr, X_test, K, seed=seed, folds=folds)
        runs: dict[str, AttackerRun] = {}
        for name in attackers:
            if X_train.shape[1] == 0:  # nothing to learn from: the attacker is the prior attacker
                runs[name] = replace(baseline_run, name=name)
            else:
                runs[name] = run_attacker(name, X_train, ytr, X_test, K, seed=seed, folds=folds)
    return result_from_runs(runs, baseline_run, yte, K, classes, int(ytr.size))


def kmeans_vmeasure(X: np.ndarray, y: np.ndarray, k: int = 2, seed: int = 0) -> float:
    """PrivNet's clustering check (§5.5.1): k-means on the representations, V-measure of the
    clusters against the private attribute (0 = clusters say nothing about it)."""
    X = as_features(X, "X")
    y = np.asarray(y).reshape(-1)
    if X.shape[0] != y.size:
        raise ValueError(f"X has {X.shape[0]} rows but y has {y.size} labels")
    if X.shape[0] < k:
        raise ValueError(f"k-means with k={k} needs at least {k} users, got {X.shape[0]}")
    with threadpool_limits(limits=1):
        labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(X)
    return float(v_measure_score(y, labels))
