"""MetaMF and NoMetaMF (models/metamf.py): the network, its prediction path, and the trainer's
lazy update of the item-embedding head against plain dense Adam."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from models.data import Ratings
from models.metamf import MetaMF, MetaMFConfig, MetaMFTrainer

SMALL = MetaMFConfig(user_dim=8, memory=16, hidden=24, item_dim=8, item_rank=4, layer_dim=4)


def _ratings(n_users: int, n_items: int, seed: int = 0) -> Ratings:
    """Every (user, item) pair rated 1-5 (a dense toy matrix)."""
    rng = np.random.default_rng(seed)
    users, items = np.meshgrid(np.arange(n_users), np.arange(n_items), indexing="ij")
    values = rng.integers(1, 6, size=users.size).astype(np.float32)
    return Ratings(users.ravel().astype(np.int64), items.ravel().astype(np.int64), values)


def test_predict_all_matches_the_training_forward():
    model = MetaMF(7, 5, SMALL, seed=3)
    grid = model.predict_all()
    users, items = np.meshgrid(np.arange(7), np.arange(5), indexing="ij")
    with torch.no_grad():
        pairs = model(torch.as_tensor(users.ravel()), torch.as_tensor(items.ravel())).numpy()
    assert grid.shape == (7, 5) and grid.dtype == np.float32
    np.testing.assert_allclose(grid.ravel(), pairs, rtol=1e-5, atol=1e-6)
    assert np.array_equal(model.predict_all(), grid)  # bitwise repeatable


def test_same_seed_same_model_and_training():
    data = _ratings(6, 5)
    states = []
    for _ in range(2):
        model = MetaMF(6, 5, SMALL, seed=11)
        trainer = MetaMFTrainer(model, lr=1e-2, batch_size=4, seed=11)
        trainer.epoch(data)
        states.append(trainer.state())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    other = MetaMF(6, 5, SMALL, seed=12).state_dict()
    assert not torch.equal(other["memory"], MetaMF(6, 5, SMALL, seed=11).state_dict()["memory"])


def test_nometamf_freezes_only_the_prediction_layer_generators():
    model = MetaMF(6, 5, MetaMFConfig(**{**SMALL.__dict__, "meta": False}), seed=1)
    frozen = {id(p) for m in model.prediction_generators() for p in m.parameters()}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    MetaMFTrainer(model, lr=1e-2, batch_size=8, seed=1).epoch(_ratings(6, 5))
    for name, p in model.named_parameters():
        changed = not torch.equal(before[name], p.detach())
        assert changed != (id(p) in frozen), name
        assert p.requires_grad != (id(p) in frozen), name


def test_lazy_item_head_update_is_dense_adam_when_every_item_is_in_every_batch():
    """With all items in every batch, the lazily updated rows see exactly Adam's update: the
    trainer (gathered rows, lazy Adam with per-row steps, clip over everything) must match
    torch's Adam with weight decay and clip_grad_norm_ on the plain model. Tolerance: float32
    rounding of the two formulations (observed differences < 1e-7)."""
    data = _ratings(6, 5)
    lr, wd, clip = 5e-3, 1e-3, 0.5  # a small clip, so that clipping is exercised
    ours = MetaMF(6, 5, SMALL, seed=5)
    trainer = MetaMFTrainer(ours, lr=lr, weight_decay=wd, clip=clip, batch_size=len(data), seed=5)
    ref = MetaMF(6, 5, SMALL, seed=5)
    params = [p for p in ref.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=wd)
    users, items, values = (torch.as_tensor(a) for a in (data.users, data.items, data.values))
    for _ in range(4):
        trainer.epoch(data)  # one batch of every rating (in a shuffled order: the loss is a mean)
        opt.zero_grad()
        F.mse_loss(ref(users, items), values).backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
    for (name, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_untouched_item_rows_stay_put():
    """Rows of items no batch contains are not updated (no weight-decay drift)."""
    data = _ratings(6, 5).select(np.arange(30) % 5 != 4)  # item 4 never rated
    model = MetaMF(6, 5, SMALL, seed=2)
    before = model.left.detach()[4].clone()
    MetaMFTrainer(model, lr=1e-2, batch_size=6, seed=2).epoch(data)
    assert torch.equal(model.left.detach()[4], before)
    assert not torch.equal(model.left.detach()[0], MetaMF(6, 5, SMALL, seed=2).left.detach()[0])
