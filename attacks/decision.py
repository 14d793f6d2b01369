"""Decision rules: how an attribute attacker turns class probabilities into one guess per user.

AUC needs no rule; balanced accuracy, F1 and accuracy do. The arg-max of the probabilities
guesses the majority class whenever the signal is weak (with 71% men, "male" for everyone:
balanced accuracy exactly 0.500), which says nothing about the artifact. So the rule is chosen
as an attacker would choose it: on out-of-fold probabilities of its own training (public)
users, maximising balanced accuracy.

- Two classes: "class 1 if P(class 1) >= threshold".
- More classes: the arg-max of P(k) * prior_k^-alpha, prior = training class frequencies.
  alpha = 0 is the plain arg-max, alpha = 1 the full prior correction (the balanced-accuracy
  Bayes rule for calibrated probabilities); one parameter, so little to overfit with 3 classes.

Ties between equally good rules go to the more accurate one (so the no-artifact attacker,
whose every rule is at chance, guesses the majority class as the papers' prior guesser does),
then to the one nearest that Bayes rule (threshold = prior of class 1, alpha = 1).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from .jsonable import json_safe

ALPHA_GRID: tuple[float, ...] = tuple(np.round(np.linspace(0.0, 2.0, 21), 2))
BINARY_RULE = "class 1 if P(class 1) >= threshold"
MULTICLASS_RULE = "argmax_k P(k) * class_weights[k], class_weights = training prior ** -alpha"
ARGMAX_RULE = "argmax_k P(k) (ties to the lowest class)"


@dataclass(frozen=True)
class Decision:
    """A rule from class probabilities [n, K] to class indices, and how it was chosen."""

    rule: str = ARGMAX_RULE
    threshold: float | None = None
    alpha: float | None = None
    class_weights: tuple[float, ...] | None = None
    chosen_by: str = "fixed"
    cv_balanced_accuracy: float | None = None

    def predict(self, proba: np.ndarray) -> np.ndarray:
        proba = np.asarray(proba, dtype=np.float64)
        if self.threshold is not None:
            return (proba[:, 1] >= self.threshold).astype(np.int64)
        if self.class_weights is not None:
            return np.argmax(proba * np.asarray(self.class_weights), axis=1).astype(np.int64)
        return np.argmax(proba, axis=1).astype(np.int64)

    def to_dict(self) -> dict:
        out = {"rule": self.rule, "chosen_by": self.chosen_by}
        if self.threshold is not None:
            out["threshold"] = self.threshold
        if self.alpha is not None:
            out["alpha"] = self.alpha
            out["class_weights"] = list(self.class_weights or ())
        if self.cv_balanced_accuracy is not None:
            out["cv_balanced_accuracy"] = self.cv_balanced_accuracy
        return json_safe(out)


ARGMAX = Decision(chosen_by="fixed (no training users to choose a rule on)")


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    with warnings.catch_warnings():
        # a predicted class absent from y only triggers a warning; the score is still right.
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(y, pred))


def _pick(ba: np.ndarray, accuracy: np.ndarray, distance: np.ndarray) -> int:
    """Index of the highest balanced accuracy; ties to higher accuracy, then smaller distance."""
    tol = 1e-12  # equal up to rounding
    best = np.flatnonzero(ba >= ba.max() - tol)
    best = best[accuracy[best] >= accuracy[best].max() - tol]
    return int(best[np.argmin(distance[best])])


def _choose_threshold(y: np.ndarray, p1: np.ndarray, prior1: float, chosen_by: str) -> Decision:
    # Every distinct split of the sorted scores: below all, between neighbours, above all.
    u = np.unique(p1)
    cuts = np.r_[0.0, (u[:-1] + u[1:]) / 2.0, np.nextafter(max(1.0, u[-1]), np.inf)]
    pos, neg = np.sort(p1[y == 1]), np.sort(p1[y != 1])
    tpr = 1.0 - np.searchsorted(pos, cuts, side="left") / pos.size
    tnr = np.searchsorted(neg, cuts, side="left") / neg.size
    ba = (tpr + tnr) / 2.0
    accuracy = (tpr * pos.size + tnr * neg.size) / y.size
    pick = _pick(ba, accuracy, np.abs(cuts - prior1))
    return Decision(BINARY_RULE, threshold=float(cuts[pick]), chosen_by=chosen_by, cv_balanced_accuracy=float(ba[pick]))


def _choose_alpha(y: np.ndarray, proba: np.ndarray, prior: np.ndarray, chosen_by: str) -> Decision:
    seen = prior > 0  # a class never seen in training keeps weight 0: never guessed
    weights, ba, accuracy = [], [], []
    for alpha in ALPHA_GRID:
        w = np.where(seen, np.power(np.where(seen, prior, 1.0), -alpha), 0.0)
        w = w / w[seen].max()
        pred = np.argmax(proba * w, axis=1)
        weights.append(w)
        ba.append(_balanced_accuracy(y, pred))
        accuracy.append(float(np.mean(pred == y)))
    alphas = np.asarray(ALPHA_GRID)
    pick = _pick(np.asarray(ba), np.asarray(accuracy), np.abs(alphas - 1.0))
    return Decision(
        MULTICLASS_RULE,
        alpha=float(alphas[pick]),
        class_weights=tuple(float(v) for v in weights[pick]),
        chosen_by=chosen_by,
        cv_balanced_accuracy=float(ba[pick]),
    )


def choose_decision(y: np.ndarray, oof_proba: np.ndarray, prior: np.ndarray, chosen_by: str) -> Decision:
    """The rule maximising balanced accuracy of out-of-fold probabilities `oof_proba` [n, K]
    against the training labels `y` (class indices); `prior` is the training class frequency.
    `chosen_by` says how the probabilities were obtained (e.g. '3-fold CV on public users')."""
    y = np.asarray(y, dtype=np.int64)
    oof_proba = np.asarray(oof_proba, dtype=np.float64)
    prior = np.asarray(prior, dtype=np.float64)
    if oof_proba.shape[1] == 2:
        return _choose_threshold(y, oof_proba[:, 1], float(prior[1]), chosen_by)
    return _choose_alpha(y, oof_proba, prior, chosen_by)
