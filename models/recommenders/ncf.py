"""Neural collaborative filtering, NeuMF (He et al. 2017; paper 004's "NCF"): a GMF branch
(user and item embeddings of size 8, multiplied element-wise) and an MLP branch (user and item
embeddings of size 32, concatenated, then hidden layers 64-32-16 with ReLU), joined by one
linear output; binary cross-entropy on each interaction and 4 items drawn uniformly among
those the user never interacted with (redrawn every epoch); Adam 1e-3, batch 256, 20 epochs.

Fold-in: a user the network was not trained on gets fresh user embeddings (both branches),
trained on their own history and sampled non-interacted items with the same loss and
optimiser while every item embedding and network weight stays frozen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..training import PairIndex, Stopwatch, adam, minibatches, numpy_rng, torch_generator
from .base import Recommender, check_histories, sample_unseen

DEFAULTS = {
    "ncf_gmf_dim": 8,
    "ncf_mlp": [64, 32, 16],
    "ncf_epochs": 20,
    "ncf_lr": 1e-3,
    "ncf_batch": 256,
    "ncf_negatives": 4,
    "fold_in_epochs": 20,
}
EMBED_STD = 0.01
SCORE_CHUNK = 512  # users scored per forward pass


class NeuMF(nn.Module):
    def __init__(self, n_users: int, n_items: int, gmf_dim: int, mlp: Sequence[int], seed: int):
        super().__init__()
        if not mlp or mlp[0] % 2:
            raise ValueError(f"the MLP's first layer takes the two embeddings concatenated: give an even size, got {list(mlp)}")
        gen = torch_generator(seed, 41)
        half = mlp[0] // 2
        self.gmf_user = nn.Parameter(torch.randn(n_users, gmf_dim, generator=gen) * EMBED_STD)
        self.gmf_item = nn.Parameter(torch.randn(n_items, gmf_dim, generator=gen) * EMBED_STD)
        self.mlp_user = nn.Parameter(torch.randn(n_users, half, generator=gen) * EMBED_STD)
        self.mlp_item = nn.Parameter(torch.randn(n_items, half, generator=gen) * EMBED_STD)
        sizes = [mlp[0], *mlp]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(gmf_dim + sizes[-1], 1)
        for layer in (*self.layers, self.out):  # Glorot weights from our own generator, zero biases
            nn.init.xavier_uniform_(layer.weight, generator=gen)
            nn.init.zeros_(layer.bias)

    def logits(self, gmf_u: torch.Tensor, mlp_u: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits for user embeddings [B, .] against items [B] (or [B, C] -> [B, C])."""
        if items.dim() == 2:
            gmf_u, mlp_u = gmf_u[:, None, :].expand(-1, items.shape[1], -1), mlp_u[:, None, :].expand(-1, items.shape[1], -1)
        h = torch.cat([mlp_u, self.mlp_item[items]], dim=-1)
        for layer in self.layers:
            h = F.relu(layer(h))
        return self.out(torch.cat([gmf_u * self.gmf_item[items], h], dim=-1)).squeeze(-1)


def _train_epochs(
    model: NeuMF, params: list[nn.Parameter], gmf: nn.Parameter, mlp: nn.Parameter, rows: np.ndarray, items: np.ndarray, n_items: int,
    options: dict[str, Any], epochs: int, rng: np.random.Generator,
) -> list[float]:  # fmt: skip
    """Epochs of BCE on (row, item) positives and uniform negatives, updating `params` only."""
    seen = PairIndex(rows, items, n_items)
    n_neg, batch = int(options["ncf_negatives"]), int(options["ncf_batch"])
    opt = adam(params, float(options["ncf_lr"]))
    losses = []
    for _ in range(epochs):
        neg_rows = np.repeat(rows, n_neg)
        neg, valid = sample_unseen(neg_rows, n_items, seen, rng)
        u_all = np.concatenate([rows, neg_rows[valid]])
        i_all = np.concatenate([items, neg[valid]])
        y_all = np.concatenate([np.ones(rows.size), np.zeros(int(valid.sum()))]).astype(np.float32)
        total = 0.0
        for idx in minibatches(u_all.size, batch, rng):
            u = torch.from_numpy(u_all[idx])
            logit = model.logits(gmf[u], mlp[u], torch.from_numpy(i_all[idx]))
            loss = F.binary_cross_entropy_with_logits(logit, torch.from_numpy(y_all[idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.size
        losses.append(total / u_all.size)
    return losses


class NCF(Recommender):
    name = "ncf"

    def _options(self) -> dict[str, Any]:
        return {k: self.options.get(k, v) for k, v in DEFAULTS.items()}

    def _fit(self, rows: np.ndarray, items: np.ndarray) -> dict[str, Any]:
        opts = self._options()
        clock = Stopwatch()
        self.model = NeuMF(self.users.size, self.n_items, int(opts["ncf_gmf_dim"]), list(opts["ncf_mlp"]), self.seed)
        m = self.model
        epochs = int(opts["ncf_epochs"])
        losses = _train_epochs(
            m, list(m.parameters()), m.gmf_user, m.mlp_user, rows, items, self.n_items, opts, epochs, numpy_rng(self.seed, 42)
        )
        m.eval()
        return {"epochs": epochs, "final_loss": losses[-1] if losses else None, "seconds": clock.seconds}

    @torch.no_grad()
    def _scores(self, gmf: torch.Tensor, mlp: torch.Tensor) -> np.ndarray:
        all_items = torch.arange(self.n_items)
        out = np.empty((gmf.shape[0], self.n_items), dtype=np.float32)
        for s in range(0, gmf.shape[0], SCORE_CHUNK):
            g, h = gmf[s : s + SCORE_CHUNK], mlp[s : s + SCORE_CHUNK]
            out[s : s + SCORE_CHUNK] = self.model.logits(g, h, all_items.expand(g.shape[0], -1)).numpy()
        return out

    def member_scores(self, users: np.ndarray) -> np.ndarray:
        rows = torch.from_numpy(self.rows_of(users))
        return self._scores(self.model.gmf_user[rows], self.model.mlp_user[rows])

    def fold_in_scores(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
        opts = self._options()
        users = np.asarray(users, dtype=np.int64)
        if users.size == 0:
            return np.zeros((0, self.n_items), dtype=np.float32)
        m = self.model
        gen = torch_generator(self.seed, 43)
        gmf = nn.Parameter(torch.randn(users.size, m.gmf_user.shape[1], generator=gen) * EMBED_STD)
        mlp = nn.Parameter(torch.randn(users.size, m.mlp_user.shape[1], generator=gen) * EMBED_STD)
        with_history = {i: np.asarray(h) for i, h in enumerate(histories) if len(h)}
        if with_history:
            _, rows, items = check_histories(with_history, self.n_items)
            rows = np.array(sorted(with_history), dtype=np.int64)[rows]  # back to positions in `users`
            frozen = [p for p in m.parameters() if p.requires_grad]
            for p in frozen:
                p.requires_grad_(False)
            try:
                _train_epochs(
                    m, [gmf, mlp], gmf, mlp, rows, items, self.n_items, opts, int(opts["fold_in_epochs"]), numpy_rng(self.seed, 44)
                )
            finally:
                for p in frozen:
                    p.requires_grad_(True)
        return self._scores(gmf.detach(), mlp.detach())
