"""PrivNet (privacy-aware transfer for cross-domain recommendation), built for split learning.

The source network and the target network belong to different parties. What crosses between
them during training is exactly two arrays per step:

    source -> target   x_trans [U_b, trans_dim]   the transferred representation of the batch's users
    target -> source   dL_T/dx_trans [U_b, trans_dim]

One training step of a multi-party run (Algorithm 1 of the paper):
  source: adversary_step(...) x adv_steps       attacker update on public users (x_trans detached)
  target: batch = its ExampleStream.next_batch(); users, inv = np.unique(batch.users, return_inverse=True)
  source: x, x_live = transfer_for_step(source, q_hist[users], q_cand[users])   x -> target
  target: loss_T, grad = target_step(target, opt, batch, x, inv)                -> source
  source: source_step(source, adversary, opt, its own batch, x_live, labels[users], grad, lam)
`train_privnet_joint` runs exactly these calls in one process; `recommender_step_joint` is the
plain one-graph PyTorch step they agree with (tested to 1e-6). Each party clips the gradient
norm of its own parameters only (neither can see the other's), and the joint step does the same.

Architecture (paper §4.1, Table 2): item embeddings of size 80 (Glorot uniform, padding id
`n_items` is a fixed zero vector), an attention user encoder over the last `WINDOW` items, an MLP
[80, 64] -> 1 on [x_u, x_i], one transfer layer x_trans = H [x_u, x_j] (no bias) that the target
adds to its first layer: h1 = act(W1 [x_u, x_i] + b1 + x_trans). Hidden activations are ReLU and
the output is a logit trained with binary cross-entropy (sigmoid), as in the CoNet/NCF code the
paper builds on. A user's released representation is source.transfer of a fixed per-user query
(`user_query`): the w items before the user's last source item, with that last item as candidate;
a target example of user u uses that same x_trans. Held-out candidates are scored with the
user's last w training items as history (`eval_inputs`, `score_candidates`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.lib.stride_tricks import sliding_window_view
from torch import nn

from .data import RankingData
from .metrics import ranking_metrics
from .training import (
    EarlyStopping,
    PairIndex,
    Stopwatch,
    TrainReport,
    adam,
    clip_and_step,
    numpy_rng,
    sample_negatives,
    torch_generator,
)

WINDOW = 10
DEFAULT_ATTRIBUTES: Mapping[str, int] = {"gender": 2, "age_group": 3}
_MASKED = -1e9  # attention logit of padded slots: exp() underflows to exactly 0 in float32
EVAL_CHUNK_ROWS = 65536  # (user, candidate) rows per forward pass at evaluation time

# Independent RNG streams of one seed, so that each party can reproduce its own draws alone.
STREAM_TARGET_EXAMPLES = 10
STREAM_SOURCE_EXAMPLES = 20
STREAM_PUBLIC_USERS = 30


def _as_long(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return x.long() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x, dtype=np.int64))


def _glorot_linear(layer: nn.Linear, gen: torch.Generator) -> nn.Linear:
    nn.init.xavier_uniform_(layer.weight, generator=gen)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------


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

    def __init__(self, n_items: int, dim: int, hidden: Sequence[int], gen: torch.Generator):
        super().__init__()
        if n_items < 1 or dim < 1 or len(hidden) < 1 or min(hidden) < 1:
            raise ValueError(f"need n_items, dim >= 1 and a non-empty hidden list; got {n_items}, {dim}, {hidden}")
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
        h = F.relu(z1)
        for layer in self.layers[1:]:
            h = F.relu(layer(h))
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
    ):
        super().__init__()
        gen = torch_generator(seed, 101)
        self.tower = _Tower(n_items, dim, hidden, gen)
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
    ):
        super().__init__()
        if trans_dim != hidden[0]:
            raise ValueError(
                f"trans_dim ({trans_dim}) must equal the target's first hidden size ({hidden[0]}): "
                f"x_trans is added to W1 [x_u, x_i]; build the source with trans_dim={hidden[0]}"
            )
        self.trans_dim = int(trans_dim)
        self.tower = _Tower(n_items, dim, hidden, torch_generator(seed, 202))

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
            if known.any():
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


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def _left_padded_windows(histories: Sequence[np.ndarray], n_items: int, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every item at position c of every history: (user, window of the items before c, item).

    Fully vectorised: histories are laid end to end, each preceded by `window` padding ids,
    and window views are taken at every real item's position.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros((0, window), np.int64), np.zeros(0, np.int64)
    items = np.concatenate([np.asarray(h, dtype=np.int64) for h in histories])
    if items.min() < 0 or items.max() >= n_items:
        raise ValueError(f"history item ids must lie in [0, {n_items}); got [{items.min()}, {items.max()}]")
    users = np.repeat(np.arange(len(histories), dtype=np.int64), lengths)
    # position of each item in the padded sequence: its index + window * (user index + 1)
    pos = np.arange(total) + window * (users + 1)
    seq = np.full(total + window * len(histories), n_items, dtype=np.int64)
    seq[pos] = items
    views = sliding_window_view(seq, window)
    return users, views[pos - window], items


def sliding_examples(
    histories: Sequence[np.ndarray],
    n_items: int,
    window: int = WINDOW,
    *,
    rng: np.random.Generator,
    n_neg: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Training examples of PrivNet §4.4: (users [N], hist [N, w], cand [N], label [N] float32).

    Positives: sliding over each user's time-ordered training items, item c (c >= 2, 1-based)
    with the up to w items before it as history, left-padded with `n_items`. Each positive gets
    `n_neg` negatives with the same history and a random item the user never trained on.
    `histories[u]` is user u's history, so users are indices into `histories`.
    """
    pos = _positive_examples(histories, n_items, window)
    return _with_negatives(*pos, PairIndex(*_pairs(histories), n_items), n_items, rng, n_neg)


def _pairs(histories: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = [len(h) for h in histories]
    users = np.repeat(np.arange(len(histories), dtype=np.int64), lengths)
    items = np.concatenate([np.asarray(h, np.int64) for h in histories]) if users.size else np.zeros(0, np.int64)
    return users, items


def _positive_examples(histories: Sequence[np.ndarray], n_items: int, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    users, hist, items = _left_padded_windows(histories, n_items, window)
    keep = hist[:, -1] != n_items  # drop each user's first item: it has no history (c >= 2)
    return users[keep], np.ascontiguousarray(hist[keep]), items[keep]


def _with_negatives(
    users: np.ndarray,
    hist: np.ndarray,
    cand: np.ndarray,
    seen: PairIndex,
    n_items: int,
    rng: np.random.Generator,
    n_neg: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if n_neg < 0:
        raise ValueError(f"n_neg must be >= 0, got {n_neg}")
    neg_users = np.tile(users, n_neg)
    neg_items = sample_negatives(neg_users, n_items, seen, rng)
    label = np.concatenate([np.ones(users.size, np.float32), np.zeros(neg_users.size, np.float32)])
    return (
        np.concatenate([users, neg_users]),
        np.concatenate([hist] + [hist] * n_neg, axis=0),
        np.concatenate([cand, neg_items]),
        label,
    )


def user_query(histories: Sequence[np.ndarray], n_items: int, window: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """Per user, the fixed input whose transfer() is the user's released representation.

    hist [U, w] = the w items before the last training item (left-padded), cand [U] = the last
    training item. A user with no items gets all padding (and x_trans = 0).
    """
    users, hist, items = _left_padded_windows(histories, n_items, window)
    q_hist = np.full((len(histories), window), n_items, dtype=np.int64)
    q_cand = np.full(len(histories), n_items, dtype=np.int64)
    if users.size:
        last = np.r_[users[1:] != users[:-1], True]  # last item of each user
        q_hist[users[last]] = hist[last]
        q_cand[users[last]] = items[last]
    return q_hist, q_cand


def eval_inputs(
    histories: Sequence[np.ndarray],
    candidates: np.ndarray,
    n_items: int,
    window: int = WINDOW,
    users: np.ndarray | None = None,
) -> np.ndarray:
    """History [U, w] for scoring held-out candidates [U, C]: each user's last w training items.

    Row r uses histories[users[r]] (or histories[r] when `users` is None).
    """
    candidates = np.asarray(candidates)
    rows = np.arange(len(histories)) if users is None else np.asarray(users, dtype=np.int64)
    if candidates.ndim != 2 or candidates.shape[0] != rows.shape[0]:
        raise ValueError(f"candidates must be [U, C] with U = {rows.shape[0]} users, got {candidates.shape}")
    out = np.full((rows.shape[0], window), n_items, dtype=np.int64)
    for r, u in enumerate(rows):
        h = np.asarray(histories[u], dtype=np.int64)[-window:]
        if h.size:
            out[r, window - h.size :] = h
    return out


@torch.no_grad()
def score_candidates(
    target: PrivNetTarget,
    hist: np.ndarray,
    candidates: np.ndarray,
    x_trans: np.ndarray | None,
) -> np.ndarray:
    """Target logits for every (user, candidate): hist [U, w], candidates [U, C], x_trans [U, d] -> [U, C]."""
    hist = np.asarray(hist, dtype=np.int64)
    candidates = np.asarray(candidates, dtype=np.int64)
    u, c = candidates.shape
    if hist.shape[0] != u or (x_trans is not None and np.asarray(x_trans).shape[0] != u):
        raise ValueError(
            f"hist, candidates and x_trans need the same number of rows; got {hist.shape[0]}, {u}, "
            f"{None if x_trans is None else np.asarray(x_trans).shape[0]}"
        )
    was_training = target.training
    target.eval()
    out = np.empty((u, c), dtype=np.float32)
    per_chunk = max(1, EVAL_CHUNK_ROWS // max(c, 1))
    x_all = None if x_trans is None else torch.as_tensor(np.asarray(x_trans, dtype=np.float32))
    for s in range(0, u, per_chunk):
        sl = slice(s, s + per_chunk)
        x = None if x_all is None else x_all[sl]
        out[sl] = target.score(torch.from_numpy(hist[sl]), torch.from_numpy(candidates[sl]), x).numpy()
    target.train(was_training)
    return out


# --------------------------------------------------------------------------------------------
# Batching (each party owns the stream of its own examples)
# --------------------------------------------------------------------------------------------


@dataclass
class ExampleBatch:
    users: np.ndarray  # [B] user ids
    hist: np.ndarray  # [B, w]
    cand: np.ndarray  # [B]
    label: np.ndarray  # [B] float32 (1 positive, 0 negative)


class ExampleStream:
    """Endless shuffled mini-batches of sliding-window examples; fresh negatives every pass."""

    def __init__(
        self,
        histories: Sequence[np.ndarray],
        n_items: int,
        window: int,
        batch_size: int,
        rng: np.random.Generator,
        n_neg: int = 1,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._pos = _positive_examples(histories, n_items, window)
        if self._pos[0].size == 0:
            raise ValueError("no training examples: every user has fewer than 2 training items in this domain")
        self._seen = PairIndex(*_pairs(histories), n_items)
        self.n_items, self.batch_size, self.rng, self.n_neg = n_items, batch_size, rng, n_neg
        self.n_examples = self._pos[0].size * (1 + n_neg)
        self.steps_per_epoch = -(-self.n_examples // batch_size)
        self._data: tuple[np.ndarray, ...] | None = None
        self._order = np.zeros(0, np.int64)
        self._cursor = 0

    def next_batch(self) -> ExampleBatch:
        if self._cursor >= self._order.size:
            self._data = _with_negatives(*self._pos, self._seen, self.n_items, self.rng, self.n_neg)
            self._order = self.rng.permutation(self.n_examples)
            self._cursor = 0
        idx = self._order[self._cursor : self._cursor + self.batch_size]
        self._cursor += self.batch_size
        users, hist, cand, label = (a[idx] for a in self._data)
        return ExampleBatch(users, hist, cand, label)


class UserStream:
    """Endless shuffled mini-batches of user ids (the public users for adversary updates)."""

    def __init__(self, users: np.ndarray, batch_size: int, rng: np.random.Generator):
        self.users = np.asarray(users, dtype=np.int64)
        self.batch_size, self.rng = batch_size, rng
        self._order = np.zeros(0, np.int64)
        self._cursor = 0

    def next_batch(self) -> np.ndarray:
        if self.users.size == 0:
            return self.users
        if self._cursor >= self._order.size:
            self._order = self.rng.permutation(self.users)
            self._cursor = 0
        out = self._order[self._cursor : self._cursor + self.batch_size]
        self._cursor += self.batch_size
        return out


# --------------------------------------------------------------------------------------------
# Step functions (what each party runs; the joint loop runs the same ones)
# --------------------------------------------------------------------------------------------


def _bce(logits: torch.Tensor, label: np.ndarray) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.as_tensor(label, dtype=torch.float32))


def _labels_tensor(labels: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: _as_long(v) for k, v in labels.items()}


def adversary_step(
    source: PrivNetSource,
    adversary: AttributeAdversary,
    optimizer: torch.optim.Optimizer,
    q_hist: np.ndarray,
    q_cand: np.ndarray,
    labels: Mapping[str, np.ndarray],
    clip: float | None = 5.0,
) -> float:
    """Algorithm 1 lines 1-3: update the attacker on public users' x_trans (detached from the source)."""
    with torch.no_grad():
        x = source.transfer(q_hist, q_cand)
    optimizer.zero_grad(set_to_none=True)
    loss = adversary.loss(x, _labels_tensor(labels))
    loss.backward()
    clip_and_step(list(adversary.parameters()), optimizer, clip)
    return loss.item()


@torch.no_grad()
def source_transfer(source: PrivNetSource, q_hist: np.ndarray, q_cand: np.ndarray) -> np.ndarray:
    """x_trans [U, trans_dim] float32 for the users' queries (a release: no graph kept)."""
    return source.transfer(q_hist, q_cand).numpy().astype(np.float32, copy=False)


def transfer_for_step(source: PrivNetSource, q_hist: np.ndarray, q_cand: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
    """What the source sends in a training step, and the same x_trans with its autograd graph.

    The source keeps the live tensor until the target's gradient arrives and hands it to
    `source_step`: nothing changes the source network in between, so this is the tensor a
    recomputation would give, without the second forward pass.
    """
    x = source.transfer(q_hist, q_cand)
    return x.detach().numpy().astype(np.float32, copy=False), x


def target_step(
    target: PrivNetTarget,
    optimizer: torch.optim.Optimizer,
    batch: ExampleBatch,
    x_trans: np.ndarray | None,
    user_index: np.ndarray | None = None,
    clip: float | None = 5.0,
) -> tuple[float, np.ndarray | None]:
    """Target update on its batch; returns (L_T, dL_T/dx_trans [U_b, d]) for the source.

    `x_trans` has one row per distinct user of the batch; `user_index[b]` is the row of example b.
    With x_trans None the step is target-only and no gradient is returned.
    """
    optimizer.zero_grad(set_to_none=True)
    x = None
    if x_trans is not None:
        if user_index is None:
            raise ValueError("user_index is required with x_trans (row of x_trans for each example)")
        x = torch.tensor(np.asarray(x_trans, dtype=np.float32), requires_grad=True)
    logits = target(batch.hist, batch.cand, None if x is None else x[_as_long(user_index)])
    loss = _bce(logits, batch.label)
    loss.backward()
    clip_and_step(list(target.parameters()), optimizer, clip)
    return loss.item(), None if x is None else x.grad.numpy()


def source_step(
    source: PrivNetSource,
    adversary: AttributeAdversary,
    optimizer: torch.optim.Optimizer,
    batch: ExampleBatch,
    x_trans: torch.Tensor | None,
    q_labels: Mapping[str, np.ndarray] | None,
    x_trans_grad: np.ndarray | None,
    lam: float = 1.0,
    clip: float | None = 5.0,
) -> dict[str, float]:
    """Source update: minimise L_S - lam * L_adv, plus L_T through x_trans via the target's gradient.

    `x_trans` is the live tensor of `transfer_for_step` for the users the target's gradient
    refers to (None: no transfer this step). Backprops x_trans.backward(grad) together with the
    source's own loss. Only the source's parameters receive gradients (the adversary is updated
    in `adversary_step`).
    """
    optimizer.zero_grad(set_to_none=True)
    params = list(source.parameters())
    loss_s = _bce(source(batch.hist, batch.cand), batch.label)
    objective = loss_s
    loss_adv = torch.zeros(())
    if x_trans is None and x_trans_grad is not None:
        raise ValueError("a gradient for x_trans needs the x_trans it refers to")
    if lam and q_labels is not None and x_trans is not None:
        loss_adv = adversary.loss(x_trans, _labels_tensor(q_labels))
        objective = objective - lam * loss_adv
    roots, grads = [objective], [torch.ones(())]
    if x_trans_grad is not None:
        g = torch.as_tensor(np.asarray(x_trans_grad, dtype=np.float32))
        if g.shape != x_trans.shape:
            raise ValueError(f"x_trans_grad must have shape {tuple(x_trans.shape)}, got {tuple(g.shape)}")
        roots.append(x_trans)
        grads.append(g)
    torch.autograd.backward(roots, grads, inputs=params)
    clip_and_step(params, optimizer, clip)
    return {"loss_S": loss_s.item(), "loss_adv_rec": loss_adv.item()}


def recommender_step_joint(
    source: PrivNetSource,
    target: PrivNetTarget,
    adversary: AttributeAdversary,
    opt_source: torch.optim.Optimizer,
    opt_target: torch.optim.Optimizer,
    t_batch: ExampleBatch,
    s_batch: ExampleBatch,
    q_hist: np.ndarray,
    q_cand: np.ndarray,
    user_index: np.ndarray,
    q_labels: Mapping[str, np.ndarray] | None,
    lam: float = 1.0,
    clip: float | None = 5.0,
) -> dict[str, float]:
    """Algorithm 1 line 4 as one autograd graph: minimise L_T + L_S - lam * L_adv.

    The plain single-process reference that the split steps must reproduce. Each network's
    gradient is clipped separately, as the parties do.
    """
    opt_source.zero_grad(set_to_none=True)
    opt_target.zero_grad(set_to_none=True)
    x = source.transfer(q_hist, q_cand)
    loss_t = _bce(target(t_batch.hist, t_batch.cand, x[_as_long(user_index)]), t_batch.label)
    loss_s = _bce(source(s_batch.hist, s_batch.cand), s_batch.label)
    total = loss_t + loss_s
    loss_adv = torch.zeros(())
    if lam and q_labels is not None:
        loss_adv = adversary.loss(x, _labels_tensor(q_labels))
        total = total - lam * loss_adv
    s_params, t_params = list(source.parameters()), list(target.parameters())
    total.backward(inputs=s_params + t_params)
    clip_and_step(t_params, opt_target, clip)
    clip_and_step(s_params, opt_source, clip)
    return {"loss_T": loss_t.item(), "loss_S": loss_s.item(), "loss_adv_rec": loss_adv.item()}


# --------------------------------------------------------------------------------------------
# Reference training loops
# --------------------------------------------------------------------------------------------


def public_users_of(public_labels: Mapping[str, np.ndarray]) -> np.ndarray:
    """Users with at least one known attribute (label >= 0)."""
    known = np.zeros(len(next(iter(public_labels.values()))), dtype=bool)
    for v in public_labels.values():
        known |= np.asarray(v) >= 0
    return np.flatnonzero(known)


def transferred_representations(source: PrivNetSource, histories: Sequence[np.ndarray], window: int = WINDOW) -> np.ndarray:
    """Every user's released x_u|trans [n_users, trans_dim] from their source histories."""
    return source_transfer(source, *user_query(histories, source.n_items, window))


def evaluate_privnet(
    target: PrivNetTarget,
    target_data: RankingData,
    x_trans_all: np.ndarray | None,
    split: str = "valid",
    window: int = WINDOW,
    k: int = 10,
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Ranking metrics of the target on `split`; returns (metrics, users, scores [U, C])."""
    users, cands = target_data.candidates(split)
    if users.size == 0:
        raise ValueError(f"target domain has no users with a {split} item; cannot evaluate")
    hist = eval_inputs(target_data.histories(), cands, target_data.n_items, window, users=users)
    scores = score_candidates(target, hist, cands, None if x_trans_all is None else x_trans_all[users])
    return ranking_metrics(scores, k), users, scores


def _check_labels(public_labels: Mapping[str, np.ndarray], n_users: int, adversary: AttributeAdversary) -> dict[str, np.ndarray]:
    labels = {k: np.asarray(v, dtype=np.int64) for k, v in public_labels.items()}
    for name, c in adversary.n_classes.items():
        if name not in labels:
            raise KeyError(f"public_labels lacks {name!r}; give -1 for users whose value is unknown")
        v = labels[name]
        if v.shape != (n_users,) or v.max(initial=-1) >= c or v.min(initial=-1) < -1:
            raise ValueError(f"public_labels[{name!r}] must be [n_users={n_users}] in {{-1, 0..{c - 1}}}")
    return labels


def train_privnet_joint(
    source_data: RankingData,
    target_data: RankingData,
    public_labels: Mapping[str, np.ndarray],
    *,
    lam: float = 1.0,
    epochs: int = 50,
    batch_size: int = 128,
    lr: float = 5e-4,
    clip: float | None = 5.0,
    seed: int = 0,
    patience: int = 5,
    dim: int = 80,
    hidden: Sequence[int] = (80, 64),
    adv_hidden: Sequence[int] = (64,),
    adv_steps: int = 1,
    adv_lr: float | None = None,
    window: int = WINDOW,
    single_graph: bool = False,
    max_steps_per_epoch: int | None = None,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[PrivNetSource, PrivNetTarget, AttributeAdversary, TrainReport]:
    """Algorithm 1 in one process: per step (1) adversary update(s), (2) recommender update.

    An epoch is one pass over the target's examples; the source's examples and the public users
    cycle through their own shuffled streams (independent RNG streams of `seed`, so each party
    can reproduce its own draws). With `single_graph` the recommender update runs as one
    autograd graph (`recommender_step_joint`); otherwise it runs the split steps exchanging
    numpy arrays exactly as the parties do; both give the same parameters. Early stopping on
    the target's validation HR@10; the best epoch's weights of all three networks are restored.

    `adv_steps` attacker updates per recommender update (paper: 1) and the attacker's own
    learning rate `adv_lr` (default `lr`) matter: -lam * L_adv rewards making a stale attacker
    confidently wrong, which flips the attribute in x_trans instead of removing it. On ML-100K
    (year split, 5 seeds, through the parties) the paper's setting lowered the best attacker's
    gender AUC from 0.603 (lam = 0) to 0.54-0.57 for lam in 0.1..1 (README, "PrivNet results");
    on the small synthetic set of the tests it was erratic (one seed in three leaked more than
    lam = 0), while 5 attacker steps at lr 1e-2 were not.
    `max_steps_per_epoch` caps an epoch (for tests and smoke runs).
    """
    if source_data.n_users != target_data.n_users:
        raise ValueError(f"source and target must share user ids; got {source_data.n_users} vs {target_data.n_users} users")
    if adv_steps < 0 or epochs < 1:
        raise ValueError(f"need adv_steps >= 0 and epochs >= 1; got {adv_steps}, {epochs}")
    clock = Stopwatch()
    source = PrivNetSource(source_data.n_items, dim, hidden, seed=seed)
    target = PrivNetTarget(target_data.n_items, dim, hidden, trans_dim=source.trans_dim, seed=seed)
    adversary = AttributeAdversary(source.trans_dim, adv_hidden, seed=seed)
    labels = _check_labels(public_labels, target_data.n_users, adversary)
    opt_s = adam(source.parameters(), lr)
    opt_t = adam(target.parameters(), lr)
    opt_a = adam(adversary.parameters(), lr if adv_lr is None else adv_lr)

    s_hist_all = source_data.histories()
    q_hist_all, q_cand_all = user_query(s_hist_all, source_data.n_items, window)
    t_stream = ExampleStream(target_data.histories(), target_data.n_items, window, batch_size, numpy_rng(seed, STREAM_TARGET_EXAMPLES))
    s_stream = ExampleStream(s_hist_all, source_data.n_items, window, batch_size, numpy_rng(seed, STREAM_SOURCE_EXAMPLES))
    pub_stream = UserStream(public_users_of(labels), batch_size, numpy_rng(seed, STREAM_PUBLIC_USERS))
    steps = t_stream.steps_per_epoch if max_steps_per_epoch is None else min(t_stream.steps_per_epoch, max_steps_per_epoch)

    modules = {"source": source, "target": target, "adversary": adversary}
    stopper = EarlyStopping("HR@10", patience)
    history: list[dict[str, Any]] = []
    epoch = 0
    for epoch in range(1, epochs + 1):
        sums = {"loss_T": 0.0, "loss_S": 0.0, "loss_adv": 0.0, "loss_adv_rec": 0.0}
        for _ in range(steps):
            for _ in range(adv_steps):
                pub = pub_stream.next_batch()
                if pub.size:
                    sums["loss_adv"] += (
                        adversary_step(
                            source, adversary, opt_a, q_hist_all[pub], q_cand_all[pub], {k: v[pub] for k, v in labels.items()}, clip
                        )
                        / adv_steps
                    )
            tb, sb = t_stream.next_batch(), s_stream.next_batch()
            users_b, inv = np.unique(tb.users, return_inverse=True)
            q_labels = {k: v[users_b] for k, v in labels.items()}
            if single_graph:
                out = recommender_step_joint(
                    source,
                    target,
                    adversary,
                    opt_s,
                    opt_t,
                    tb,
                    sb,
                    q_hist_all[users_b],
                    q_cand_all[users_b],
                    inv,
                    q_labels,
                    lam,
                    clip,
                )
            else:
                x, x_live = transfer_for_step(source, q_hist_all[users_b], q_cand_all[users_b])
                loss_t, grad = target_step(target, opt_t, tb, x, inv, clip)
                out = source_step(source, adversary, opt_s, sb, x_live, q_labels, grad, lam, clip)
                out["loss_T"] = loss_t
            for k_, v_ in out.items():
                sums[k_] += v_
        valid, _, _ = evaluate_privnet(target, target_data, transferred_representations(source, s_hist_all, window), "valid", window)
        row = {"epoch": epoch, **{k: v / steps for k, v in sums.items()}, **{f"valid_{k}": v for k, v in valid.items()}}
        history.append(row)
        stopper.update(epoch, valid, modules)
        if progress is not None:
            progress(epoch, {k: v for k, v in row.items() if k != "epoch"})
        if stopper.should_stop:
            break
    stopper.restore_best(modules)
    for m in modules.values():
        m.eval()
    report = TrainReport(epoch, stopper.best_epoch, stopper.best_metrics, history, clock.seconds)
    return source, target, adversary, report


def train_privnet_target_only(
    target_data: RankingData,
    *,
    epochs: int = 50,
    batch_size: int = 128,
    lr: float = 5e-4,
    clip: float | None = 5.0,
    seed: int = 0,
    patience: int = 5,
    dim: int = 80,
    hidden: Sequence[int] = (80, 64),
    window: int = WINDOW,
    max_steps_per_epoch: int | None = None,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[PrivNetTarget, TrainReport]:
    """The target network alone (no transfer; the paper's MLP baseline), same examples and stopping."""
    clock = Stopwatch()
    target = PrivNetTarget(target_data.n_items, dim, hidden, trans_dim=hidden[0], seed=seed)
    opt_t = adam(target.parameters(), lr)
    t_stream = ExampleStream(target_data.histories(), target_data.n_items, window, batch_size, numpy_rng(seed, STREAM_TARGET_EXAMPLES))
    steps = t_stream.steps_per_epoch if max_steps_per_epoch is None else min(t_stream.steps_per_epoch, max_steps_per_epoch)
    stopper = EarlyStopping("HR@10", patience)
    history: list[dict[str, Any]] = []
    epoch = 0
    for epoch in range(1, epochs + 1):
        total = 0.0
        for _ in range(steps):
            loss, _ = target_step(target, opt_t, t_stream.next_batch(), None, None, clip)
            total += loss
        valid, _, _ = evaluate_privnet(target, target_data, None, "valid", window)
        row = {"epoch": epoch, "loss_T": total / steps, **{f"valid_{k}": v for k, v in valid.items()}}
        history.append(row)
        stopper.update(epoch, valid, {"target": target})
        if progress is not None:
            progress(epoch, {k: v for k, v in row.items() if k != "epoch"})
        if stopper.should_stop:
            break
    stopper.restore_best({"target": target})
    target.eval()
    return target, TrainReport(epoch, stopper.best_epoch, stopper.best_metrics, history, clock.seconds)
