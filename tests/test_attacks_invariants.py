"""What no attack may read: the private (test) users' labels and secrets; and what no result
may depend on: the number of threads.

Each test runs an attack twice, once with the true private labels (or secrets) and once with
them scrambled, and checks that everything the attacker decides is identical: its training
(out-of-fold probabilities), its CV choices (CV AUC, best attacker, decision rule, chosen
release, chosen mapping) and its outputs for the private users (probabilities, guesses,
reconstructions). Only the test metrics, which score those outputs, may differ.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from attacks.attribute import ATTACKERS, attribute_inference
from attacks.reconstruction import reconstruction_attack
from attacks.releases import attribute_inference_over_releases


def _scramble(y: np.ndarray, n_classes: int, seed: int = 99) -> np.ndarray:
    """Every private label changed to another class, chosen at random."""
    return (y + np.random.default_rng(seed).integers(1, n_classes, y.size)) % n_classes


def _data(n_classes: int, seed: int = 0, n: int = 360, d: int = 8):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    X = rng.normal(size=(n, d))
    X[:, :n_classes] += 0.8 * np.eye(n_classes)[y]
    return X, y


def _assert_same_run(a, b) -> None:
    assert a.cv_auc == b.cv_auc and a.decision == b.decision
    np.testing.assert_array_equal(a.oof_proba, b.oof_proba)
    np.testing.assert_array_equal(a.test_proba, b.test_proba)
    np.testing.assert_array_equal(a.test_pred, b.test_pred)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_scrambled_private_labels_change_nothing_the_attacker_decides(n_classes):
    X, y = _data(n_classes)
    X_tr, y_tr, X_te, y_te = X[:260], y[:260], X[260:], y[260:]
    scrambled = _scramble(y_te, n_classes)
    true = attribute_inference(X_tr, y_tr, X_te, y_te, seed=1, n_classes=n_classes)
    fake = attribute_inference(X_tr, y_tr, X_te, scrambled, seed=1, n_classes=n_classes)
    assert list(true.runs) == list(ATTACKERS)
    for name in ATTACKERS:
        _assert_same_run(true.runs[name], fake.runs[name])
    _assert_same_run(true.baseline_run, fake.baseline_run)
    assert true.best == fake.best and true.cv_auc == fake.cv_auc
    assert true.decisions == fake.decisions and true.baseline_decision == fake.baseline_decision
    np.testing.assert_array_equal(true.test_proba, fake.test_proba)
    # the scores of those same guesses do change: the scramble reached the metrics
    assert true.metrics["auc"] != fake.metrics["auc"]


def test_release_selection_never_reads_private_labels():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 300)
    releases = {}
    for r in range(6):
        X = rng.normal(size=(300, 6))
        X[:, 0] += 0.25 * r * y  # later releases leak more
        releases[f"epoch{r}"] = (X[:220], X[220:])
    y_pub, y_priv = y[:220], y[220:]
    true = attribute_inference_over_releases(releases, y_pub, y_priv, seed=2, n_classes=2, shortlist=2)
    fake = attribute_inference_over_releases(releases, y_pub, _scramble(y_priv, 2), seed=2, n_classes=2, shortlist=2)
    assert (true.release, true.attacker) == (fake.release, fake.attacker)
    assert true.shortlist == fake.shortlist and true.candidates_cv_auc == fake.candidates_cv_auc
    for name in releases:
        _assert_same_run(true.curve_runs[name], fake.curve_runs[name])
    for name in true.worst_case.runs:
        _assert_same_run(true.worst_case.runs[name], fake.worst_case.runs[name])
    assert true.worst_case.metrics != fake.worst_case.metrics


def test_reconstruction_never_reads_private_secrets():
    rng = np.random.default_rng(6)
    S = rng.normal(size=(300, 5))
    A = np.tanh(S @ rng.normal(size=(5, 12))) + 0.3 * rng.normal(size=(300, 12))
    S_te = S[220:]
    scrambled = rng.permutation(S_te) * 3.0 + 1.0  # other users' secrets, rescaled and shifted
    true = reconstruction_attack(A[:220], S[:220], A[220:], S_te, seed=3)
    fake = reconstruction_attack(A[:220], S[:220], A[220:], scrambled, seed=3)
    assert true.estimator == fake.estimator and true.cv == fake.cv and true.ridge_alpha == fake.ridge_alpha
    np.testing.assert_array_equal(true.train_reconstruction, fake.train_reconstruction)
    np.testing.assert_array_equal(true.test_reconstruction, fake.test_reconstruction)
    assert true.metrics != fake.metrics


def test_results_do_not_depend_on_thread_counts():
    """Attacks pin BLAS/OpenMP to one thread while they run: the same seed gives the same
    figures whatever torch or the caller's thread pools are set to."""
    X, y = _data(3)
    S = np.column_stack([X[:, :2] ** 2, y])

    def run() -> tuple:
        attr = attribute_inference(X[:260], y[:260], X[260:], y[260:], seed=4, n_classes=3)
        rec = reconstruction_attack(X[:260], S[:260], X[260:], S[260:], seed=4)
        return attr.to_dict(), attr.test_proba, rec.to_dict(), rec.test_reconstruction

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with threadpool_limits(limits=1):
            one = run()
        torch.set_num_threads(2)
        with threadpool_limits(limits=2):
            two = run()
    finally:
        torch.set_num_threads(before)
    assert one[0] == two[0] and one[2] == two[2]
    np.testing.assert_array_equal(one[1], two[1])
    np.testing.assert_array_equal(one[3], two[3])
