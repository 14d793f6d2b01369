"""Membership inference: was this user in the target model's training data?

Attacks on per-user feature vectors, each trained on the attacker's shadow data
(features_train, member_train) and evaluated on the target's users (features_test, member_test):

- "learned": the MIA-against-recommenders paper's (Zhang et al., CCS 2021) attack model's
  shape, an MLP with hidden layers 32 and 8 and a two-class output, here sklearn's
  MLPClassifier (L-BFGS, L2) on standardised features. Its single threshold is chosen on
  out-of-fold training scores.
- "threshold": the strongest single statistic (one feature column or the feature vector's L2
  norm), picked and oriented by its ROC-AUC on the training data, thresholded where TPR - FPR is
  largest on the training data.
- "paper" (on request, `attackers=`): the paper's attack model as the paper trains it
  (`PaperAttackMLP`): in-32-8-2 with ReLU and a softmax output, cross-entropy, per-sample SGD
  with learning rate 0.01 and momentum 0.7 for 20 epochs, on the raw features. Its scores are
  the softmax's member probability; its single threshold is chosen out of fold like "learned".
  Two pitfalls of the paper's public code are not reproduced: it applies the softmax twice
  (a softmax layer before a cross-entropy that takes logits) and visits the training users in
  a fixed order (all members, then all non-members) every epoch; here the softmax is applied
  once and the order is reshuffled every epoch (seeded).

Each reports `membership_metrics` (ROC-AUC, TPR at low FPR, advantage, and the paper's
single-threshold balanced accuracy), next to the attacker without an artifact (a constant
score: AUC 0.5, TPR = FPR).

`centroid_difference_features` builds the paper's per-user feature from interactions and
recommendation lists; `item_vectors_from_ratings` the item vectors it is built on.
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
    "ATTACKERS",
    "PaperAttackMLP",
    "centroid_difference_features",
    "item_vectors_from_ratings",
    "membership_inference",
    "membership_metrics",
]

_OOF_FOLDS = 3
ATTACKERS = ("learned", "threshold", "paper")
DEFAULT_ATTACKERS = ("learned", "threshold")


class PaperAttackMLP:
    """Paper 004's attack model: Linear(in, 32)-ReLU-Linear(32, 8)-ReLU-Linear(8, 2)-softmax,
    cross-entropy, SGD one user at a time (learning rate 0.01, momentum 0.7, 20 epochs; the
    users reshuffled every epoch). Weights and biases start uniform in +-1/sqrt(fan_in).
    Pure numpy, seeded, so it gives the same scores wherever it runs."""

    def __init__(self, hidden: Sequence[int] = (32, 8), lr: float = 0.01, momentum: float = 0.7, epochs: int = 20, seed: int = 0):
        self.hidden, self.lr, self.momentum, self.epochs, self.seed = tuple(hidden), float(lr), float(momentum), int(epochs), int(seed)
        self.params: list[tuple[np.ndarray, np.ndarray]] = []

    def _forward(self, x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        acts = [x]
        for i, (w, b) in enumerate(self.params):
            z = acts[-1] @ w + b
            acts.append(np.maximum(z, 0.0) if i < len(self.params) - 1 else z)
        logits = acts.pop()
        z = logits - logits.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return acts, e / e.sum(axis=-1, keepdims=True)

    def fit(self, X: np.ndarray, y: np.ndarray) -> PaperAttackMLP:
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y).astype(np.int64).reshape(-1)
        rng = np.random.default_rng([self.seed, 4004])
        sizes = [X.shape[1], *self.hidden, 2]
        self.params = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / np.sqrt(a)
            self.params.append((rng.uniform(-bound, bound, (a, b)), rng.uniform(-bound, bound, b)))
        velocity = [(np.zeros_like(w), np.zeros_like(b)) for w, b in self.params]
        onehot = np.eye(2)[y]
        for _ in range(self.epochs):
            for n in rng.permutation(y.size):
                acts, proba = self._forward(X[n : n + 1])
                delta = proba - onehot[n : n + 1]  # d(cross-entropy)/d(logits)
                for i in range(len(self.params) - 1, -1, -1):
                    w, b = self.params[i]
                    gw, gb = acts[i].T @ delta, delta[0]
                    if i:
                        delta = (delta @ w.T) * (acts[i] > 0)
                    vw, vb = velocity[i]
                    vw *= self.momentum
                    vw += gw
                    vb *= self.momentum
                    vb += gb
                    w -= self.lr * vw
                    b -= self.lr * vb
        return self

    def member_proba(self, X: np.ndarray) -> np.ndarray:
        """The softmax's probability of the member class (column 1) for each row."""
        if not self.params:
            raise RuntimeError("fit before member_proba")
        return self._forward(np.asarray(X, dtype=np.float64))[1][:, 1]


def item_vectors_from_ratings(users: np.ndarray, items: np.ndarray, ratings: np.ndarray, n_items: int, dim: int) -> np.ndarray:
    """Paper 004's item vectors: the p x q rating matrix M (rated entries hold the rating, all
    others 0) factorised as M ~ U V^T with l = `dim` factors, minimising ||M - U V^T|| over the
    whole matrix, whose minimiser is the truncated SVD; V = the right singular vectors scaled
    by the square roots of the singular values. Items nobody rated get the zero vector; when
    the matrix has rank below `dim` the missing factors are zero. float32 [n_items, dim]."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    if dim < 1:
        raise ValueError(f"the item vectors need at least one factor, got dim={dim}")
    if items.size and (items.min() < 0 or items.max() >= n_items):
        raise ValueError(f"item ids must lie in 0..{n_items - 1}")
    rows = np.unique(users, return_inverse=True)[1]
    M = np.zeros((int(rows.max()) + 1 if rows.size else 0, n_items))
    M[rows, items] = np.asarray(ratings, dtype=np.float64)
    _, s, vt = np.linalg.svd(M, full_matrices=False)
    out = np.zeros((n_items, dim))
    r = min(dim, s.size)
    out[:, :r] = vt[:r].T * np.sqrt(s[:r])
    return out.astype(np.float32)


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


def _paper_scores(seed: int, X: np.ndarray, y: np.ndarray, X_eval: np.ndarray) -> np.ndarray:
    return PaperAttackMLP(seed=seed).fit(X, y).member_proba(X_eval)


def _learned_scores(seed: int, X: np.ndarray, y: np.ndarray, X_eval: np.ndarray) -> np.ndarray:
    return _fit_scores(_learned_model(seed, y.size), X, y, X_eval)


def _oof_scores(X: np.ndarray, y: np.ndarray, seed: int, scorer=_learned_scores) -> np.ndarray:
    """Out-of-fold member scores of a learned attack on its own training data."""
    n_splits = max(2, min(_OOF_FOLDS, int(y.sum()), int((~y).sum())))
    scores = np.zeros(y.size)
    for fit_idx, val_idx in StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(X, y):
        scores[val_idx] = scorer(seed, X[fit_idx], y[fit_idx], X[val_idx])
    return scores


def _learned_attack(scorer, Xtr, ytr, Xte, yte, seed, fpr_levels) -> dict:
    """A learned attack: threshold from out-of-fold scores, final model on all training users."""
    with threadpool_limits(limits=1):  # see attacks.attribute: avoids oversubscription
        oof = _oof_scores(Xtr, ytr, seed, scorer)
        scores = scorer(seed, Xtr, ytr, Xte)
    out = membership_metrics(scores, yte, threshold=best_threshold(oof, ytr), fpr_levels=fpr_levels)
    out["train_auc_oof"] = float(roc_auc_score(ytr, oof))
    return out


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
    attackers: Sequence[str] = DEFAULT_ATTACKERS,
) -> dict:
    """The membership attacks named in `attackers` (of ATTACKERS; default learned and
    threshold); JSON-able dict {<attacker>: metrics, "baseline": metrics, "best": name,
    "attackers": [...], "selection": ..., "n_train", "n_test"}. `best` is chosen on the
    training data only (out-of-fold AUC for the learned attacks, training AUC for the
    threshold attack; ties go to the earlier of learned, threshold, paper)."""
    unknown = [a for a in attackers if a not in ATTACKERS]
    if unknown or not attackers:
        raise ValueError(f"unknown or no membership attackers {list(unknown)}; choose from {', '.join(ATTACKERS)}")
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

    out: dict = {}
    train_auc: dict[str, float] = {}
    if "learned" in attackers:  # paper 004's model shape, fitted to convergence
        out["learned"] = _learned_attack(_learned_scores, Xtr, ytr, Xte, yte, seed, fpr_levels)
        out["learned"]["model"] = "MLPClassifier(32, 8) on standardised features"
        train_auc["learned"] = out["learned"]["train_auc_oof"]
    if "threshold" in attackers:
        out["threshold"] = _threshold_attack(Xtr, ytr, Xte, yte, fpr_levels)
        train_auc["threshold"] = out["threshold"]["train_auc"]
    if "paper" in attackers:
        out["paper"] = _learned_attack(_paper_scores, Xtr, ytr, Xte, yte, seed, fpr_levels)
        out["paper"]["model"] = "paper 004: MLP 32-8-2, ReLU, softmax, per-sample SGD (lr 0.01, momentum 0.7), 20 epochs, raw features"
        train_auc["paper"] = out["paper"]["train_auc_oof"]

    # The attacker without an artifact: one constant score for everyone.
    baseline = membership_metrics(np.zeros(yte.size), yte, threshold=0.0, fpr_levels=fpr_levels)
    best = max(train_auc, key=lambda name: (train_auc[name], -ATTACKERS.index(name)))
    return {
        **out,
        "baseline": baseline,
        "best": best,
        "attackers": [a for a in ATTACKERS if a in out],
        "selection": "best by ROC-AUC on the attacker's training data (out-of-fold for the learned attacks)",
        "n_train": int(ytr.size),
        "n_test": int(yte.size),
    }


def _threshold_attack(Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray, yte: np.ndarray, fpr_levels: Sequence[float]) -> dict:
    """The strongest single statistic, picked and oriented on the training data."""
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
    return threshold


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
