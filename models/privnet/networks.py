"""PrivNet's networks: the attention user encoder, the source network with the translation
matrix H, the target network that adds x_u|trans at its first layer, and the simulated attacker."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..training import torch_generator

WINDOW = 10
ACTIVATIONS = {"relu": F.relu, "sigmoid": torch.sigmoid}
DEFAULT_ATTRIBUTES: Mapping[str, int] = {"gender": 2, "age_group": 3}
_MASKED = -1e9  # attention logit of padded slots: exp() underflows to exactly 0 in float32
EVAL_CHUNK_ROWS = 65536  # (user, candidate) rows per forward pass at evaluation time


def _as_long(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return x.long() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x, dtype=np.int64))


def _glorot_linear(layer: nn.Linear, gen: torch.Generator) -> nn.Linear:
    nn.init.xavier_uniform_(layer.weight, generator=gen)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


class AttentionUserEncoder(nn.Module):
    """x_u = sum_k alpha_k x_k with alpha = softmax_k(x_i . x_k) over the non-padded history.

    Parameter-free: it takes already-embedded items. An empty history gives the zero vector.
    """

    def forward(self, hist_emb: torch.Tensor, cand_emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Broadcast products, not einsum: einsum lowers to a batched matmul of [1, d] x [d, w]
        # blocks, which on CPU costs 3x more (forward + backward) at these sizes.
        logits = (hist_emb * cand_emb.unsqueeze(1)).sum(-1).masked_fill(~mask, _MASKED)
        # For an all-padded row softmax is uniform, but the mask zeroes it: x_u = 0.
        alpha = torch.softmax(logits, dim=1) * mask
        return (alpha.unsqueeze(-1) * hist_emb).sum(1)

    def per_candidate(self, hist_emb: torch.Tensor, cand_emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x_u for C candidates of one history each: hist [U, w, d], cand [U, C, d] -> [U, C, d].

        The same function as `forward` on the history repeated C times, as two real batched
        matmuls ([C, d] x [d, w] per user) instead of C copies of the history (evaluation).
        """
        logits = torch.bmm(cand_emb, hist_emb.transpose(1, 2)).masked_fill(~mask.unsqueeze(1), _MASKED)
        alpha = torch.softmax(logits, dim=2) * mask.unsqueeze(1)
        return torch.bmm(alpha, hist_emb)


class _Tower(nn.Module):
    """Item embeddings + attention encoder + MLP; the part source and target networks share."""

    def __init__(self, n_items: int, dim: int, hidden: Sequence[int], gen: torch.Generator, activation: str = "relu"):
        super().__init__()
        if n_items < 1 or dim < 1 or len(hidden) < 1 or min(hidden) < 1:
            raise ValueError(f"need n_items, dim >= 1 and a non-empty hidden list; got {n_items}, {dim}, {hidden}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")
        self.act = ACTIVATIONS[activation]
        self.n_items, self.dim, self.pad = int(n_items), int(dim), int(n_items)
        self.items = nn.Embedding(n_items + 1, dim, padding_idx=n_items)
        with torch.no_grad():
            nn.init.xavier_uniform_(self.items.weight, generator=gen)
            self.items.weight[n_items].zero_()
        self.encoder = AttentionUserEncoder()
        sizes = [2 * dim, *hidden]
        self.layers = nn.ModuleList(_glorot_linear(nn.Linear(a, b), gen) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = _glorot_linear(nn.Linear(sizes[-1], 1), gen)

    def first_input(self, hist: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """[x_u, x_i]: the layer-1 representation x^1_u."""
        hist, cand = _as_long(hist), _as_long(cand)
        if hist.dim() != 2 or cand.dim() != 1 or hist.shape[0] != cand.shape[0]:
            raise ValueError(f"expected hist [B, w] and cand [B]; got {tuple(hist.shape)} and {tuple(cand.shape)}")
        x_i = self.items(cand)
        x_u = self.encoder(self.items(hist), x_i, hist != self.pad)
        return torch.cat([x_u, x_i], dim=1)

    def first_input_per_candidate(self, hist: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
        """[x_u, x_i] for every (user, candidate): hist [U, w], cands [U, C] -> [U * C, 2 dim]."""
        hist, cands = _as_long(hist), _as_long(cands)
        x_i = self.items(cands)
        x_u = self.encoder.per_candidate(self.items(hist), x_i, hist != self.pad)
        return torch.cat([x_u, x_i], dim=2).reshape(-1, 2 * self.dim)

    def head(self, z1: torch.Tensor) -> torch.Tensor:
        """Everything after the first layer's pre-activation z1."""
        h = self.act(z1)
        for layer in self.layers[1:]:
            h = self.act(layer(h))
        return self.out(h).squeeze(1)


class PrivNetSource(nn.Module):
    """Source network (private to the source party) with the translation matrix H."""

    def __init__(
        self,
        n_items: int,
        dim: int = 80,
        hidden: Sequence[int] = (80, 64),
        seed: int = 0,
        trans_dim: int | None = None,
        activation: str = "relu",
    ):
        super().__init__()
        gen = torch_generator(seed, 101)
        self.tower = _Tower(n_items, dim, hidden, gen, activation)
        self.trans_dim = int(trans_dim if trans_dim is not None else hidden[0])
        self.H = nn.Linear(2 * dim, self.trans_dim, bias=False)
        nn.init.xavier_uniform_(self.H.weight, generator=gen)

    @property
    def n_items(self) -> int:
        return self.tower.n_items

    def forward(self, hist: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """Source logits [B] for (history [B, w], candidate [B])."""
        return self.tower.head(self.tower.layers[0](self.tower.first_input(hist, cand)))

    def transfer(self, hist: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """x_u|trans = H [x_u, x_j] (one transfer layer), shape [B, trans_dim]."""
        return self.H(self.tower.first_input(hist, cand))


class PrivNetTarget(nn.Module):
    """Target network (private to the target party); takes x_trans at its first layer."""

    def __init__(
        self,
        n_items: int,
        dim: int = 80,
        hidden: Sequence[int] = (80, 64),
        trans_dim: int = 80,
        seed: int = 0,
        activation: str = "relu",
    ):
        super().__init__()
        if trans_dim != hidden[0]:
            raise ValueError(
                f"trans_dim ({trans_dim}) must equal the target's first hidden size ({hidden[0]}): "
                f"x_trans is added to W1 [x_u, x_i]; build the source with trans_dim={hidden[0]}"
            )
        self.trans_dim = int(trans_dim)
        self.tower = _Tower(n_items, dim, hidden, torch_generator(seed, 202), activation)

    @property
    def n_items(self) -> int:
        return self.tower.n_items

    def forward(self, hist: torch.Tensor, cand: torch.Tensor, x_trans: torch.Tensor | None) -> torch.Tensor:
        """Target logits [B]; x_trans None means target-only (no transfer)."""
        z1 = self.tower.layers[0](self.tower.first_input(hist, cand))
        if x_trans is not None:
            if x_trans.shape != z1.shape:
                raise ValueError(f"x_trans must have shape {tuple(z1.shape)}, got {tuple(x_trans.shape)}")
            z1 = z1 + x_trans
        return self.tower.head(z1)

    def score(self, hist: torch.Tensor, cands: torch.Tensor, x_trans: torch.Tensor | None) -> torch.Tensor:
        """Logits [U, C] of C candidates per user: hist [U, w], cands [U, C], x_trans [U, d] or None."""
        u, c = cands.shape
        z1 = self.tower.layers[0](self.tower.first_input_per_candidate(hist, cands))
        if x_trans is not None:
            z1 = (z1.reshape(u, c, -1) + x_trans.unsqueeze(1)).reshape(u * c, -1)
        return self.tower.head(z1).reshape(u, c)


class AttributeAdversary(nn.Module):
    """The simulated attacker: a shared MLP on x_trans with one softmax head per attribute."""

    def __init__(
        self,
        in_dim: int = 80,
        hidden: Sequence[int] = (64,),
        n_classes: Mapping[str, int] | None = None,
        seed: int = 0,
    ):
        super().__init__()
        n_classes = dict(DEFAULT_ATTRIBUTES if n_classes is None else n_classes)
        if not n_classes or min(n_classes.values()) < 2:
            raise ValueError(f"n_classes must map each attribute to >= 2 classes, got {n_classes}")
        gen = torch_generator(seed, 303)
        sizes = [in_dim, *hidden]
        self.trunk = nn.ModuleList(_glorot_linear(nn.Linear(a, b), gen) for a, b in zip(sizes[:-1], sizes[1:]))
        self.heads = nn.ModuleDict({k: _glorot_linear(nn.Linear(sizes[-1], c), gen) for k, c in n_classes.items()})
        self.n_classes = n_classes

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = x
        for layer in self.trunk:
            h = F.relu(layer(h))
        return {k: head(h) for k, head in self.heads.items()}

    def _known(self, x_trans: torch.Tensor, labels: Mapping[str, np.ndarray | torch.Tensor]):
        """(logits, labels) per attribute, restricted to rows whose label is known (>= 0)."""
        missing = set(self.heads) - set(labels)
        if missing:
            raise KeyError(f"labels lack attribute(s) {sorted(missing)}; pass -1 for unknown users")
        out = []
        for name, logits in self(x_trans).items():
            y = _as_long(labels[name])
            if y.shape != (x_trans.shape[0],):
                raise ValueError(f"labels[{name!r}] must have shape [{x_trans.shape[0]}], got {tuple(y.shape)}")
            known = y >= 0
            if known.all():  # every label known (the attacker's public batches): no selection needed
                out.append((logits, y))
            elif known.any():
                out.append((logits[known], y[known]))
        return out

    def loss(self, x_trans: torch.Tensor, labels: Mapping[str, np.ndarray | torch.Tensor]) -> torch.Tensor:
        """L(Theta): mean over attributes of the cross-entropy on rows whose label is known.

        Label -1 is ignored; attributes with no known label in the batch are left out of the
        mean; with none at all the loss is a zero that still depends on x_trans (so backward works).
        """
        terms = [F.cross_entropy(logits, y) for logits, y in self._known(x_trans, labels)]
        return torch.stack(terms).mean() if terms else x_trans.sum() * 0.0

    @torch.no_grad()
    def predict_proba(self, x_trans: np.ndarray) -> dict[str, np.ndarray]:
        logits = self(torch.as_tensor(np.asarray(x_trans, dtype=np.float32)))
        return {k: torch.softmax(v, dim=1).numpy() for k, v in logits.items()}
