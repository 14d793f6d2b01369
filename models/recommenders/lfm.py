"""Latent factor model (paper 004's "LFM"): implicit feedback as 1 for an interaction and 0
for an equal number of items drawn uniformly among those the user never interacted with
(redrawn every epoch); score(u, i) = <p_u, q_i>; squared error with L2 on the factors a
sample touches, stochastic gradient descent (paper: learning rate 0.01, regularisation 0.01,
20 epochs).

Updates are taken on small batches of samples (`lfm_batch`, default 32): each sample's
per-sample SGD step is computed from the factors at the start of the batch and the steps are
summed, so the learning rate means what it means in per-sample SGD, at numpy speed.

Fold-in: a user the model was not trained on gets the factor vector that minimises the same
loss over their own history (and as many sampled non-interacted items) with the item factors
frozen: a ridge regression, solved exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..training import PairIndex, Stopwatch, minibatches, numpy_rng
from .base import Recommender, sample_unseen

DEFAULTS = {"lfm_dim": 32, "lfm_epochs": 20, "lfm_lr": 0.01, "lfm_reg": 0.01, "lfm_batch": 32}
INIT_STD = 0.1


class LFM(Recommender):
    name = "lfm"

    def _opt(self, key: str) -> Any:
        return self.options.get(key, DEFAULTS[key])

    def _fit(self, rows: np.ndarray, items: np.ndarray) -> dict[str, Any]:
        dim, lr, reg = int(self._opt("lfm_dim")), float(self._opt("lfm_lr")), float(self._opt("lfm_reg"))
        epochs, batch = int(self._opt("lfm_epochs")), int(self._opt("lfm_batch"))
        clock = Stopwatch()
        rng = numpy_rng(self.seed, 31)
        P = rng.normal(0.0, INIT_STD, size=(self.users.size, dim))
        Q = rng.normal(0.0, INIT_STD, size=(self.n_items, dim))
        seen = PairIndex(rows, items, self.n_items)
        losses = []
        for _ in range(epochs):
            neg, valid = sample_unseen(rows, self.n_items, seen, rng)
            u_all = np.concatenate([rows, rows[valid]])
            i_all = np.concatenate([items, neg[valid]])
            y_all = np.concatenate([np.ones(rows.size), np.zeros(int(valid.sum()))])
            total = 0.0
            for idx in minibatches(u_all.size, batch, rng):
                u, i, y = u_all[idx], i_all[idx], y_all[idx]
                p, q = P[u], Q[i]
                err = y - (p * q).sum(axis=1)
                total += float((err**2).sum())
                np.add.at(P, u, lr * (err[:, None] * q - reg * p))
                np.add.at(Q, i, lr * (err[:, None] * p - reg * q))
            losses.append(total / u_all.size)
        self.P, self.Q = P.astype(np.float32), Q.astype(np.float32)
        return {"epochs": epochs, "dim": dim, "final_squared_error": losses[-1] if losses else None, "seconds": clock.seconds}

    def member_scores(self, users: np.ndarray) -> np.ndarray:
        return self.P[self.rows_of(users)] @ self.Q.T

    def fold_in_vectors(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
        """The factor vector of each new user (float32 [n, dim]), item factors frozen."""
        reg = float(self._opt("lfm_reg"))
        Q = self.Q.astype(np.float64)
        out = np.zeros((len(histories), Q.shape[1]), dtype=np.float64)
        for r, (u, items) in enumerate(zip(np.asarray(users, dtype=np.int64).tolist(), histories)):
            pos = np.unique(np.asarray(items, dtype=np.int64))
            if pos.size == 0:
                continue
            rng = numpy_rng(self.seed, 32, u)
            unseen = np.setdiff1d(np.arange(self.n_items), pos)
            neg = rng.choice(unseen, size=min(pos.size, unseen.size), replace=False)
            S = Q[np.concatenate([pos, neg])]
            y = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
            # Each sample adds reg/2 * |p|^2 in training, so the penalty grows with the samples.
            A = S.T @ S + reg * y.size * np.eye(S.shape[1])
            out[r] = np.linalg.solve(A, S.T @ y)
        return out.astype(np.float32)

    def fold_in_scores(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
        return self.fold_in_vectors(users, histories) @ self.Q.T
