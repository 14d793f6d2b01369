"""The evaluation protocol's invariants, each checked directly (not through a leakage figure
that happens to move when one breaks):

- attackers train on the public users only: scrambling the private users' labels changes no
  party's computation (every envelope of the run is byte-identical) and nothing an attacker
  decides or predicts, only the scores of its predictions;
- model selection and early stopping read the validation split only: redrawing the test
  candidates changes no training step, no validation figure and no chosen epoch, only the
  test figures;
- the curious receiver's attacker sees only what the receiving party accepted: every feature
  row it is given is a row of an artifact the target received, in the same release.

Each test also checks that its perturbation reached what it is allowed to change (the test
metrics), so that it cannot pass by perturbing nothing.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from run_helpers import run_inline
from test_models import synth_domain

import sim.engine
import sim.evaluation
import sim.world
from models.bprmf import train_bprmf
from models.data import RankingData
from models.metrics import ranking_metrics
from models.privnet import evaluate_privnet, train_privnet_joint, train_privnet_target_only, transferred_representations
from parties.names import PRIVNET_BATCH_KIND, PRIVNET_REPRESENTATION_KIND
from parties.privnet import PrivNetTargetParty
from sim.scenarios.base import AttributeAttack

SMALL_WORLD = {"n_users": 400, "n_items": 300, "mean_interactions": 40, "signal": 2.0, "seed": 0}


# ------------------------------------------------------------------------------------------
# perturbations
# ------------------------------------------------------------------------------------------


def scramble_private_labels(w: sim.world.World) -> sim.world.World:
    """The same world, but every private user's gender and age group changed to another value
    (in the dataset's user table too). Public users, the split and the data are untouched."""
    rng = np.random.default_rng(99)
    private = w.private
    users = w.dataset.users.copy()
    gender = users["gender"].to_numpy().copy()
    age = users["age_group"].to_numpy().copy()
    gender[private] = 1 - gender[private]
    age[private] = (age[private] + rng.integers(1, 3, private.size)) % 3
    users["gender"], users["age_group"] = gender, age
    dataset = dataclasses.replace(w.dataset, users=users)
    return dataclasses.replace(w, dataset=dataset, attributes=dataset.attributes())


def redraw_test_candidates(data: RankingData, seed: int, move_test_items: bool) -> RankingData:
    """New test negatives for every evaluated user (items outside the user's training,
    validation and test items), and with `move_test_items` a new test item too."""
    rng = np.random.default_rng(seed)
    test_items, test_neg = data.test_items.copy(), data.test_negatives.copy()
    histories = data.histories("valid")
    for u in data.eval_users("test"):
        taken = np.zeros(data.n_items, bool)
        taken[histories[u]] = True
        taken[test_items[u]] = True
        if move_test_items:
            test_items[u] = rng.choice(np.flatnonzero(~taken))
            taken[test_items[u]] = True
        test_neg[u] = rng.choice(np.flatnonzero(~taken), test_neg.shape[1], replace=False)
    assert not np.array_equal(test_neg, data.test_negatives)
    return dataclasses.replace(data, test_items=test_items, test_negatives=test_neg)


def _patched_world(monkeypatch: pytest.MonkeyPatch, change) -> None:
    """Every world the engine and the party factory build is `change(world)`."""
    original = sim.world._world
    cache: dict = {}

    def changed(key):
        if key not in cache:
            cache[key] = change(original(key))
        return cache[key]

    monkeypatch.setattr(sim.world, "_world", changed)


def _without_attacks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip the attack step (the tests that do not look at it)."""
    monkeypatch.setattr(sim.engine, "evaluate_attacks", lambda *_, **__: {})


def _undecided(value):
    """A result dict without the figures that score predictions on the private users (and
    the K-means V-measure, which scores clusters of the whole population against its labels)."""
    scored = {"metrics", "baseline", "attackers", "curve", "timing_s", "vmeasure_gender"}
    if isinstance(value, dict):
        return {k: _undecided(v) for k, v in value.items() if k not in scored}
    return value


# ------------------------------------------------------------------------------------------
# 1. attackers train on public users only
# ------------------------------------------------------------------------------------------


def test_attackers_train_on_public_users_only(synthetic_config, monkeypatch):
    """sim.evaluation.attribute_attack on three releases with a planted gender signal: with the
    private users' labels scrambled, every choice (release, attacker, decision rules, CV AUCs)
    and every probability given to a private user is the same; only the scores move."""
    config = synthetic_config("privnet", synthetic=SMALL_WORLD)
    w = sim.world.world(config.run_dict(0))
    fake = scramble_private_labels(w)
    assert not np.array_equal(w.attributes.gender[w.private], fake.attributes.gender[w.private])
    np.testing.assert_array_equal(w.attributes.gender[w.public], fake.attributes.gender[w.public])

    rng = np.random.default_rng(0)
    releases = {}
    for name, strength in (("x@1", 0.3), ("x@2", 0.8), ("x", 0.6)):
        x = rng.normal(size=(w.dataset.n_users, 4)).astype(np.float32)
        x[:, 0] += strength * w.attributes.gender  # the true attribute, for both runs
        releases[name] = x
    attack = AttributeAttack(kinds=("k",), field="x", final="x")

    seen: list = []

    def spy(fn):
        def wrapped(*args, **kwargs):
            result = fn(*args, **kwargs)
            seen.append(result)
            return result

        return wrapped

    monkeypatch.setattr(sim.evaluation, "attribute_inference_over_releases", spy(sim.evaluation.attribute_inference_over_releases))
    monkeypatch.setattr(sim.evaluation, "attribute_inference", spy(sim.evaluation.attribute_inference))
    true = sim.evaluation.attribute_attack(attack, releases, w, seed=0)
    n = len(seen)
    fake_out = sim.evaluation.attribute_attack(attack, releases, fake, seed=0)
    # per attribute, one attack over the releases (the final release's battery reuses its runs:
    # tests/test_evaluation_reuse.py)
    assert n == len(seen) - n == 2

    assert _undecided(true) == _undecided(fake_out)
    for a, b in zip(seen[:n], seen[n:]):
        result_a, result_b = getattr(a, "worst_case", a), getattr(b, "worst_case", b)
        np.testing.assert_array_equal(result_a.test_proba, result_b.test_proba)
        for name in result_a.runs:
            np.testing.assert_array_equal(result_a.runs[name].oof_proba, result_b.runs[name].oof_proba)
            np.testing.assert_array_equal(result_a.runs[name].test_proba, result_b.runs[name].test_proba)
        for name in getattr(a, "curve_runs", {}):
            np.testing.assert_array_equal(a.curve_runs[name].test_proba, b.curve_runs[name].test_proba)
    # the scramble reached the private users' scores
    for attr in ("gender", "age_group"):
        assert true[attr]["worst_case"]["metrics"] != fake_out[attr]["worst_case"]["metrics"]


def test_private_labels_reach_no_party(synthetic_config, monkeypatch):
    """Through the engine: the source's simulated attacker (lambda = 1) and the server-side
    BlurMe (which predicts the genders it does not know) may use public users' labels only,
    so scrambling the private users' labels leaves every envelope of the run byte-identical."""
    _without_attacks(monkeypatch)
    config = synthetic_config("privnet", variants=["lambda=1", "blurme-server"], synthetic=SMALL_WORLD)
    true = run_inline(config).runs
    _patched_world(monkeypatch, scramble_private_labels)
    fake = run_inline(config).runs
    for a, b in zip(true, fake):
        assert a.variant.name == b.variant.name
        assert [line["sha256"] for line in a.transcript] == [line["sha256"] for line in b.transcript], a.variant.name
        assert a.utility == b.utility
    assert fake[1].details["source"]["defense"]["dummies_added"] > 0


# ------------------------------------------------------------------------------------------
# 2. model selection and early stopping read validation data only
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_domains() -> dict:
    rng = np.random.default_rng(3)
    cluster = rng.integers(0, 4, size=160)
    source = synth_domain(cluster, n_items=80, n_per_user=12, p_in=0.85, rng=rng, n_neg=30)
    target = synth_domain(cluster, n_items=60, n_per_user=9, p_in=0.85, rng=rng, n_neg=30)
    gender = np.where(rng.random(160) < 0.6, cluster % 2, -1)
    labels = {"gender": gender, "age_group": np.full(160, -1)}
    return {"source": source, "target": target, "labels": labels}


NETS = dict(dim=8, hidden=(8,), activation="sigmoid", window=4, batch_size=32, lr=1e-2, seed=1)


def _bprmf(data: dict, target: RankingData):
    model, report = train_bprmf(target, dim=8, epochs=6, batch_size=128, patience=2, seed=1)
    users, cands = target.candidates("test")
    return [model], report, ranking_metrics(model.score(users, cands))


def _privnet(data: dict, target: RankingData):
    nets = train_privnet_joint(data["source"], target, data["labels"], lam=1.0, epochs=5, patience=2, adv_hidden=(8,), adv_steps=2, **NETS)
    x = transferred_representations(nets[0], data["source"].histories(), NETS["window"])
    return list(nets[:3]), nets[3], evaluate_privnet(nets[1], target, x, "test", NETS["window"])[0]


def _target_only(data: dict, target: RankingData):
    net, report = train_privnet_target_only(target, epochs=5, patience=2, **NETS)
    return [net], report, evaluate_privnet(net, target, None, "test", NETS["window"])[0]


@pytest.mark.parametrize(
    "train, move_test_items",
    # PrivNet's training negatives avoid the held-out items (models.privnet.target_stream), so
    # there the test items stay put and only their negatives move.
    [(_bprmf, True), (_privnet, False), (_target_only, False)],
    ids=["bprmf", "privnet", "target-only"],
)
def test_training_and_early_stopping_never_read_the_test_split(two_domains, train, move_test_items):
    target = two_domains["target"]
    other = redraw_test_candidates(target, seed=5, move_test_items=move_test_items)
    models_a, report_a, test_a = train(two_domains, target)
    models_b, report_b, test_b = train(two_domains, other)
    assert report_a.history == report_b.history  # every epoch's losses and validation figures
    assert report_a.best_epoch == report_b.best_epoch and report_a.best_valid == report_b.best_valid
    assert 1 < report_a.epochs_run  # early stopping had epochs to choose from
    for ma, mb in zip(models_a, models_b):
        for (name, pa), pb in zip(ma.state_dict().items(), mb.state_dict().values()):
            assert np.array_equal(pa.numpy(), pb.numpy()), name
    assert test_a != test_b  # the redraw reached the test figures


def test_parties_select_epochs_on_validation_only(synthetic_config, monkeypatch):
    """Through the engine, PrivNet (split learning and the target alone) and the embeddings
    scenario with every domain's test candidates redrawn: every envelope but the final
    utility reports is byte-identical, and so are the chosen epochs and validation figures."""
    _without_attacks(monkeypatch)
    options = {"epochs": 4, "patience": 2}
    configs = [
        synthetic_config("privnet", variants=["lambda=0", "target-only"], synthetic=SMALL_WORLD, options=options),
        synthetic_config("embeddings", variants=["transfer"], synthetic=SMALL_WORLD),
    ]
    true = [r for c in configs for r in run_inline(c).runs]

    def redraw(w):
        split = dataclasses.replace(
            w.split,
            source=redraw_test_candidates(w.split.source, seed=1, move_test_items=False),
            target=redraw_test_candidates(w.split.target, seed=2, move_test_items=False),
        )
        return dataclasses.replace(w, split=split)

    _patched_world(monkeypatch, redraw)
    fake = [r for c in configs for r in run_inline(c).runs]

    def training(run) -> list:
        return [(ln["type"], ln["op"], ln["sha256"]) for ln in run.transcript if not (ln["type"] == "report" and ln["op"] != "epoch")]

    for a, b in zip(true, fake):
        assert a.variant.name == b.variant.name
        assert training(a) == training(b), a.variant.name
        for key in ("best_epoch", "best_valid", "history", "valid", "epochs", "source_valid"):
            assert a.details.get(key) == b.details.get(key), (a.variant.name, key)
        assert a.utility != b.utility, a.variant.name  # the redraw reached the test figures
    assert true[0].details["epochs_run"] > 1


# ------------------------------------------------------------------------------------------
# 3. the curious receiver's attacker sees what the receiver received, nothing else
# ------------------------------------------------------------------------------------------


def test_receiver_attacker_sees_only_what_the_target_accepted(synthetic_config, monkeypatch):
    """PrivNet on the secure channel: the releases the receiver's attacker is given are exactly
    those the target party accepted (each epoch's validation release, each epoch's training
    batches, the final release); in each, a user's row is the last row that arrived for that
    user in that release (in that epoch, for the batches), and users that never arrived in it
    are all zero. The wire, which cannot decrypt, is given nothing."""
    accepted: list[tuple[str, str, int, np.ndarray, np.ndarray]] = []  # kind, name, round, users, x_trans
    dispatch = PrivNetTargetParty._dispatch

    def recording(self, msg):
        if msg.type == "artifact":
            meta, arrays = msg.meta, msg.arrays
            accepted.append((meta["kind"], meta["artifact"], msg.round, arrays["user_ids"].copy(), arrays["x_trans"].copy()))
        return dispatch(self, msg)

    given: dict[str, dict[str, np.ndarray]] = {}  # threat model -> the releases its attacker gets

    def evaluate_attacks(scenario, captures, world, **_):
        (attack,) = scenario.attacks
        for threat, capture in captures.items():
            given[threat] = sim.evaluation.releases_of(capture, attack, world)
        return {}  # the attackers themselves are not under test here

    monkeypatch.setattr(PrivNetTargetParty, "_dispatch", recording)
    monkeypatch.setattr(sim.engine, "evaluate_attacks", evaluate_attacks)
    config = synthetic_config(
        "privnet", variants=["lambda=0"], channel="secure", synthetic=SMALL_WORLD, options={"epochs": 3, "patience": 3}
    )
    run_inline(config)
    assert given["wire"] == {}  # it cannot decrypt

    releases = given["receiver"]
    rounds = sorted({rnd for kind, _, rnd, _, _ in accepted if kind == PRIVNET_BATCH_KIND})
    whole = sorted({name for kind, name, _, _, _ in accepted if kind == PRIVNET_REPRESENTATION_KIND})
    assert rounds == [1, 2, 3] and len(whole) == 4  # three validation releases and the final one
    assert sorted(releases) == sorted([f"{PRIVNET_BATCH_KIND}@{r}" for r in rounds] + whole)
    partial = 0
    for name, x in releases.items():
        if name in whole:
            chunks = [(users, xs) for _, n, _, users, xs in accepted if n == name]
        else:
            rnd = int(name.rsplit("@", 1)[1])
            chunks = [(users, xs) for kind, _, r, users, xs in accepted if kind == PRIVNET_BATCH_KIND and r == rnd]
        last: dict[int, np.ndarray] = {}
        for users, xs in chunks:
            last.update(zip(users.tolist(), xs))
        for u in range(x.shape[0]):
            if u in last:
                np.testing.assert_array_equal(x[u], last[u], err_msg=f"{name}, user {u}")
            else:
                assert not x[u].any(), f"{name}: user {u} never arrived, yet the attacker has a row"
        partial += len(last) < x.shape[0]
    assert partial == len(rounds)  # the batches of an epoch miss some users: the zero rows were checked
