"""PrivNet's exchange interval K: the parties exchange once per K training steps (the source
sends K batches' x_u|trans in one message, the target returns K gradients, applied in order),
reproducing the reference loop run with the same K; K = 1 is the step-by-step algorithm."""

import math

import numpy as np
import pytest
from run_helpers import run_inline

from attacks.tap import load_artifact
from models.privnet import evaluate_privnet, train_privnet_joint, transferred_representations
from parties.privnet import split_rows
from sim.world import world

OPTIONS = {
    "dim": 16,
    "hidden": [16, 8],
    "activation": "sigmoid",  # the paper's reading (not the default): both activations run through the parties
    "adv_hidden": [16],
    "epochs": 2,
    "patience": 2,
    "batch_size": 64,
    "lr": 5e-3,
    "max_steps_per_epoch": 12,
}


def _reference(w, interval: int, **overrides):
    """The reference loop with the parties' settings (OPTIONS) and exchange interval `interval`."""
    labels = w.attributes.restricted_to(w.public).as_dict()
    return train_privnet_joint(
        w.split.source,
        w.split.target,
        labels,
        lam=1.0,
        epochs=2,
        batch_size=64,
        lr=5e-3,
        seed=0,
        patience=2,
        dim=16,
        hidden=(16, 8),
        activation="sigmoid",
        adv_hidden=(16,),
        adv_steps=5,  # the scenario's default adversary preset, "strong"
        adv_lr=1e-2,
        max_steps_per_epoch=12,
        exchange_interval=interval,
        **overrides,
    )


@pytest.mark.parametrize("interval", [4, 5])  # 12 steps: three full groups; groups of 5, 5, 2
def test_parties_reproduce_the_reference_loop_with_the_same_interval(synthetic_config, tmp_path, interval):
    config = synthetic_config("privnet", variants=["lambda=1"], options={**OPTIONS, "exchange_interval": interval}, quick=False)
    out = tmp_path / "run"
    (run,) = run_inline(config, out_dir=out).runs
    w = world(config.run_dict(0))
    source, target, _, report = _reference(w, interval)
    x = transferred_representations(source, w.split.source.histories())
    reference, _, _ = evaluate_privnet(target, w.split.target, x, "test")
    for metric, value in reference.items():
        assert run.utility[metric] == pytest.approx(value, abs=1e-9), metric
    assert run.details["best_epoch"] == report.best_epoch
    released = load_artifact(out / "intercepted" / "lambda=1" / "seed0" / "receiver" / "artifact-x_trans.safetensors")
    np.testing.assert_allclose(released.arrays["x_trans"], x[released.user_ids], rtol=0, atol=1e-6)
    # one gradient per group of K steps, per epoch; each but the epoch's last carries the next
    # group's request, so a transfer request opens each epoch and nothing else
    requests = [line for line in run.transcript if line["type"] == "request" and line["op"] == "transfer"]
    gradients = [line for line in run.transcript if line["type"] == "gradient"]
    batches = [line for line in run.transcript if line["type"] == "artifact" and line["artifact"].startswith("x_trans_batch@")]
    epochs = run.details["epochs_run"]
    assert len(requests) == epochs
    assert len(gradients) == len(batches) == epochs * math.ceil(12 / interval)


def test_interval_changes_training_but_one_is_the_step_by_step_algorithm(synthetic_config):
    """K = 4 trains differently from K = 1 (stale gradients), and K = 1 equals the loop
    that exchanges at every step, whose split steps agree with the one-graph step."""
    w = world(synthetic_config("privnet").run_dict(0))
    one = transferred_representations(_reference(w, 1)[0], w.split.source.histories())
    four = transferred_representations(_reference(w, 4)[0], w.split.source.histories())
    assert not np.allclose(one, four)
    joint, *_ = _reference(w, 1, single_graph=True)
    np.testing.assert_allclose(transferred_representations(joint, w.split.source.histories()), one, rtol=0, atol=1e-5)


def test_interval_is_checked():
    with pytest.raises(ValueError, match="exchange_interval"):
        train_privnet_joint(None, None, {}, exchange_interval=0)  # type: ignore[arg-type]
    rows = np.arange(10)
    assert [part.tolist() for part in split_rows(rows, np.array([3, 7]), "x")] == [[0, 1, 2], [3, 4, 5, 6, 7, 8, 9]]
    assert split_rows(rows, None, "x")[0] is rows
    for counts in ([3, 6], [0, 10], [[5, 5]]):
        with pytest.raises(ValueError, match="counts"):
            split_rows(rows, np.array(counts), "x")
