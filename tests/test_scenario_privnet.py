"""PrivNet across two parties: the same computation as the single-process reference loop,
driven only by protocol messages."""

import numpy as np
import pytest
from run_helpers import run_inline
from test_models import PRIVNET, PRIVNET_SEEDS, cross_domain_data, hr10, leak, privnet_reference

from attacks.tap import Eavesdropper, load_artifact
from models.data import UserAttributes
from models.privnet import evaluate_privnet, train_privnet_joint, transfer_for_step, transferred_representations
from parties.base import COORDINATOR, ChannelConfig
from parties.privnet import PrivNetSourceParty, PrivNetTargetParty
from protocol import Message
from sim.coordinator import Relay
from sim.runtimes.base import PartySpec
from sim.runtimes.inproc import InprocRuntime
from sim.scenarios import Outcome, get_scenario
from sim.world import world

OPTIONS = {
    "dim": 16,
    "hidden": [16, 8],
    "activation": "sigmoid",  # the paper's reading (not the default): both activations run through the parties
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


def test_a_gradient_carries_the_next_request_and_the_source_checks_it():
    """The gradient of step b carries step b+1's users: the source applies the gradient, then
    answers with step b+1's x_trans; a carried request with users out of range is refused with
    an error that names it (and the gradient without a pending transfer too)."""
    source = build_cold_party({"role": "source", "options": {**PRIVNET, "seed": 0}})
    n_users = source.data.n_users
    dim = source.net.trans_dim

    def message(type: str, arrays: dict, meta: dict) -> Message:
        return Message(type=type, sender="target", receiver="source", arrays=arrays, meta=meta)

    first = np.array([0, 3, 5], dtype=np.int64)
    (batch,) = source._dispatch(message("request", {"user_ids": first}, {"op": "transfer", "step": 0}))
    assert batch.type == "artifact" and batch.meta["step"] == 0
    grad = {"user_ids": first, "grad": np.zeros((3, dim), np.float32)}
    nxt = np.array([1, 2], dtype=np.int64)
    before, _ = transfer_for_step(source.net, source.q_hist[nxt], source.q_cand[nxt])
    (batch,) = source._dispatch(message("gradient", {**grad, "next_user_ids": nxt}, {"step": 0, "next_step": 1}))
    assert batch.type == "artifact" and batch.meta["step"] == 1
    np.testing.assert_array_equal(batch.arrays["user_ids"], nxt)
    # served from the network as step 0's update left it, not as it was before
    after, _ = transfer_for_step(source.net, source.q_hist[nxt], source.q_cand[nxt])
    np.testing.assert_array_equal(batch.arrays["x_trans"], after)
    assert not np.allclose(after, before)
    assert source.pending.keys() == {1}  # step 0 applied, step 1 awaits its gradient
    # the epoch's last gradient carries no request: nothing is sent back
    assert source._dispatch(message("gradient", {"user_ids": nxt, "grad": np.zeros((2, dim), np.float32)}, {"step": 1})) == []
    assert source.pending == {}
    (error,) = source._dispatch(message("gradient", {**grad}, {"step": 7}))
    assert error.type == "error" and "no pending transfer" in error.meta["detail"]
    source._dispatch(message("request", {"user_ids": first}, {"op": "transfer", "step": 2}))
    bad = np.array([n_users], dtype=np.int64)
    (error,) = source._dispatch(message("gradient", {**grad, "next_user_ids": bad}, {"step": 2, "next_step": 3}))
    assert error.type == "error" and f"user ids in [0, {n_users})" in error.meta["detail"]


@pytest.mark.slow
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


@pytest.mark.slow
def test_blurme_dummies_leak_to_an_adaptive_attacker(synthetic_config):
    """User-side BlurMe: every user adds 5 dummy items from the items most indicative of the
    *other* gender, chosen with their own gender. On data whose interactions carry no gender
    signal (signal 0) the undefended x_trans tells the receiver nothing about gender, and an
    attacker trained on public users' *defended* x_trans reads the dummies: the defense creates
    the leak it is meant to hide.

    Measured (worst case over the receiver's releases, gender ROC-AUC) per seed, seeds 0-7 with
    one torch thread and 100-103 with two (12 runs): lambda = 0 mean 0.516, SD 0.056 (range
    0.40-0.59); BlurMe 0.715, SD 0.036 (0.64-0.77); BlurMe minus lambda = 0 0.199, SD 0.070
    (0.10-0.33). One seed sits under 2 SD from such thresholds, so three run here and the means
    are asserted (SD / sqrt(3)): 0.62 is 3.2 SD above lambda = 0's, 0.65 3.1 SD below BlurMe's,
    and a gap of 0.08 3.0 SD below the measured one."""
    options = {"dim": 16, "hidden": [16], "adv_hidden": [16], "epochs": 4, "patience": 4, "lr": 5e-3, "max_steps_per_epoch": 40}
    synthetic = {"n_users": 1000, "n_items": 300, "mean_interactions": 60, "signal": 0.0, "seed": 0}
    config = synthetic_config(
        "privnet", variants=["lambda=0", "blurme"], options=options, quick=False, synthetic=synthetic, seeds=[0, 1, 2]
    )
    result = run_inline(config)
    auc = {name: [] for name in ("lambda=0", "blurme")}
    for run in result.runs:
        auc[run.variant.name].append(run.attacks["receiver"]["attribute"]["gender"]["worst_case"]["metrics"]["auc"])
        if run.variant.name == "blurme":
            assert run.details["source"]["defense"]["dummies_added"] > 0
    plain, blurred = np.array(auc["lambda=0"]), np.array(auc["blurme"])
    assert plain.size == blurred.size == 3
    assert plain.mean() < 0.62, auc  # nothing to find without the dummies
    assert blurred.mean() > 0.65, auc
    assert (blurred - plain).mean() > 0.08, auc


# ------------------------------------------------------------------------------------------
# Through the parties on data where transfer must help: test_models' cross-domain set (a
# planted binary attribute; half the users cold in the target domain: only a test item)
# ------------------------------------------------------------------------------------------

_PLAINTEXT = {"suite": "plaintext", "session_seed": b"privnet/cold".hex()}


def build_cold_party(config: dict):
    """Party factory (`test_scenario_privnet:build_cold_party`) on the cold-target data."""
    data, options = cross_domain_data(), config["options"]
    channel = ChannelConfig.from_json(_PLAINTEXT)
    if config["role"] == "source":
        attributes = UserAttributes(gender=data["labels"]["gender"], age_group=data["labels"]["age_group"])
        return PrivNetSourceParty(channel, data["source"], attributes, options)
    return PrivNetTargetParty(channel, data["target"], options)


def _run_cold(variant_name: str, seed: int, **extra) -> tuple[Outcome, np.ndarray | None]:
    """(outcome, released x_trans of every user or None) of one variant through the parties,
    with test_models' reference-loop settings."""
    scenario = get_scenario("privnet")
    (variant,) = [v for v in scenario.variants(False) if v.name == variant_name]
    options = {**{k: list(v) if isinstance(v, tuple) else v for k, v in PRIVNET.items()}, "seed": seed, **extra, **variant.options}
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
    x = None if released is None else released.features_for(np.arange(len(cross_domain_data()["public"])), "x_trans")
    return outcome, x


@pytest.mark.slow
def test_through_the_parties_transfer_helps_cold_users_as_in_the_reference_loop():
    """The issue's synthetic check end to end: protocol messages only, the released x_trans as
    the target receives it. Without the adversary, with it (lam = 1, 5 attacker steps at lr
    1e-2) and for the target alone, the parties compute exactly what the reference loop of
    tests/test_models.py computes with the same seed, so the claims test_models makes over
    several seeds (the adversary lowers the leak; the private transfer still helps cold users
    a little) hold for them. The effects that are large for every seed are asserted here."""
    data, seed = cross_domain_data(), PRIVNET_SEEDS[0]
    runs = {
        "plain": _run_cold("lambda=0", seed),
        "private": _run_cold("lambda=1", seed, adv_steps=5, adv_lr=1e-2),
        "alone": _run_cold("target-only", seed),
    }
    for name, (outcome, x) in runs.items():
        reference = privnet_reference(name, seed)
        assert outcome.details["best_epoch"] == reference.report.best_epoch, name
        assert outcome.utility["HR@10"] == pytest.approx(hr10(reference, data, cold_only=False), abs=1e-12), name
        if reference.x is None:
            assert x is None, name  # nothing is released without transfer
        else:
            np.testing.assert_allclose(x, reference.x, rtol=0, atol=1e-6, err_msg=name)

    def cold(name: str) -> float:
        per_user = runs[name][0].per_user
        return float(per_user["HR@10"][data["cold"][per_user["users"]]].mean())

    # Cold users: HR@10 with the source's x_trans minus the target alone's. Measured per seed
    # (seeds 0-9 with 1 thread, 100-104 with 2): mean 0.44, SD 0.042, range 0.38-0.52.
    assert cold("plain") > cold("alone") + 0.25, (cold("plain"), cold("alone"))
    # What the target received leaks the planted attribute without the adversary. Measured per
    # seed (same 15 seeds): mean 0.855, SD 0.07, range 0.71-0.98; 0.62 is 3.4 SD below.
    assert leak(runs["plain"][1], data["attribute"]) > 0.62
