"""BPR matrix factorisation, optionally fed with fixed per-user features from another party.

score(u, i) = <p_u + W f_u, q_i> + b_i. Without features this is plain BPR-MF (Rendle et al.
2009). With features (e.g. source-domain user embeddings the target received), the learned
map W lets the target use them for users it knows little about (EMCDR-flavoured transfer).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import RankingData
from .metrics import ranking_metrics
from .training import (
    EarlyStopping,
    PairIndex,
    Stopwatch,
    TrainReport,
    minibatches,
    numpy_rng,
    sample_negatives,
    torch_generator,
)

__all__ = ["BPRMF", "OPTIMIZERS", "TrainReport", "train_bprmf", "standardise_features"]

SCORE_CHUNK_USERS = 4096  # users scored per forward pass (bounds memory on large runs)
OPTIMIZERS = ("adam", "lazy-adam")  # train_bprmf's optimisers (its docstring says how they differ)


def standardise_features(features: np.ndarray, n_users: int) -> np.ndarray:
    """Column-wise z-scores as float32. NaN entries (users the sender did not release) become 0,
    i.e. the column mean; constant columns become 0 instead of dividing by zero."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] != n_users:
        raise ValueError(f"user_features must have shape [n_users={n_users}, n_features], got {f.shape}")
    if np.isinf(f).any():
        raise ValueError("user_features contain inf; send finite values (NaN marks a missing user)")
    observed = ~np.isnan(f)
    count = observed.sum(axis=0)
    safe = np.where(observed, f, 0.0)
    mean = safe.sum(axis=0) / np.maximum(count, 1)
    var = (np.where(observed, f - mean, 0.0) ** 2).sum(axis=0) / np.maximum(count, 1)
    std = np.sqrt(var)
    z = (f - mean) / np.where(std > 1e-12, std, 1.0)
    return np.nan_to_num(z, nan=0.0).astype(np.float32)


class BPRMF(nn.Module):
    """User/item embeddings plus an item bias; optional fixed user features through a learned W."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int = 64,
        user_features: np.ndarray | None = None,
        seed: int = 0,
        init_std: float = 0.1,
        sparse_users: bool = False,
    ):
        super().__init__()
        # True: lookups of user rows give sparse gradients (for SparseAdam: "lazy-adam")
        self.sparse_users = bool(sparse_users)
        if n_users < 1 or n_items < 1 or dim < 1:
            raise ValueError(f"need n_users, n_items, dim >= 1; got {n_users}, {n_items}, {dim}")
        self.n_users, self.n_items, self.dim = int(n_users), int(n_items), int(dim)
        gen = torch_generator(seed, 0)
        self.user_emb = nn.Parameter(torch.randn(n_users, dim, generator=gen) * init_std)
        self.item_emb = nn.Parameter(torch.randn(n_items, dim, generator=gen) * init_std)
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        if user_features is not None:
            feats = torch.from_numpy(standardise_features(user_features, n_users))
            self.register_buffer("features", feats)
            # Starts small so training begins close to plain MF and learns how much to trust f.
            self.feature_map = nn.Parameter(torch.randn(dim, feats.shape[1], generator=gen) * (init_std / feats.shape[1] ** 0.5))
        else:
            self.features = None
            self.feature_map = None

    def user_rows(self, users: torch.Tensor) -> torch.Tensor:
        """Rows of the user table. With `sparse_users` their gradient is a sparse tensor that
        names only these rows; otherwise plain indexing (a dense gradient of the whole table)."""
        if self.sparse_users:
            return F.embedding(users, self.user_emb, sparse=True)
        return self.user_emb[users]

    def user_repr(self, users: torch.Tensor) -> torch.Tensor:
        p = self.user_rows(users)
        if self.features is not None:
            p = p + self.features[users] @ self.feature_map.T
        return p

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores for aligned users [B] and items [B] (or [B, C] -> [B, C])."""
        p = self.user_repr(users)
        if items.dim() == 2:
            return torch.einsum("bd,bcd->bc", p, self.item_emb[items]) + self.item_bias[items]
        return (p * self.item_emb[items]).sum(-1) + self.item_bias[items]

    @torch.no_grad()
    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores of candidate items [U, C] for `users` [U] (float32 [U, C]), without gradients."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        if items.ndim != 2 or items.shape[0] != users.shape[0]:
            raise ValueError(f"items must be [len(users), C]; got users {users.shape}, items {items.shape}")
        if items.size and (items.min() < 0 or items.max() >= self.n_items):
            raise ValueError(f"item ids must lie in [0, {self.n_items}); got [{items.min()}, {items.max()}]")
        was_training = self.training
        self.eval()
        out = np.empty(items.shape, dtype=np.float32)
        for s in range(0, users.shape[0], SCORE_CHUNK_USERS):
            u = torch.from_numpy(users[s : s + SCORE_CHUNK_USERS])
            out[s : s + SCORE_CHUNK_USERS] = self(u, torch.from_numpy(items[s : s + SCORE_CHUNK_USERS])).numpy()
        self.train(was_training)
        return out

    @torch.no_grad()
    def user_vectors(self) -> np.ndarray:
        """Effective user vectors p_u + W f_u, float32 [n_users, dim]."""
        return self.user_repr(torch.arange(self.n_users)).numpy().astype(np.float32)


def _evaluate(model: BPRMF, data: RankingData, split: str, k: int = 10) -> dict[str, float]:
    users, cands = data.candidates(split)
    if users.size == 0:
        raise ValueError(f"no users with a {split} item; cannot evaluate or early-stop")
    return ranking_metrics(model.score(users, cands), k)


def bpr_batch_terms(model: BPRMF, u: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batch of (user, positive, negative) triples: the user representations p, the BPR loss
    (mean over the batch) and the L2 term of the embeddings and biases the batch touches (per
    example)."""
    p = model.user_repr(u)
    qi, qj = model.item_emb[i], model.item_emb[j]
    bi, bj = model.item_bias[i], model.item_bias[j]
    loss = -F.logsigmoid((p * (qi - qj)).sum(-1) + bi - bj).mean()
    reg = (model.user_rows(u).square().sum() + qi.square().sum() + qj.square().sum() + bi.square().sum() + bj.square().sum()) / u.shape[0]
    return p, loss, reg


def train_bprmf(
    data: RankingData,
    *,
    dim: int = 64,
    epochs: int = 40,
    lr: float = 5e-3,
    weight_decay: float = 1e-2,
    batch_size: int = 1024,
    user_features: np.ndarray | None = None,
    seed: int = 0,
    patience: int = 5,
    eval_every: int = 1,
    optimizer: str = "adam",
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[BPRMF, TrainReport]:
    """Train BPR-MF with Adam and early stopping on validation HR@10 (the test split is never read).

    Each epoch visits every training positive once, paired with one uniformly drawn item the
    user has not interacted with in training (exact: collisions are redrawn).
    `weight_decay` is the L2 coefficient on the embeddings and biases used in the batch (and on W,
    scaled by batch share), the usual BPR regulariser, rather than Adam's dense decay that would
    shrink every row at every step. Returns the model with the best validation weights restored.

    `optimizer`: "adam" updates every parameter at every step; for the user table that is
    O(n_users) per step, so an epoch costs O(n_users x ratings): quadratic in the users
    (measured: 4x the users, 11x the optimiser time). "lazy-adam" updates only the user rows a
    batch touches (torch.optim.SparseAdam: moments and step of untouched rows wait) and the
    small item tables densely, which keeps an epoch linear; it is a different optimiser (an
    untouched row no longer drifts on its momentum), so its figures differ from "adam"'s.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if data.n_train == 0:
        raise ValueError("no training positives: cannot train BPR-MF on an empty domain")
    if epochs < 1 or eval_every < 1:
        raise ValueError(f"epochs and eval_every must be >= 1, got {epochs}, {eval_every}")
    clock = Stopwatch()
    rng = numpy_rng(seed, 1)
    lazy = optimizer == "lazy-adam"
    model = BPRMF(data.n_users, data.n_items, dim, user_features=user_features, seed=seed, sparse_users=lazy)
    if lazy:
        rest = [p for p in model.parameters() if p is not model.user_emb]
        opts = [torch.optim.SparseAdam([model.user_emb], lr=lr), torch.optim.Adam(rest, lr=lr)]
    else:
        opts = [torch.optim.Adam(model.parameters(), lr=lr)]
    seen = PairIndex(data.train_users, data.train_items, data.n_items)
    users_all = data.train_users.astype(np.int64)
    items_all = data.train_items.astype(np.int64)
    stopper = EarlyStopping("HR@10", patience)
    history: list[dict] = []
    epoch = 0
    for epoch in range(1, epochs + 1):
        model.train()
        neg_all = sample_negatives(users_all, data.n_items, seen, rng)
        total, n = 0.0, 0
        for idx in minibatches(users_all.shape[0], batch_size, rng):
            u = torch.from_numpy(users_all[idx])
            i = torch.from_numpy(items_all[idx])
            j = torch.from_numpy(neg_all[idx])
            _, loss, reg = bpr_batch_terms(model, u, i, j)
            if model.feature_map is not None:
                reg = reg + model.feature_map.square().sum() * (idx.size / users_all.shape[0])
            for opt in opts:
                opt.zero_grad(set_to_none=True)
            (loss + weight_decay * reg).backward()
            for opt in opts:
                opt.step()
            total += loss.item() * idx.size
            n += idx.size
        row: dict = {"epoch": epoch, "loss": total / n}
        if epoch % eval_every == 0 or epoch == epochs:
            valid = _evaluate(model, data, "valid")
            row.update({f"valid_{k}": v for k, v in valid.items()})
            stopper.update(epoch, valid, {"model": model})
            if progress is not None:
                progress(epoch, {"loss": row["loss"], **valid})
        history.append(row)
        if stopper.should_stop:
            break
    stopper.restore_best({"model": model})
    model.eval()
    report = TrainReport(
        epochs_run=epoch,
        best_epoch=stopper.best_epoch,
        best_valid=stopper.best_metrics,
        history=history,
        seconds=clock.seconds,
    )
    return model, report
