"""The bridges of PFCDR and EMCDR, and PFCDR's top-k matching of target users.

- `train_bridge`: a linear map without bias from source vectors to target vectors of the same
  users (PFCDR: prototypes, §4.3; EMCDR: user embeddings), MSE, Adam, a fixed number of epochs;
  the weights after every epoch come back so that a caller can pick an epoch on validation users.
- `topk_user_means`: for each mapped prototype q, the k target users whose predicted rating of
  q is closest to the inversion target r (|r - <U_v, q>| smallest, §4.4 eq. 13), averaged. The
  mean of their predicted ratings of item j (eq. 14) is <mean_v U_v, V_j>, so the average of
  their vectors is all a prediction needs. Several k at once: one sort per query.
"""

from __future__ import annotations

import numpy as np
import torch

from .training import adam, minibatches, numpy_rng, torch_generator

__all__ = ["apply_bridge", "topk_user_means", "train_bridge"]

PREFIX_ELEMENTS = 4_000_000  # bounds the [chunk, users, d] prefix sums of one pass


def train_bridge(
    x: np.ndarray,
    y: np.ndarray,
    *,
    seed: int,
    stream: int = 0,
    epochs: int = 10,
    lr: float = 5e-3,
    batch_size: int = 128,
) -> tuple[list[np.ndarray], list[float]]:
    """Fit y ~ x W^T (W: [d_out, d_in], no bias). Returns W after each epoch and the epoch's
    mean training loss."""
    X = torch.as_tensor(np.asarray(x, np.float32))
    Y = torch.as_tensor(np.asarray(y, np.float32))
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0] or X.shape[0] == 0:
        raise ValueError(f"x [n, d_in] and y [n, d_out] need the same n > 0 rows, got {tuple(X.shape)}, {tuple(Y.shape)}")
    layer = torch.nn.Linear(X.shape[1], Y.shape[1], bias=False)
    with torch.no_grad():  # PyTorch's default Linear init, drawn from this call's own generator
        bound = 1.0 / np.sqrt(X.shape[1])
        layer.weight.uniform_(-bound, bound, generator=torch_generator(seed, stream, 0))
    optimizer = adam(layer.parameters(), lr)
    rng = numpy_rng(seed, stream, 1)
    weights, losses = [], []
    for _ in range(epochs):
        total, count = 0.0, 0
        for idx in minibatches(X.shape[0], batch_size, rng):
            b = torch.from_numpy(idx)
            loss = torch.mean((layer(X[b]) - Y[b]) ** 2)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * idx.size, count + idx.size
        weights.append(layer.weight.detach().numpy().copy())
        losses.append(total / count)
    return weights, losses


def apply_bridge(weight: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float64) @ np.asarray(weight, np.float64).T


def topk_user_means(queries: np.ndarray, user_vectors: np.ndarray, ks: list[int], *, target: float = 5.0) -> dict[int, np.ndarray]:
    """{k: [n_queries, d] mean of the k users best aligned with each query}. Ties in
    |target - <U_v, q>| go to the lower row (a stable sort)."""
    Q = np.asarray(queries, np.float64)
    U = np.asarray(user_vectors, np.float64)
    n = U.shape[0]
    bad = [k for k in ks if not 1 <= k <= n]
    if bad:
        raise ValueError(f"every k must be in 1..{n} (the candidate users), got {bad}")
    out = {k: np.empty((Q.shape[0], U.shape[1])) for k in ks}
    chunk = max(1, PREFIX_ELEMENTS // max(1, n * U.shape[1]))
    for lo in range(0, Q.shape[0], chunk):
        q = Q[lo : lo + chunk]
        gap = np.abs(target - q @ U.T)  # [chunk, users]
        order = np.argsort(gap, axis=1, kind="stable")
        prefix = np.cumsum(U[order], axis=1)  # [chunk, users, d]: sums of the best 1..n users
        for k in ks:
            out[k][lo : lo + chunk] = prefix[:, k - 1, :] / k
    return out
