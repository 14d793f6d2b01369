"""Meta matrix factorization (MetaMF) for rating prediction, and NoMetaMF.

A user's own rating model is generated from a collaborative vector:

    e_u = user embedding (32)                      c_u = e_u M, with the memory M (32 x 128)
    per generator g: h_g = ReLU(Linear(128, 512)(c_u))
      prediction layers  W1 (32 x 8), b1 (8)   from h_1;   W2 (8 x 1), b2 (1)   from h_2
      private item embeddings  V_u = L_u R_u  with L_u (|I| x 8), R_u (8 x 32)   from h_3
    r_hat(u, i) = ReLU(V_u[i] W1 + b1) W2 + b2

trained with MSE. NoMetaMF is the same network with the generators of the prediction layers
(h_1 and h_2 and their heads) frozen at their initial values: every user gets a fixed function
of c_u as prediction layers, so only the embeddings, the memory and the item-embedding
generator learn.

Initialisation as the public code does it: Xavier-normal weights and zero biases for every
linear layer, Xavier-normal memory, N(0, 1) user embeddings.

Optimisation (`MetaMFTrainer`): Adam (lr 1e-4, L2 weight decay 1e-3 added to the gradient),
batches of 64 ratings, gradient norm clipped at 5 over every trained parameter. One
implementation choice keeps a step cheap: the head that generates L_u has |I| x 8 x 512
weights (6.9 M on ML-100K) of which a batch reads only its items' rows. The forward pass reads
just those rows, and that head is updated lazily: Adam (with the same weight decay and its own
step count per item) on the rows of the batch's items only, while every other parameter gets
the dense update. A dense update of that head would move untouched rows only through weight
decay and momentum, at the price of a ~30 MB update per 64 ratings.

All randomness comes from explicit seeds (models.training); with one torch thread, training
and prediction are bitwise reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import Ratings
from .training import minibatches, numpy_rng, torch_generator

__all__ = ["MetaMF", "MetaMFConfig", "MetaMFTrainer", "PREDICT_CHUNK_USERS"]

PREDICT_CHUNK_USERS = 64  # users per forward pass when predicting every item (bounds memory)
STREAM_INIT = 7301  # torch stream of the initial weights
STREAM_BATCHES = 7302  # numpy stream of the batch order


@dataclass(frozen=True)
class MetaMFConfig:
    """Sizes (the public code's defaults) and whether the prediction layers are meta-learned."""

    user_dim: int = 32
    memory: int = 128
    hidden: int = 512
    item_dim: int = 32
    item_rank: int = 8
    layer_dim: int = 8
    meta: bool = True  # False: NoMetaMF (prediction-layer generators frozen at init)


class MetaMF(nn.Module):
    def __init__(self, n_users: int, n_items: int, config: MetaMFConfig = MetaMFConfig(), *, seed: int = 0):
        super().__init__()
        c = self.config = config
        self.n_users, self.n_items = int(n_users), int(n_items)
        self.user_embedding = nn.Embedding(n_users, c.user_dim)
        self.memory = nn.Parameter(torch.empty(c.user_dim, c.memory))
        # generator of prediction layer 1 (item_dim -> layer_dim) and layer 2 (layer_dim -> 1)
        self.hidden1 = nn.Linear(c.memory, c.hidden)
        self.weight1 = nn.Linear(c.hidden, c.item_dim * c.layer_dim)
        self.bias1 = nn.Linear(c.hidden, c.layer_dim)
        self.hidden2 = nn.Linear(c.memory, c.hidden)
        self.weight2 = nn.Linear(c.hidden, c.layer_dim)
        self.bias2 = nn.Linear(c.hidden, 1)
        # generator of the private item embeddings: L_u from per-item rows, R_u from one head
        self.hidden3 = nn.Linear(c.memory, c.hidden)
        self.left = nn.Parameter(torch.empty(n_items, c.item_rank, c.hidden))  # Linear(hidden, |I| * rank), row-blocked by item
        self.left_bias = nn.Parameter(torch.zeros(n_items, c.item_rank))
        self.right = nn.Linear(c.hidden, c.item_rank * c.item_dim)
        self._init(seed)
        if not c.meta:
            for module in self.prediction_generators():
                module.requires_grad_(False)

    def _init(self, seed: int) -> None:
        g = torch_generator(seed, STREAM_INIT)
        with torch.no_grad():
            nn.init.normal_(self.user_embedding.weight, generator=g)
            nn.init.xavier_normal_(self.memory, generator=g)
            for lin in (self.hidden1, self.weight1, self.bias1, self.hidden2, self.weight2, self.bias2, self.hidden3, self.right):
                nn.init.xavier_normal_(lin.weight, generator=g)
                nn.init.zeros_(lin.bias)
            fan_in, fan_out = self.config.hidden, self.n_items * self.config.item_rank
            self.left.normal_(0.0, math.sqrt(2.0 / (fan_in + fan_out)), generator=g)

    def prediction_generators(self) -> list[nn.Module]:
        """What NoMetaMF freezes: the generators of the prediction layers."""
        return [self.hidden1, self.weight1, self.bias1, self.hidden2, self.weight2, self.bias2]

    # ----------------------------------------------------------------- forward
    def collaborative(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_embedding(users) @ self.memory

    def _layers(self, cf: torch.Tensor) -> tuple[torch.Tensor, ...]:
        c = self.config
        h1, h2 = F.relu(self.hidden1(cf)), F.relu(self.hidden2(cf))
        w1 = self.weight1(h1).view(-1, c.item_dim, c.layer_dim)
        w2 = self.weight2(h2).view(-1, c.layer_dim, 1)
        return w1, self.bias1(h1), w2, self.bias2(h2)

    def forward(
        self, users: torch.Tensor, items: torch.Tensor, rows: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Predicted ratings of (users[b], items[b]). `rows` = (weights, biases, index): the
        item rows of the L_u head to use instead of gathering them from `left` (the trainer
        passes its own leaf copies of the batch's rows)."""
        c = self.config
        cf = self.collaborative(users)
        w1, b1, w2, b2 = self._layers(cf)
        h3 = F.relu(self.hidden3(cf))
        if rows is None:
            lw, lb = self.left[items], self.left_bias[items]
        else:
            lw, lb = rows[0][rows[2]], rows[1][rows[2]]
        left = torch.einsum("bh,brh->br", h3, lw) + lb  # [B, rank]: this item's row of L_u
        right = self.right(h3).view(-1, c.item_rank, c.item_dim)
        v = torch.bmm(left.unsqueeze(1), right)  # [B, 1, item_dim]
        out = F.relu(torch.bmm(v, w1) + b1.unsqueeze(1))
        return (torch.bmm(out, w2).squeeze(-1).squeeze(-1)) + b2.squeeze(-1)

    @torch.no_grad()
    def predict_all(self, users: np.ndarray | None = None) -> np.ndarray:
        """[len(users), n_items] float32: every item's predicted rating for each user (all users
        by default), in chunks of PREDICT_CHUNK_USERS users. Float results depend on the chunks
        (matrix products round differently by shape): for rows that never depend on who else is
        asked for, predict all users and take rows."""
        c = self.config
        users = np.arange(self.n_users) if users is None else np.asarray(users, dtype=np.int64)
        out = np.empty((users.size, self.n_items), dtype=np.float32)
        left_w = self.left.reshape(self.n_items * c.item_rank, c.hidden)
        left_b = self.left_bias.reshape(-1)
        for start in range(0, users.size, PREDICT_CHUNK_USERS):
            u = torch.as_tensor(users[start : start + PREDICT_CHUNK_USERS])
            cf = self.collaborative(u)
            w1, b1, w2, b2 = self._layers(cf)
            h3 = F.relu(self.hidden3(cf))
            left = F.linear(h3, left_w, left_b).view(-1, self.n_items, c.item_rank)
            right = self.right(h3).view(-1, c.item_rank, c.item_dim)
            hidden = F.relu(torch.bmm(torch.bmm(left, right), w1) + b1.unsqueeze(1))  # [U, I, layer_dim]
            out[start : start + u.numel()] = (torch.bmm(hidden, w2).squeeze(-1) + b2).numpy()
        return out

    @torch.no_grad()
    def user_vectors(self) -> np.ndarray:
        """The learned user embeddings e_u, [n_users, user_dim] float32."""
        return self.user_embedding.weight.detach().numpy().astype(np.float32).copy()


class MetaMFTrainer:
    """Adam with L2 weight decay and gradient clipping over MetaMF's trained parameters; the
    L_u head's rows are updated lazily (module docstring). `epoch(ratings)` is one pass over
    the given ratings in an order drawn from (seed, epoch)."""

    def __init__(
        self,
        model: MetaMF,
        *,
        lr: float = 1e-4,
        weight_decay: float = 1e-3,
        batch_size: int = 64,
        clip: float = 5.0,
        seed: int = 0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        self.model = model
        self.lr, self.weight_decay, self.batch_size, self.clip = float(lr), float(weight_decay), int(batch_size), float(clip)
        self.seed, self.betas, self.eps = int(seed), betas, eps
        lazy = {id(model.left), id(model.left_bias)}
        self.dense = [p for p in model.parameters() if p.requires_grad and id(p) not in lazy]
        self.opt = torch.optim.Adam(self.dense, lr=self.lr, weight_decay=self.weight_decay, fused=True)
        self.rows_m = [torch.zeros_like(model.left), torch.zeros_like(model.left_bias)]
        self.rows_v = [torch.zeros_like(model.left), torch.zeros_like(model.left_bias)]
        self.row_steps = torch.zeros(model.n_items, dtype=torch.int64)
        self.epochs = 0

    def epoch(self, ratings: Ratings) -> float:
        """One pass over `ratings` (shuffled); returns the mean training MSE."""
        self.epochs += 1
        model = self.model
        model.train()
        users = torch.as_tensor(np.asarray(ratings.users, dtype=np.int64))
        items = torch.as_tensor(np.asarray(ratings.items, dtype=np.int64))
        values = torch.as_tensor(np.asarray(ratings.values, dtype=np.float32))
        total, n = 0.0, 0
        for idx in minibatches(len(ratings), self.batch_size, numpy_rng(self.seed, STREAM_BATCHES, self.epochs)):
            b = torch.as_tensor(idx)
            loss = self.step(users[b], items[b], values[b])
            total += loss * b.numel()
            n += b.numel()
        return total / max(n, 1)

    def step(self, users: torch.Tensor, items: torch.Tensor, values: torch.Tensor) -> float:
        model = self.model
        uniq, index = torch.unique(items, return_inverse=True)
        rows_w = model.left.detach()[uniq].clone().requires_grad_(True)
        rows_b = model.left_bias.detach()[uniq].clone().requires_grad_(True)
        self.opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(model(users, items, rows=(rows_w, rows_b, index)), values)
        loss.backward()
        grads = [p.grad for p in self.dense if p.grad is not None] + [rows_w.grad, rows_b.grad]
        if self.clip:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            scale = self.clip / (norm + 1e-6)
            if scale < 1:
                for g in grads:
                    g.mul_(scale)
        self.opt.step()
        self._lazy_step(uniq, [rows_w, rows_b])
        return float(loss.detach())

    @torch.no_grad()
    def _lazy_step(self, uniq: torch.Tensor, rows: list[torch.Tensor]) -> None:
        """Adam with L2 weight decay on the rows `uniq` of the L_u head, each row with its own
        step count (the bias correction of a row counts the steps that updated it)."""
        b1, b2 = self.betas
        self.row_steps[uniq] += 1
        t = self.row_steps[uniq].to(torch.float64)
        step = (-self.lr / (1 - b1**t)).to(torch.float32)
        root = torch.sqrt(1 - b2**t).to(torch.float32)
        for param, leaf, m_all, v_all in zip((self.model.left, self.model.left_bias), rows, self.rows_m, self.rows_v):
            shape = (-1,) + (1,) * (leaf.dim() - 1)
            p, g = leaf.detach(), leaf.grad
            g.add_(p, alpha=self.weight_decay)
            m = m_all[uniq].mul_(b1).add_(g, alpha=1 - b1)
            v = v_all[uniq].mul_(b2).addcmul_(g, g, value=1 - b2)
            m_all[uniq], v_all[uniq] = m, v
            denom = v.sqrt_().div_(root.view(shape)).add_(self.eps)
            p.add_(m.div_(denom).mul_(step.view(shape)))
            param[uniq] = p

    # ----------------------------------------------------------------- checkpoints
    def state(self) -> dict[str, torch.Tensor]:
        """The model's weights (what early stopping keeps)."""
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
