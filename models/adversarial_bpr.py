"""Privacy-adversarial BPR-MF: user vectors trained to rank items and to hide attributes.

A BPR-MF (models/bprmf.py) learns user and item vectors; for each hidden attribute a linear
readout (a linear map and softmax; logistic regression for a binary attribute) learns to
predict it from the user vector. The readouts' gradient reaches the user vectors through a
gradient-reversal layer scaled by lambda, so per training pair the user vector p_u descends

    dL_BPR/dp_u - lambda * dL_readouts/dp_u

while the readouts descend dL_readouts (their own optimiser and learning rate) and the item
vectors and biases follow BPR alone (the privacy-adversarial BPR paper, §3.1). lambda = 0 is
plain BPR-MF: with the same seed it trains exactly the model `train_bprmf` trains.

Readouts see only users whose labels the trainer holds (label >= 0); every other user's vector
follows BPR alone. The readout loss of a batch is the mean cross-entropy over the batch's pairs
whose user is labelled, so a user's two gradients stay in proportion lambda whatever its number
of interactions.

Also here: accuracy@k over the full catalogue, the paper's utility: each user's held-out item
ranked against every item of the domain the user never interacted with, ties counted against
the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .bprmf import BPRMF, bpr_batch_terms
from .data import RankingData
from .metrics import ranking_metrics
from .training import EarlyStopping, PairIndex, Stopwatch, TrainReport, minibatches, numpy_rng, sample_negatives, torch_generator

__all__ = ["AdversarialBPR", "GradientReversal", "catalogue_hits", "reverse_gradient", "train_adversarial_bpr"]

CATALOGUE_CHUNK_USERS = 1024  # users scored against the whole catalogue per pass


class GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by -scale."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = float(scale)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


def reverse_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    return GradientReversal.apply(x, scale)


class Readouts(nn.Module):
    """One linear readout (logits over its classes) per attribute, read from the user vector."""

    def __init__(self, dim: int, classes: Mapping[str, int], seed: int = 0):
        super().__init__()
        gen = torch_generator(seed, 7)
        self.heads = nn.ModuleDict()
        for name, k in classes.items():
            head = nn.Linear(dim, int(k))
            bound = 1.0 / dim**0.5  # nn.Linear's own initialisation, drawn from our generator
            with torch.no_grad():
                head.weight.uniform_(-bound, bound, generator=gen)
                head.bias.uniform_(-bound, bound, generator=gen)
            self.heads[name] = head

    def forward(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: head(p) for name, head in self.heads.items()}


@dataclass
class AdversarialBPR:
    """The trained recommender and its readouts."""

    recommender: BPRMF
    readouts: Readouts
    lam: float

    def user_vectors(self) -> np.ndarray:
        return self.recommender.user_vectors()

    @torch.no_grad()
    def readout_proba(self, users: np.ndarray) -> dict[str, np.ndarray]:
        """Each readout's class probabilities for `users` (what the trainer's own readouts say)."""
        p = self.recommender.user_emb[torch.from_numpy(np.asarray(users, dtype=np.int64))]
        return {name: F.softmax(z, dim=1).numpy() for name, z in self.readouts(p).items()}


@dataclass
class AdversarialReport(TrainReport):
    readout_history: list[dict[str, float]] = field(default_factory=list)


def _labels(attributes: Mapping[str, np.ndarray], n_users: int) -> dict[str, torch.Tensor]:
    out = {}
    for name, y in attributes.items():
        y = np.asarray(y, dtype=np.int64)
        if y.shape != (n_users,):
            raise ValueError(f"attribute {name!r} must have one label per user ({n_users}), got shape {y.shape}")
        out[name] = torch.from_numpy(y)
    return out


def train_adversarial_bpr(
    data: RankingData,
    attributes: Mapping[str, np.ndarray],
    classes: Mapping[str, int],
    *,
    lam: float = 0.0,
    dim: int = 64,
    epochs: int = 40,
    lr: float = 5e-3,
    adv_lr: float | None = None,
    weight_decay: float = 1e-2,
    batch_size: int = 1024,
    seed: int = 0,
    patience: int = 5,
) -> tuple[AdversarialBPR, AdversarialReport]:
    """Train BPR-MF with a reversed-gradient readout per attribute; early stopping on validation
    HR@10 (99 sampled negatives; the test split is never read). `attributes` maps a name to one
    label per user (-1: unknown to the trainer, no readout loss), `classes` to its class count.
    The optimisation of the recommender is `train_bprmf`'s (Adam, one sampled negative per
    positive, L2 on the batch's rows); the readouts have their own Adam at `adv_lr` (default
    `lr`). Returns the model with the best validation epoch's weights (readouts included)."""
    if data.n_train == 0:
        raise ValueError("no training positives: cannot train BPR-MF on an empty domain")
    if lam < 0 or epochs < 1:
        raise ValueError(f"need lam >= 0 and epochs >= 1, got {lam}, {epochs}")
    if set(attributes) != set(classes):
        raise ValueError(f"attributes {sorted(attributes)} and classes {sorted(classes)} must name the same readouts")
    clock = Stopwatch()
    rng = numpy_rng(seed, 1)
    model = BPRMF(data.n_users, data.n_items, dim, seed=seed)
    readouts = Readouts(dim, classes, seed=seed)
    labels = _labels(attributes, data.n_users)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    opt_readouts = torch.optim.Adam(readouts.parameters(), lr=lr if adv_lr is None else adv_lr)
    seen = PairIndex(data.train_users, data.train_items, data.n_items)
    users_all = data.train_users.astype(np.int64)
    items_all = data.train_items.astype(np.int64)
    stopper = EarlyStopping("HR@10", patience)
    history: list[dict] = []
    readout_history: list[dict[str, float]] = []
    epoch = 0
    for epoch in range(1, epochs + 1):
        model.train()
        neg_all = sample_negatives(users_all, data.n_items, seen, rng)
        total, n = 0.0, 0
        adv_total = {name: [0.0, 0] for name in labels}
        for idx in minibatches(users_all.shape[0], batch_size, rng):
            u = torch.from_numpy(users_all[idx])
            i = torch.from_numpy(items_all[idx])
            j = torch.from_numpy(neg_all[idx])
            p, loss, reg = bpr_batch_terms(model, u, i, j)
            adv = p.new_zeros(())
            logits = readouts(reverse_gradient(p, lam))
            for name, z in logits.items():
                y = labels[name][u]
                known = y >= 0
                if bool(known.any()):
                    ce = F.cross_entropy(z[known], y[known])
                    adv = adv + ce
                    adv_total[name][0] += float(ce.detach()) * int(known.sum())
                    adv_total[name][1] += int(known.sum())
            opt.zero_grad(set_to_none=True)
            opt_readouts.zero_grad(set_to_none=True)
            (loss + weight_decay * reg + adv).backward()
            opt.step()
            opt_readouts.step()
            total += loss.item() * idx.size
            n += idx.size
        readout_history.append({name: s / max(c, 1) for name, (s, c) in adv_total.items()})
        row: dict = {"epoch": epoch, "loss": total / n, **{f"readout_ce_{k}": v for k, v in readout_history[-1].items()}}
        users, cands = data.candidates("valid")
        if users.size == 0:
            raise ValueError("no users with a valid item; cannot evaluate or early-stop")
        valid = ranking_metrics(model.score(users, cands), 10)
        row.update({f"valid_{k}": v for k, v in valid.items()})
        stopper.update(epoch, valid, {"model": model, "readouts": readouts})
        history.append(row)
        if stopper.should_stop:
            break
    stopper.restore_best({"model": model, "readouts": readouts})
    model.eval()
    report = AdversarialReport(
        epochs_run=epoch,
        best_epoch=stopper.best_epoch,
        best_valid=stopper.best_metrics,
        history=history,
        seconds=clock.seconds,
        readout_history=readout_history,
    )
    return AdversarialBPR(model, readouts, float(lam)), report


def catalogue_hits(model: BPRMF, data: RankingData, split: str = "test", k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(users, hit@k per user) of `split`'s held-out item ranked against every item of the
    domain the user never interacted with (training positives, held-out items and other
    ratings are all excluded). Ties count against the model: an item scored equal to the
    held-out one ranks above it."""
    users = data.eval_users(split)
    held = (data.test_items if split == "test" else data.valid_items)[users]
    known_users, known_items = data.known_pairs()
    order = np.argsort(known_users, kind="stable")
    known_users, known_items = known_users[order], known_items[order]
    bounds = np.searchsorted(known_users, np.arange(data.n_users + 1))
    hits = np.zeros(users.size, dtype=np.float64)
    for s in range(0, users.size, CATALOGUE_CHUNK_USERS):
        chunk = users[s : s + CATALOGUE_CHUNK_USERS]
        with torch.no_grad():
            p = model.user_repr(torch.from_numpy(chunk.astype(np.int64)))
            scores = (p @ model.item_emb.T + model.item_bias).numpy().astype(np.float64)
        rows = np.arange(chunk.size)
        positive = scores[rows, held[s : s + chunk.size]].copy()
        mask_rows = np.concatenate([np.full(bounds[u + 1] - bounds[u], r) for r, u in enumerate(chunk)])
        mask_cols = np.concatenate([known_items[bounds[u] : bounds[u + 1]] for u in chunk])
        scores[mask_rows, mask_cols] = -np.inf  # the held-out item is among them: it never outranks itself
        rank = (scores >= positive[:, None]).sum(axis=1)
        hits[s : s + chunk.size] = rank < k
    return users, hits
