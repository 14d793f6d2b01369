"""The attribute attacker families and how one of them is trained and evaluated.

`ATTACKERS` is cdrsim's default battery (the best of it, chosen by CV, is cdrsim's best-of
attacker). `PAPER_BATTERY` holds the classifiers the privacy-adversarial BPR paper checks its
user vectors with (its Table 1: a readout of the training readout's form, linear SVMs with
C = 0.1, 1, 10, an RBF SVM, a decision tree, a random forest, gradient boosting); a scenario
asks for them by name (`AttributeAttack(attackers=...)`). `FAMILIES` is every name known.

`run_attacker` is the whole protocol for one attacker on one feature matrix: out-of-fold
probabilities on the training (public) users give its CV ROC-AUC (used to choose between
attackers) and its decision rule (attacks/decision.py); then one model fitted on all training
users gives the test (private) users' probabilities and guesses. Nothing here sees a test
label, so the test users only ever enter as features to predict.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from .decision import Decision, choose_decision
from .metrics import roc_auc_ovr

ATTACKERS: tuple[str, ...] = ("lr", "mlp", "gb")
PAPER_BATTERY: tuple[str, ...] = (
    "readout",
    "svm-linear-C0.1",
    "svm-linear-C1",
    "svm-linear-C10",
    "svm-rbf",
    "tree",
    "forest",
    "gradient-boosting",
)
FAMILIES: tuple[str, ...] = ATTACKERS + PAPER_BATTERY
# The attacker without an artifact: it predicts the training class prior for everyone.
PRIOR = "prior"
CV_FOLDS = 3  # 3 folds select as well as 5 here and keep a 9-variant run within minutes
# Below this many training users an early-stopping hold-out would be too small to help.
_MIN_USERS_FOR_EARLY_STOPPING = 100

Folds = list[tuple[np.ndarray, np.ndarray]]


def make_attacker(name: str, seed: int = 0, n_train: int = 1000, min_class_count: int = 2) -> ClassifierMixin:
    """A fresh, unfitted attacker: 'lr' (standardised logistic regression), 'mlp' (small
    standardised MLP, L-BFGS), 'gb' (histogram gradient boosting with early stopping), one of
    the paper's battery (`paper_attacker`) or 'prior' (the no-artifact attacker: the training
    class frequencies). `n_train` and `min_class_count` (users of the rarest class present)
    describe the training set: gb's stratified early-stopping hold-out needs 2 of each class."""
    if name == "lr":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    if name == "mlp":
        # L-BFGS with a strong L2 penalty: at a few hundred users Adam with early stopping
        # stopped on a noisy 10% hold-out and stayed at chance (CV AUC 0.49 on a planted linear
        # signal, measured), L-BFGS reached 0.63 there and 0.8+ on an XOR signal LR cannot see.
        return make_pipeline(
            StandardScaler(),
            MLPClassifier(hidden_layer_sizes=(32,), solver="lbfgs", alpha=5.0, max_iter=200, random_state=seed),
        )
    if name == "gb":
        # Small trees, 63 bins and half the features per split: ~3x faster than the defaults
        # at ml-100k sizes with the same CV AUC (measured), which matters for K-class targets.
        return HistGradientBoostingClassifier(
            max_iter=60,
            learning_rate=0.15,
            max_leaf_nodes=8,
            max_bins=63,
            max_features=0.5,
            min_samples_leaf=10,
            l2_regularization=1.0,
            early_stopping=n_train >= _MIN_USERS_FOR_EARLY_STOPPING and min_class_count >= 2,
            validation_fraction=0.15,
            n_iter_no_change=8,
            random_state=seed,
        )
    if name == PRIOR:
        return DummyClassifier(strategy="prior")
    if name in PAPER_BATTERY:
        return paper_attacker(name, seed)
    raise ValueError(f"unknown attacker {name!r}; choose from {', '.join(FAMILIES)}")


class MarginScores(ClassifierMixin, BaseEstimator):
    """An SVM whose decision values stand in for class probabilities: a logistic link for two
    classes (monotone: AUC ranks users by the SVM's own margin, the arg-max is its own
    prediction), a softmax over the one-vs-rest decision values otherwise (the arg-max is
    theirs; libsvm's pairwise vote can differ where votes tie). Platt scaling
    (SVC(probability=True)) would refit the SVM five more times on internal folds."""

    def __init__(self, svm: SVC | None = None):
        self.svm = svm

    def fit(self, X: np.ndarray, y: np.ndarray) -> MarginScores:
        self.svm.fit(X, y)
        self.classes_ = self.svm.classes_
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        d = np.asarray(self.svm.decision_function(X), dtype=np.float64)
        if d.ndim == 1:
            p1 = 1.0 / (1.0 + np.exp(-np.clip(d, -50.0, 50.0)))
            return np.column_stack([1.0 - p1, p1])
        e = np.exp(d - d.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def paper_attacker(name: str, seed: int = 0) -> ClassifierMixin:
    """The privacy-adversarial BPR paper's classifiers, with scikit-learn's defaults where the
    paper names no setting. Every one reads standardised features (trees are unaffected), so a
    small C does not flatten the SVMs to the majority guess just because user vectors are short.

    - 'readout': the training readout's form, a linear map and softmax (logistic regression for
      two classes), fitted post hoc by maximum likelihood without a penalty, as the readout was;
    - 'svm-linear-C0.1' / '-C1' / '-C10': linear-kernel SVMs; 'svm-rbf': RBF kernel, C = 1;
    - 'tree', 'forest' (100 trees), 'gradient-boosting' (100 stages of depth-3 trees).
    """
    if name == "readout":
        return make_pipeline(StandardScaler(), LogisticRegression(C=np.inf, max_iter=5000))
    if name.startswith("svm-linear-C"):
        c = float(name.removeprefix("svm-linear-C"))
        return make_pipeline(StandardScaler(), MarginScores(SVC(kernel="linear", C=c, random_state=seed)))
    if name == "svm-rbf":
        return make_pipeline(StandardScaler(), MarginScores(SVC(kernel="rbf", C=1.0, gamma="scale", random_state=seed)))
    if name == "tree":
        return DecisionTreeClassifier(random_state=seed)
    if name == "forest":
        return RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=1)
    if name == "gradient-boosting":
        return GradientBoostingClassifier(random_state=seed)
    raise ValueError(f"unknown attacker {name!r}; the paper's battery: {', '.join(PAPER_BATTERY)}")


def check_attackers(attackers) -> None:
    if not attackers:
        raise ValueError(f"no attackers given; choose from {', '.join(FAMILIES)}")
    unknown = [a for a in attackers if a not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown attacker(s) {unknown}; choose from {', '.join(FAMILIES)}")


def fit_proba(model: ClassifierMixin, X: np.ndarray, y: np.ndarray, X_eval: np.ndarray, n_classes: int) -> np.ndarray:
    """Fit on (X, y) and return probabilities over all n_classes for X_eval (classes the
    model never saw in training get probability 0)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
        raw = model.predict_proba(X_eval)
    proba = np.zeros((X_eval.shape[0], n_classes), dtype=np.float64)
    proba[:, np.asarray(model.classes_, dtype=np.int64)] = raw
    return proba


def cv_folds(y: np.ndarray, seed: int) -> Folds:
    """Stratified folds of the training users; every attacker (and every release of an
    artifact, which covers the same users) is cross-validated on the same folds."""
    min_count = int(np.bincount(y)[np.unique(y)].min())
    n_splits = max(2, min(CV_FOLDS, min_count))
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # a class rarer than n_splits only triggers a warning; its folds still score.
        warnings.simplefilter("ignore", UserWarning)
        return list(folds.split(np.zeros((y.size, 1)), y))


def chosen_by(folds: Folds) -> str:
    return f"{len(folds)}-fold stratified CV on the training (public) users, maximising balanced accuracy of the out-of-fold probabilities"


def _rarest(y: np.ndarray) -> int:
    counts = np.bincount(y)
    return int(counts[counts > 0].min())


@dataclass
class AttackerRun:
    """One attacker family trained on one feature matrix: its CV figures and its test output."""

    name: str
    cv_auc: float
    decision: Decision
    oof_proba: np.ndarray = field(repr=False)  # training users, each from the fold that held it out
    test_proba: np.ndarray = field(repr=False)
    test_pred: np.ndarray = field(repr=False)


def run_attacker(
    name: str, X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, n_classes: int, *, seed: int, folds: Folds
) -> AttackerRun:
    """Cross-validate `name` on the training users, choose its decision rule on the
    out-of-fold probabilities, refit on all training users and predict the test users."""
    oof = np.zeros((y_train.size, n_classes), dtype=np.float64)
    aucs = []
    for fit_idx, val_idx in folds:
        # A fold whose training part holds one class can only learn that class's prior.
        family = name if np.unique(y_train[fit_idx]).size >= 2 else PRIOR
        model = make_attacker(family, seed, n_train=fit_idx.size, min_class_count=_rarest(y_train[fit_idx]))
        oof[val_idx] = fit_proba(model, X_train[fit_idx], y_train[fit_idx], X_train[val_idx], n_classes)
        auc = roc_auc_ovr(y_train[val_idx], oof[val_idx]) if family == name else math.nan
        if not math.isnan(auc):
            aucs.append(auc)
    prior = np.bincount(y_train, minlength=n_classes) / y_train.size
    decision = choose_decision(y_train, oof, prior, chosen_by(folds))
    model = make_attacker(name, seed, n_train=y_train.size, min_class_count=_rarest(y_train))
    test_proba = fit_proba(model, X_train, y_train, X_test, n_classes)
    return AttackerRun(
        name=name,
        cv_auc=float(np.mean(aucs)) if aucs else math.nan,
        decision=decision,
        oof_proba=oof,
        test_proba=test_proba,
        test_pred=decision.predict(test_proba),
    )
