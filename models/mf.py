"""Bias-free matrix factorisation for explicit ratings: r_hat(u, i) = <U_u, V_i>, trained on MSE.

The base model of PFCDR and EMCDR as their public code has it: no global, user or item bias,
embeddings initialised N(0, init_std^2) (PyTorch's nn.Embedding default is init_std = 1), Adam,
no weight decay, a fixed number of epochs over shuffled mini-batches. A user or item that never
appears in a training batch keeps its initial vector (its gradient is always zero, so Adam
never moves it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .data import Ratings
from .training import Stopwatch, adam, minibatches, numpy_rng, torch_generator

__all__ = ["MF", "MFReport", "train_mf"]

PREDICT_CHUNK = 65_536  # ratings predicted per pass


class MF(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int, *, init_std: float = 1.0, generator: torch.Generator | None = None):
        super().__init__()
        self.users = nn.Parameter(torch.randn(n_users, dim, generator=generator) * init_std)
        self.items = nn.Parameter(torch.randn(n_items, dim, generator=generator) * init_std)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.users[users] * self.items[items]).sum(dim=-1)

    @torch.no_grad()
    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predicted ratings of (users[j], items[j]) pairs, float64."""
        users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
        out = np.empty(users.shape[0], dtype=np.float64)
        for lo in range(0, users.shape[0], PREDICT_CHUNK):
            sl = slice(lo, lo + PREDICT_CHUNK)
            out[sl] = self(torch.from_numpy(users[sl]), torch.from_numpy(items[sl])).double().numpy()
        return out

    def user_vectors(self) -> np.ndarray:
        return self.users.detach().numpy().copy()

    def item_vectors(self) -> np.ndarray:
        return self.items.detach().numpy().copy()


@dataclass
class MFReport:
    epochs: int
    train_mse: list[float] = field(default_factory=list)  # per epoch, mean over its batches
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"epochs": self.epochs, "train_mse": list(self.train_mse), "seconds": self.seconds}


def train_mf(
    ratings: Ratings,
    n_users: int,
    n_items: int,
    *,
    seed: int,
    stream: int = 0,
    dim: int = 10,
    epochs: int = 10,
    lr: float = 0.01,
    batch_size: int = 512,
    init_std: float = 1.0,
) -> tuple[MF, MFReport]:
    """Fit MF to `ratings` (MSE, Adam). Initial vectors and batch order come from `seed` and
    `stream` only, so the same call gives the same model in any process."""
    if len(ratings) == 0:
        raise ValueError("train_mf needs at least one rating")
    if epochs < 0 or dim < 1:
        raise ValueError(f"train_mf needs epochs >= 0 and dim >= 1, got {epochs}, {dim}")
    clock = Stopwatch()
    model = MF(n_users, n_items, dim, init_std=init_std, generator=torch_generator(seed, stream, 0))
    optimizer = adam(model.parameters(), lr)
    rng = numpy_rng(seed, stream, 1)
    users = torch.from_numpy(np.asarray(ratings.users, np.int64))
    items = torch.from_numpy(np.asarray(ratings.items, np.int64))
    values = torch.from_numpy(np.asarray(ratings.values, np.float32))
    report = MFReport(epochs=epochs)
    for _ in range(epochs):
        total, batches = 0.0, 0
        for idx in minibatches(len(ratings), batch_size, rng):
            b = torch.from_numpy(idx)
            loss = torch.mean((model(users[b], items[b]) - values[b]) ** 2)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
        report.train_mse.append(total / max(batches, 1))
    report.seconds = clock.seconds
    return model, report
