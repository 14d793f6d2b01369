"""Conditional model inversion of a trained MF: one prototype per user (PFCDR, §4.1-4.2).

For user u with (frozen) embedding U_u and the (frozen) item embeddings V [items, d], a free
weight vector b_u over all items starts at softmax(z), z ~ N(0, 1), and is optimised so that
the model rates the weighted item mixture P_u = b_u V as `target` (5, "likes it"):

    min_b (<U_u, b V> - target)^2        P_u = b_u* V is u's prototype.

Adam with weight decay (L2 on b), a fixed number of iterations with a linear warm-up and a
cosine decay of the learning rate, users in batches. Per user the iterate with the smallest
loss is kept. A batch computes B V as one [batch, items] x [items, d] product: no
[batch, items, d] tensor is ever formed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .training import Stopwatch, torch_generator

__all__ = ["InversionReport", "invert_users", "lr_at"]


@dataclass
class InversionReport:
    users: int
    iterations: int
    final_abs_error: dict[str, float]  # |<U_u, P_u> - target| of the kept iterates: mean, median, max
    initial_abs_error: float  # mean over users, at the softmax initialisation
    within_0_1: float  # share of users within 0.1 of the target
    seconds: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def lr_at(step: int, *, lr: float, iterations: int, warmup: int) -> float:
    """Learning rate of iteration `step` (0-based): linear warm-up over `warmup` iterations,
    then a cosine decay from `lr` towards 0 at `iterations`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    span = max(iterations - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / span)) * lr


def invert_users(
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    *,
    seed: int,
    stream: int = 0,
    target: float = 5.0,
    iterations: int = 300,
    lr: float = 1e-4,
    weight_decay: float = 1e-4,
    warmup: int = 10,
    batch_size: int = 200,
) -> tuple[np.ndarray, InversionReport]:
    """Prototypes [n, d] (float32) of the users whose embeddings are the rows of `user_vectors`."""
    U = torch.as_tensor(np.asarray(user_vectors, np.float32))
    V = torch.as_tensor(np.asarray(item_vectors, np.float32))
    if U.ndim != 2 or V.ndim != 2 or U.shape[1] != V.shape[1]:
        raise ValueError(f"user_vectors [n, d] and item_vectors [items, d] must share d, got {tuple(U.shape)}, {tuple(V.shape)}")
    if iterations < 1 or batch_size < 1:
        raise ValueError(f"iterations and batch_size must be >= 1, got {iterations}, {batch_size}")
    clock = Stopwatch()
    generator = torch_generator(seed, stream)
    n = U.shape[0]
    prototypes = torch.zeros(n, V.shape[1])
    best_error = torch.full((n,), math.inf)
    initial = torch.zeros(n)
    for lo in range(0, n, batch_size):
        u = U[lo : lo + batch_size]
        weights = torch.softmax(torch.randn(u.shape[0], V.shape[0], generator=generator), dim=1).requires_grad_()
        optimizer = torch.optim.Adam([weights], lr=lr, weight_decay=weight_decay)
        best = prototypes[lo : lo + batch_size]
        err_best = best_error[lo : lo + batch_size]
        for step in range(iterations):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, lr=lr, iterations=iterations, warmup=warmup)
            proto = weights @ V  # [batch, d]
            pred = (u * proto).sum(dim=1)
            with torch.no_grad():
                err = (pred - target).abs()
                if step == 0:
                    initial[lo : lo + batch_size] = err
                better = err < err_best
                best[better] = proto[better]
                err_best[better] = err[better]
            loss = torch.mean((pred - target) ** 2)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        # the iterate after the last step counts too
        with torch.no_grad():
            proto = weights @ V
            err = ((u * proto).sum(dim=1) - target).abs()
            better = err < err_best
            best[better] = proto[better]
            err_best[better] = err[better]
    errors = best_error.numpy().astype(np.float64)
    report = InversionReport(
        users=int(n),
        iterations=int(iterations),
        final_abs_error={"mean": float(errors.mean()), "median": float(np.median(errors)), "max": float(errors.max())} if n else {},
        initial_abs_error=float(initial.mean()) if n else math.nan,
        within_0_1=float(np.mean(errors <= 0.1)) if n else math.nan,
        seconds=clock.seconds,
    )
    return prototypes.numpy().astype(np.float32), report
