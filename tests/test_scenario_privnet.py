"""PrivNet across two parties: the same computation as the single-process reference loop,
driven only by protocol messages."""

from functools import lru_cache

import numpy as np
import pytest
from run_helpers import run_inline
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from attacks.tap import Eavesdropper, load_artifact
from models.data import UserAttributes
from models.privnet import evaluate_privnet, train_privnet_joint, transferred_representations
from parties.base import COORDINATOR, ChannelConfig
from parties.privnet import PrivNetSourceParty, PrivNetTargetParty
from sim.coordinator import Relay
from sim.runtimes.base import PartySpec
from sim.runtimes.inproc import InprocRuntime
from sim.scenarios import get_scenario
from sim.world import world

OPTIONS = {
    "dim": 16,
    "hidden": [16, 8],
    "adv_hidden": [16],
    "epochs": 3,
    "patience": 1,
    "batch_size": 64,
    "lr": 5e-3,
    "max_steps_per_epoch": 12,
}


def test_parties_reproduce_the_reference_loop(synthetic_config, tmp_path):
    """Split learning over envelopes gives exactly the reference loop's utility and artifact."""
    config = synthetic_config("privnet", variants=["lambda=1"], options=OPTIONS, quick=False)
    out = tmp_path / "run"
    result = run_inline(config, out_dir=out)
    (run,) = result.runs
    w = world(config.run_dict(0))
    labels = w.attributes.restricted_to(w.public).as_dict()
    source, target, _, report = train_privnet_joint(
        w.split.source,
        w.split.target,
        labels,
        lam=1.0,
        epochs=3,
        batch_size=64,
        lr=5e-3,
        seed=0,
        patience=1,
        dim=16,
        hidden=(16, 8),
        activation="sigmoid",
        adv_hidden=(16,),
        adv_steps=5,  # the scenario's default adversary preset, "strong"
        adv_lr=1e-2,
        max_steps_per_epoch=12,
    )
    x = transferred_representations(source, w.split.source.histories())
    reference, _, _ = evaluate_privnet(target, w.split.target, x, "test")
    for metric, value in reference.items():
        assert run.utility[metric] == pytest.approx(value, abs=1e-9), metric
    assert run.details["best_epoch"] == report.best_epoch
    # the released artifact the receiver attacked is the reference's representation
    released = load_artifact(out / "intercepted" / "lambda=1" / "seed0" / "receiver" / "artifact-x_trans.safetensors")
    np.testing.assert_allclose(released.arrays["x_trans"], x[released.user_ids], rtol=0, atol=1e-6)


def test_every_variant_runs_and_only_transfers_are_attackable(synthetic_config):
    config = synthetic_config("privnet", variants=["lambda=0", "ldp", "blurme", "target-only"], quick=True)
    result = run_inline(config)
    by_name = {r.variant.name: r for r in result.runs}
    for name in ("lambda=0", "ldp", "blurme"):
        run = by_name[name]
        assert run.attacks["receiver"]["attribute"]["decoded"] and run.attacks["wire"]["attribute"]["decoded"]
        assert 0.0 < run.utility["HR@10"] <= 1.0
        kinds = {line["artifact"] for line in run.transcript if line["type"] == "artifact"}
        assert "x_trans" in kinds and any(k.startswith("x_trans_batch@") for k in kinds)
        assert {line["type"] for line in run.transcript} >= {"request", "gradient", "artifact", "report"}
    assert by_name["ldp"].details["source"]["defense"]["mechanism"] == "Laplace noise on rating values (user side)"
    assert by_name["blurme"].details["source"]["defense"]["dummies_added"] > 0
    only = by_name["target-only"]
    assert not only.attacks["receiver"]["attribute"]["decoded"]
    assert not any(line["type"] == "artifact" for line in only.transcript)


def test_blurme_dummies_leak_to_an_adaptive_attacker(synthetic_config):
    """BlurMe's dummy items come from the *other* gender's list, which an attacker trained on
    defended artifacts reads as a signal: leakage must not fall below the undefended run's."""
    config = synthetic_config("privnet", variants=["lambda=0", "blurme"], quick=True)
    runs = {r.variant.name: r for r in run_inline(config).runs}
    auc = {n: r.attacks["receiver"]["attribute"]["gender"]["worst_case"]["metrics"]["auc"] for n, r in runs.items()}
    assert auc["blurme"] > auc["lambda=0"]
    assert auc["blurme"] > 0.65


@pytest.mark.slow
def test_adversary_lowers_leakage_on_planted_signal(synthetic_config):
    """Through the parties and the protocol: lambda = 1 against lambda = 0 on synthetic data with
    a strongly planted gender signal. The attacker gets 5 updates per step at lr 1e-2
    (`adv_steps`, `adv_lr`): with the paper's single step the objective can flip the attribute
    instead of removing it on small data (see the scenario's notes)."""
    options = {
        "dim": 32,
        "hidden": [32, 16],
        "adv_hidden": [32],
        "epochs": 6,
        "patience": 3,
        "batch_size": 128,
        "lr": 2e-3,
        "adv_steps": 5,
        "adv_lr": 1e-2,
    }
    synthetic = {"n_users": 1000, "n_items": 300, "mean_interactions": 60, "signal": 3.0, "seed": 0}
    config = synthetic_config("privnet", variants=["lambda=0", "lambda=1"], options=options, quick=False, synthetic=synthetic)
    runs = {r.variant.name: r for r in run_inline(config).runs}
    auc = {n: r.attacks["receiver"]["attribute"]["gender"]["worst_case"]["metrics"]["auc"] for n, r in runs.items()}
    assert auc["lambda=0"] > 0.62  # the undefended representation leaks
    assert auc["lambda=1"] < auc["lambda=0"] - 0.03
    # and the defense costs little utility
    assert runs["lambda=1"].utility["HR@10"] > runs["lambda=0"].utility["HR@10"] - 0.03


# ------------------------------------------------------------------------------------------
# Through the parties on data where transfer must help: test_models' cross-domain set
# (a planted binary attribute; half the users cold in the target domain)
# ------------------------------------------------------------------------------------------

_PLAINTEXT = {"suite": "plaintext", "session_seed": b"privnet/cold".hex()}


@lru_cache(maxsize=1)
def _cold_data() -> dict:
    from test_models import cross_domain

    return cross_domain.__wrapped__()


def build_cold_party(config: dict):
    """Party factory (`test_scenario_privnet:build_cold_party`) on the cold-target data."""
    data, options = _cold_data(), {**config["options"], "seed": 0}
    channel = ChannelConfig.from_json(_PLAINTEXT)
    if config["role"] == "source":
        attributes = UserAttributes(gender=data["labels"]["gender"], age_group=data["labels"]["age_group"])
        return PrivNetSourceParty(channel, data["source"], attributes, options)
    return PrivNetTargetParty(channel, data["target"], options)


def _run_cold(variant_name: str, **extra) -> tuple[float, np.ndarray | None]:
    """(test HR@10, released x_trans of every user or None) of one variant through the parties."""
    scenario = get_scenario("privnet")
    (variant,) = [v for v in scenario.variants(False) if v.name == variant_name]
    options = {
        "dim": 32,
        "hidden": [32, 16],
        "adv_hidden": [32],
        "window": 5,
        "batch_size": 64,
        "lr": 1e-2,
        "epochs": 15,
        "patience": 5,
        **extra,
        **variant.options,
    }
    runtime = InprocRuntime()
    runtime.start(
        [PartySpec(role, "test_scenario_privnet:build_cold_party", {"role": role, "options": options}) for role in ("source", "target")]
    )
    try:
        outcome = scenario.drive(Relay(runtime, ChannelConfig.from_json(_PLAINTEXT).endpoint(COORDINATOR, None)), variant)
        receiver = Eavesdropper("receiver")
        receiver.observe_many(runtime.receiver_view("target"), point="receiver")
    finally:
        runtime.stop()
    released = receiver.artifacts().get("x_trans")
    x = None if released is None else released.features_for(np.arange(len(_cold_data()["public"])), "x_trans")
    return outcome.utility["HR@10"], x


def test_through_the_parties_transfer_helps_cold_users_and_the_adversary_hides_the_attribute():
    """The issue's synthetic check end to end: protocol messages only, the released x_trans
    attacked as the target receives it (a logistic regression fitted on public users)."""
    data = _cold_data()
    hr_plain, x_plain = _run_cold("lambda=0", adv_steps=0)
    hr_private, x_private = _run_cold("lambda=1", adv_steps=5, adv_lr=1e-2)
    hr_alone, x_alone = _run_cold("target-only")
    assert x_alone is None  # nothing is released without transfer
    assert hr_plain > hr_alone + 0.1, (hr_plain, hr_alone)  # measured 0.690 vs 0.488

    def leak(x: np.ndarray) -> float:
        pub, y = data["public"], data["attribute"]
        clf = LogisticRegression(max_iter=2000).fit(x[pub], y[pub])
        return float(roc_auc_score(y[~pub], clf.predict_proba(x[~pub])[:, 1]))

    leak_plain, leak_private = leak(x_plain), leak(x_private)
    assert leak_plain > 0.75, leak_plain
    assert leak_private < leak_plain - 0.08, (leak_plain, leak_private)  # measured 0.821 -> 0.703
    assert hr_private > hr_alone, (hr_private, hr_alone)  # measured 0.523 vs 0.488
