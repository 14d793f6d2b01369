"""Tests of the reconstruction attack (attacks/reconstruction.py): metrics against hand-computed
values, the no-artifact baseline at chance, recovery of a planted mapping, CV-only choice of
the mapping, reconstructions usable for attribute inference.

Statistical thresholds as in test_attacks.py: set from the figure's spread over seeds 0-9 and
100-109 (the latter under torch.set_num_threads(2)), outside the observed range by at least
3 standard deviations; the tests run seed 0.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from attacks.attribute import attribute_inference
from attacks.reconstruction import reconstruction_attack, reconstruction_metrics


def test_reconstruction_metrics_hand_computed():
    secret = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    recon = np.array([[2.0, 0.0], [0.0, -1.0], [-0.9, 0.1]])
    m = reconstruction_metrics(secret, recon, top_k=(1, 2))
    # cosines 1, -1 and 0.9 / |(-0.9, 0.1)|
    assert m["cosine"] == pytest.approx((1 - 1 + 0.9 / np.hypot(0.9, 0.1)) / 3)
    # user 0 and 2 are nearest to their own secret; user 1's reconstruction (0, -1) is nearer to
    # secrets 0 and 2 (distance sqrt 2) than to its own (distance 2): rank 3
    assert m["reid_top1"] == pytest.approx(2 / 3) and m["reid_top2"] == pytest.approx(2 / 3) and m["n"] == 3
    # R² variance weighted = 1 - total squared error / total variance around the column means
    err = ((secret - recon) ** 2).sum()
    var = ((secret - secret.mean(axis=0)) ** 2).sum()
    assert m["r2"] == pytest.approx(1 - err / var)
    # a tie counts against the attacker: two identical secrets are never re-identified
    tied = reconstruction_metrics(np.array([[1.0, 1.0], [1.0, 1.0]]), np.array([[1.0, 1.0], [1.0, 1.0]]), top_k=(1,))
    assert tied["reid_top1"] == 0.0


def _secrets(seed: int, noise: float, n: int = 700, dim: int = 16, d: int = 40):
    """Secrets [n, dim] and an artifact: a random non-linear map of them plus noise."""
    rng = np.random.default_rng(40 + seed)
    secret = rng.normal(size=(n, dim))
    artifact = np.tanh(secret @ rng.normal(size=(dim, d)) / np.sqrt(dim)) + noise * rng.normal(size=(n, d))
    return artifact, secret


def _case_leaky(seed: int):
    A, S = _secrets(seed, noise=0.5)
    return reconstruction_attack(A[:500], S[:500], A[500:], S[500:], seed=seed)


def _case_noise(seed: int):
    rng = np.random.default_rng(50 + seed)
    A, S = rng.normal(size=(700, 40)), rng.normal(size=(700, 16))
    return reconstruction_attack(A[:500], S[:500], A[500:], S[500:], seed=seed, estimators=("ridge",))


def test_reconstruction_recovers_a_planted_mapping_far_above_the_baseline():
    res = _case_leaky(0)
    m, b = res.metrics, res.baseline
    # seeds 0-9, 100-109: cosine [0.808, 0.845] (mean - 3 sd 0.803); the baseline's
    # [-0.026, 0.016] (mean +- 3 sd +-0.034)
    assert m["cosine"] > 0.75 and abs(b["cosine"]) < 0.1
    assert m["r2"] > 0.6  # [0.645, 0.700], mean - 3 sd 0.635
    assert m["reid_top1"] > 0.7  # [0.800, 0.925], mean - 3 sd 0.786; chance 1/200
    assert res.estimator in ("ridge", "mlp") and res.cv[res.estimator]["r2"] == max(c["r2"] for c in res.cv.values())
    d = res.to_dict()
    json.dumps(d, allow_nan=False)
    assert set(d) == {"estimator", "metrics", "baseline", "chance", "cv", "ridge_alpha", "selection", "n_train", "n_test", "dim"}
    assert res.train_reconstruction.shape == (500, 16) and res.test_reconstruction.shape == (200, 16)


def test_the_no_artifact_baseline_is_at_chance_and_so_is_noise():
    res = _case_noise(0)
    b, chance = res.baseline, res.chance
    # the mean training secret for everyone: exactly one user is nearest to it, ten are among the ten nearest
    assert chance == {"reid_top1": 1 / 200, "reid_top10": 10 / 200}
    assert b["reid_top1"] == chance["reid_top1"] and b["reid_top10"] == chance["reid_top10"]
    # the training mean, not the test mean, so slightly below 0: seeds 0-9, 100-109
    # [-0.015, -0.005], mean - 3 sd -0.015
    assert abs(b["r2"]) < 0.03
    # an artifact unrelated to the secret: r2 [-0.015, -0.004] (mean - 3 sd -0.016),
    # reid_top10 [0.045, 0.060] (mean + 3 sd 0.061)
    assert abs(res.metrics["r2"]) < 0.03
    assert res.metrics["reid_top10"] < 0.1


def test_no_features_reconstruct_the_mean_and_errors_are_clear():
    rng = np.random.default_rng(0)
    S = rng.normal(size=(30, 4))
    res = reconstruction_attack(np.zeros((20, 0)), S[:20], np.zeros((10, 0)), S[10:20])
    assert res.estimator == "mean" and res.metrics == res.baseline
    np.testing.assert_allclose(res.test_reconstruction, np.tile(S[:20].mean(axis=0), (10, 1)))
    with pytest.raises(ValueError, match="rows differ"):
        reconstruction_attack(np.zeros((20, 3)), S[:19], np.zeros((10, 3)), S[:10])
    with pytest.raises(ValueError, match="estimators"):
        reconstruction_attack(np.zeros((20, 3)), S[:20], np.zeros((10, 3)), S[:10], estimators=("svr",))


def _case_feed(seed: int):
    A, S = _secrets(seed, noise=0.5)
    y = (S[:, 0] > 0).astype(int)  # an attribute carried by the secret
    rec = reconstruction_attack(A[:500], S[:500], A[500:], S[500:], seed=seed, estimators=("ridge",))
    return attribute_inference(
        rec.train_reconstruction, y[:500], rec.test_reconstruction, y[500:], attackers=("lr",), n_classes=2, seed=seed
    )


def test_reconstructions_feed_attribute_inference():
    """The attacker can run attribute inference on what it reconstructed: out-of-fold
    reconstructions of the public users to train, predictions for the private users to test."""
    res = _case_feed(0)
    assert res.metrics["auc"] > 0.75  # seeds 0-9, 100-109: [0.836, 0.936], mean - 3 sd 0.807
