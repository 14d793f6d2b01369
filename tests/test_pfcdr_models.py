"""PFCDR's models: bias-free MF, conditional model inversion, the bridge and top-k matching.

Thresholds on model outcomes come from runs over seeds 0-9 with torch.set_num_threads(2)
(the measured range is written next to each assertion); the tests use seed 0.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from models.bridge import apply_bridge, topk_user_means, train_bridge
from models.data import Ratings
from models.inversion import invert_users, lr_at
from models.mf import train_mf


class TensorShapes(TorchDispatchMode):
    """Records the shape of every tensor an operation produces (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: set[tuple[int, ...]] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.shapes.add(tuple(t.shape))
        return out


def planted_vectors(seed: int, n_users: int = 60, n_items: int = 1000, dim: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """User and item vectors like a trained bias-free MF's on ML-100K (about 1000 source items,
    <U_u, V_i> around 3.2): a shared direction plus spread."""
    rng = np.random.default_rng(seed)
    common = rng.normal(0, 1, dim)
    common /= np.linalg.norm(common)
    users = 1.8 * common + rng.normal(0, 0.4, (n_users, dim))
    items = 1.8 * common + rng.normal(0, 0.5, (n_items, dim))
    return users.astype(np.float32), items.astype(np.float32)


def planted_ratings(seed: int, n_users: int = 400, n_items: int = 150, per_user: int = 40, noise: float = 0.3) -> tuple[Ratings, Ratings]:
    """(train, held-out) ratings 1-5 from a rank-2 taste model plus a user bias."""
    rng = np.random.default_rng(seed)
    theta, phi = rng.normal(0, 1, (n_users, 2)), rng.normal(0, 0.8, (n_items, 2))
    bias = rng.normal(0, 0.8, n_users)
    users = np.repeat(np.arange(n_users), per_user)
    items = np.concatenate([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)])
    values = np.clip(np.rint(3 + bias[users] + (theta[users] * phi[items]).sum(1) + rng.normal(0, noise, users.size)), 1, 5)
    ratings = Ratings(users.astype(np.int64), items.astype(np.int64), values.astype(np.float32))
    held = rng.random(users.size) < 0.2
    return ratings.select(~held), ratings.select(held)


def test_inversion_reaches_the_target_rating_and_never_forms_a_batch_items_dim_tensor():
    users, items = planted_vectors(0)
    batch = 16
    recorder = TensorShapes()
    with recorder:
        prototypes, report = invert_users(users, items, seed=0, batch_size=batch)
    reached = np.abs((users.astype(np.float64) * prototypes).sum(axis=1) - 5.0)
    # Seeds 0-9: the largest |<U_u, P_u> - 5| over 60 users was 1.2e-6 to 7.1e-5; 0.01 is over
    # 100 times the worst and still a tenth of a rating step. (With 400 items the weakest users
    # stopped short, by up to 0.23: 300 steps of 1e-4 move each weight by at most ~0.015.)
    assert reached.max() < 0.01
    assert report.final_abs_error["max"] == pytest.approx(reached.max(), abs=1e-5)
    assert report.initial_abs_error > 1.0  # softmax(randn) mixes every item: far from 5 at the start
    n_items, dim = items.shape
    # The prototype is weights @ items: no [batch, items, dim] tensor, forward or backward; the
    # largest tensor is the batch's weight matrix.
    assert not any(len(s) >= 3 for s in recorder.shapes)
    assert max(int(np.prod(s)) for s in recorder.shapes) == batch * n_items
    again, _ = invert_users(users[:batch], items, seed=0, batch_size=batch)
    np.testing.assert_array_equal(prototypes[:batch], again)  # seeded: the same first batch, the same prototypes


def test_inversion_schedule_warms_up_then_decays_by_cosine():
    lrs = [lr_at(s, lr=1e-4, iterations=300, warmup=10) for s in range(300)]
    assert lrs[0] == pytest.approx(1e-5) and lrs[9] == pytest.approx(1e-4)
    assert lrs[10] == pytest.approx(1e-4) and lrs[155] == pytest.approx(0.5e-4, rel=0.02)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 1e-8


def test_mf_learns_planted_ratings_better_than_item_means():
    train, held = planted_ratings(0)
    model, report = train_mf(train, 400, 150, seed=0, dim=10, epochs=10, lr=0.01, batch_size=512, init_std=0.1)
    mf_mae = float(np.mean(np.abs(model.predict(held.users, held.items) - held.values)))
    sums = np.bincount(train.items, weights=train.values, minlength=150)
    item_mean = sums / np.maximum(np.bincount(train.items, minlength=150), 1)
    item_mae = float(np.mean(np.abs(item_mean[held.items] - held.values)))
    # Seeds 0-9: MF MAE / item-mean MAE was 0.63-0.76 (mean 0.70, SD 0.037); 0.85 is 4 SD
    # above the mean and 0.09 above the worst.
    assert mf_mae < 0.85 * item_mae
    assert report.train_mse[-1] < report.train_mse[0]
    again, _ = train_mf(train, 400, 150, seed=0, dim=10, epochs=10, lr=0.01, batch_size=512, init_std=0.1)
    np.testing.assert_array_equal(model.user_vectors(), again.user_vectors())


def test_untrained_rows_keep_their_initial_vectors():
    train, _ = planted_ratings(0)
    seen = train.select(train.users < 300)  # users 300-399 never appear
    model, _ = train_mf(seen, 400, 150, seed=0, epochs=2, init_std=0.1)
    fresh, _ = train_mf(seen, 400, 150, seed=0, epochs=0, init_std=0.1)
    np.testing.assert_array_equal(model.user_vectors()[300:], fresh.user_vectors()[300:])
    assert not np.allclose(model.user_vectors()[:300], fresh.user_vectors()[:300])


def test_bridge_recovers_a_planted_linear_map():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (300, 6))
    true = rng.normal(0, 0.5, (6, 6))
    y = x @ true.T + rng.normal(0, 0.05, (300, 6))
    weights, losses = train_bridge(x, y, seed=0, epochs=60, lr=5e-3, batch_size=32)
    error = np.linalg.norm(weights[-1] - true) / np.linalg.norm(true)
    # Seeds 0-9: relative error 0.0045-0.028 after 60 epochs (mean 0.010, SD 0.007); 0.1 is
    # 13 SD above the mean and over 3 times the worst.
    assert error < 0.1
    assert len(weights) == 60 and losses[-1] < losses[0]
    np.testing.assert_allclose(apply_bridge(weights[-1], x[:3]), x[:3] @ weights[-1].T)


def test_topk_user_means_average_the_users_best_aligned_with_each_query():
    rng = np.random.default_rng(1)
    queries, users = rng.normal(0, 1, (7, 4)), rng.normal(0, 1, (50, 4))
    found = topk_user_means(queries, users, [1, 5, 50], target=2.0)
    for q, query in enumerate(queries):
        order = np.argsort(np.abs(2.0 - users @ query), kind="stable")
        for k in (1, 5, 50):
            np.testing.assert_allclose(found[k][q], users[order[:k]].mean(axis=0), atol=1e-12)
    with pytest.raises(ValueError, match="every k"):
        topk_user_means(queries, users, [0])
