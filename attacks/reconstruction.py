"""Reconstruction attack: how well a secret per-user vector (e.g. the source's private user
embedding) can be recovered from an artifact the attacker holds.

The attacker knows artifact and secret of some auxiliary (public) users, learns a mapping
artifact -> secret on them, and predicts the private users' secrets. Candidate mappings: ridge
regression on standardised features with its penalty chosen by leave-one-out CV (RidgeCV), and
a small MLP; the one used is chosen by K-fold CV on the training users (out-of-fold
variance-weighted R²), never on the private users.

Metrics on the private users, each next to the no-artifact attacker (the mean training secret
for everyone) and, for re-identification, chance:

- cosine: mean cosine similarity between reconstruction and true secret;
- r2: R² over all secret dimensions, variance weighted;
- reid_top1 / reid_top10: share of private users whose true secret is the nearest (among the
  10 nearest) of all private users' secrets to their reconstruction (Euclidean; ties count
  against the attacker). Chance is 1/n and 10/n.

The reconstructions come back too (out-of-fold for the training users, predictions for the
test users), so a caller can run attribute inference on them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.compose import TransformedTargetRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import RidgeCV
from sklearn.metrics import pairwise_distances, r2_score
from sklearn.metrics.pairwise import paired_cosine_distances
from sklearn.model_selection import KFold
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from .jsonable import json_safe

ESTIMATORS: tuple[str, ...] = ("ridge", "mlp")
RIDGE_ALPHAS = np.logspace(-2, 4, 13)
CV_FOLDS = 3
TOP_K: tuple[int, ...] = (1, 10)
SELECTION = f"estimator with the highest out-of-fold variance-weighted R² in {CV_FOLDS}-fold CV on the training users only"


def make_regressor(name: str, seed: int = 0):
    """A fresh mapping artifact -> secret: 'ridge' (standardised inputs, penalty by
    leave-one-out CV over RIDGE_ALPHAS) or 'mlp' (one hidden layer, L-BFGS, standardised
    inputs and targets)."""
    if name == "ridge":
        return make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS))
    if name == "mlp":
        # L-BFGS as for the attribute MLP. A strong penalty: with alpha=1 it overfit 500
        # users (out-of-fold R² -0.3 where ridge reached 0.09, measured); with 30 it beats
        # ridge on a cubic map (0.66 vs 0.57). Standardised targets share one penalty fairly.
        mlp = MLPRegressor(hidden_layer_sizes=(32,), solver="lbfgs", alpha=30.0, max_iter=300, random_state=seed)
        return TransformedTargetRegressor(regressor=make_pipeline(StandardScaler(), mlp), transformer=StandardScaler())
    raise ValueError(f"unknown estimator {name!r}; choose from {', '.join(ESTIMATORS)}")


def _fit_predict(name: str, seed: int, A: np.ndarray, S: np.ndarray, A_eval: np.ndarray) -> tuple[np.ndarray, object]:
    model = make_regressor(name, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(A, S)
        return np.asarray(model.predict(A_eval), dtype=np.float64).reshape(A_eval.shape[0], -1), model


def reconstruction_metrics(secret: np.ndarray, reconstruction: np.ndarray, top_k: Sequence[int] = TOP_K) -> dict:
    """cosine, r2, reid_top<k> for each k, and n; see the module docstring."""
    secret, reconstruction = np.asarray(secret, np.float64), np.asarray(reconstruction, np.float64)
    n = secret.shape[0]
    cosine = 1.0 - paired_cosine_distances(reconstruction, secret)  # a zero vector counts as cosine 0
    distances = pairwise_distances(reconstruction, secret)  # row i: reconstruction i to every true secret
    rank = (distances <= np.diag(distances)[:, None]).sum(axis=1)  # 1 = nearest; ties count against
    out = {
        "cosine": float(cosine.mean()),
        "r2": float(r2_score(secret, reconstruction, multioutput="variance_weighted")) if n >= 2 else math.nan,
    }
    out.update({f"reid_top{k}": float(np.mean(rank <= k)) for k in top_k})
    out["n"] = int(n)
    return out


@dataclass
class ReconstructionResult:
    estimator: str
    metrics: dict
    baseline: dict
    chance: dict
    cv: dict[str, dict]
    n_train: int
    n_test: int
    dim: int
    ridge_alpha: float | None = None
    # Out-of-fold reconstructions of the training users and predictions for the test users; not in to_dict.
    train_reconstruction: np.ndarray | None = field(default=None, repr=False)
    test_reconstruction: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """JSON-able (NaN becomes null)."""
        return json_safe(
            {
                "estimator": self.estimator,
                "metrics": self.metrics,
                "baseline": self.baseline,
                "chance": self.chance,
                "cv": self.cv,
                "ridge_alpha": self.ridge_alpha,
                "selection": SELECTION,
                "n_train": self.n_train,
                "n_test": self.n_test,
                "dim": self.dim,
            }
        )


def _as_matrix(X: np.ndarray, what: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    X = X.reshape(X.shape[0], -1) if X.ndim != 1 else X.reshape(-1, 1)
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{what} contains NaN or inf")
    return X


def reconstruction_attack(
    artifact_train: np.ndarray,
    secret_train: np.ndarray,
    artifact_test: np.ndarray,
    secret_test: np.ndarray,
    *,
    estimators: Sequence[str] = ESTIMATORS,
    seed: int = 0,
    top_k: Sequence[int] = TOP_K,
) -> ReconstructionResult:
    """Learn artifact -> secret on the training (auxiliary, public) users, reconstruct the test
    (private) users' secrets and score them. Rows are users; secrets are [n, dim] vectors."""
    A_tr, S_tr = _as_matrix(artifact_train, "artifact_train"), _as_matrix(secret_train, "secret_train")
    A_te, S_te = _as_matrix(artifact_test, "artifact_test"), _as_matrix(secret_test, "secret_test")
    if A_tr.shape[0] != S_tr.shape[0] or A_te.shape[0] != S_te.shape[0]:
        raise ValueError(
            f"artifact and secret rows differ: train {A_tr.shape[0]} vs {S_tr.shape[0]}, test {A_te.shape[0]} vs {S_te.shape[0]}"
        )
    if A_tr.shape[1] != A_te.shape[1] or S_tr.shape[1] != S_te.shape[1]:
        raise ValueError(
            f"train and test widths differ: artifact {A_tr.shape[1]} vs {A_te.shape[1]}, secret {S_tr.shape[1]} vs {S_te.shape[1]}"
        )
    if A_tr.shape[0] < 2 * CV_FOLDS:
        raise ValueError(f"need at least {2 * CV_FOLDS} training users to cross-validate, got {A_tr.shape[0]}")
    unknown = [e for e in estimators if e not in ESTIMATORS]
    if not estimators or unknown:
        raise ValueError(f"estimators must be chosen from {', '.join(ESTIMATORS)}, got {list(estimators)}")

    mean = S_tr.mean(axis=0)
    baseline = reconstruction_metrics(S_te, np.tile(mean, (S_te.shape[0], 1)), top_k)
    chance = {f"reid_top{k}": min(1.0, k / S_te.shape[0]) for k in top_k}
    common = {"baseline": baseline, "chance": chance, "n_train": S_tr.shape[0], "n_test": S_te.shape[0], "dim": S_tr.shape[1]}
    if A_tr.shape[1] == 0:  # nothing to learn from: the attacker is the no-artifact attacker
        oof = np.tile(mean, (S_tr.shape[0], 1))
        test = np.tile(mean, (S_te.shape[0], 1))
        return ReconstructionResult("mean", dict(baseline), cv={}, train_reconstruction=oof, test_reconstruction=test, **common)

    folds = list(KFold(CV_FOLDS, shuffle=True, random_state=seed).split(A_tr))
    oof: dict[str, np.ndarray] = {}
    cv: dict[str, dict] = {}
    with threadpool_limits(limits=1):  # see attacks.attribute: avoids oversubscription
        for name in estimators:
            pred = np.zeros_like(S_tr)
            for fit_idx, val_idx in folds:
                pred[val_idx], _ = _fit_predict(name, seed, A_tr[fit_idx], S_tr[fit_idx], A_tr[val_idx])
            oof[name] = pred
            cv[name] = {k: v for k, v in reconstruction_metrics(S_tr, pred, ()).items() if k != "n"}
        # Highest out-of-fold R² wins; ties go to the earlier estimator.
        best = max(estimators, key=lambda e: (cv[e]["r2"], -list(estimators).index(e)))
        test, model = _fit_predict(best, seed, A_tr, S_tr, A_te)
    alpha = float(model[-1].alpha_) if best == "ridge" else None
    return ReconstructionResult(
        best,
        reconstruction_metrics(S_te, test, top_k),
        cv=cv,
        ridge_alpha=alpha,
        train_reconstruction=oof[best],
        test_reconstruction=test,
        **common,
    )
