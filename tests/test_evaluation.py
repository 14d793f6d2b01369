"""The evaluation contract on captures built by hand: every attack kind a scenario can declare
(attribute over every release, membership, reconstruction), each threat model attacked on what
it captured, and what it could not read evaluated as the no-artifact attacker."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from attacks.tap import Eavesdropper
from parties.base import artifact_chunks
from protocol import Endpoint, plaintext_session_id
from sim.evaluation import evaluate_attacks
from sim.scenarios.base import AttributeAttack, MembershipAttack, ReconstructionAttack, Scenario
from sim.world import world

RUN = {"dataset": "synthetic", "seed": 0, "synthetic": {"n_users": 600, "n_items": 400, "mean_interactions": 40, "signal": 1.0, "seed": 0}}
DIM = 8


@pytest.fixture(scope="module")
def w():
    return world(RUN)


def _envelopes(name: str, kind: str, users: np.ndarray, values: np.ndarray, round: int = 0) -> list[bytes]:
    """Plaintext artifact envelopes, as the receiver's view holds them."""
    sid = plaintext_session_id(b"t", "source", "target")
    msgs = artifact_chunks(sender="source", receiver="target", name=name, kind=kind, user_ids=users, arrays={"x": values}, round=round)
    return [Endpoint.receiver_view(replace(m, session_id=sid, seq=i + 1)) for i, m in enumerate(msgs)]


def _capture(*artifacts: tuple[str, np.ndarray], name: str = "receiver") -> Eavesdropper:
    cap = Eavesdropper(name)
    for release, values in artifacts:
        cap.observe_many(_envelopes(release, "rep", np.arange(values.shape[0], dtype=np.int64), values), point=name)
    return cap


class _Declared(Scenario):
    """Only the declarations evaluation reads (no parties are built here)."""

    name = "declared"

    def build_party(self, *args):  # pragma: no cover - never called
        raise NotImplementedError

    def drive(self, *args):  # pragma: no cover - never called
        raise NotImplementedError


def _leaky(w, strength: float, seed: int) -> np.ndarray:
    """Per-user features whose first column carries gender with the given strength."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(w.dataset.n_users, DIM)).astype(np.float32)
    x[:, 0] += strength * (2 * w.attributes.gender - 1)
    return x


def test_attribute_attack_picks_the_worst_release_on_public_users_and_reports_the_final(w):
    scenario = _Declared()
    scenario.attacks = (AttributeAttack(kinds=("rep",), field="x", final="rep"),)
    # Three releases: noise, a strong leak in the middle, a weak final one.
    cap = _capture(("rep@1", _leaky(w, 0.0, 1)), ("rep@2", _leaky(w, 2.0, 2)), ("rep", _leaky(w, 0.3, 3)))
    wire = Eavesdropper("wire")  # saw nothing it could read
    out = evaluate_attacks(scenario, {"receiver": cap, "wire": wire}, w, seed=0)
    gender = out["receiver"]["attribute"]["gender"]
    assert out["receiver"]["attribute"]["releases"] == ["rep@1", "rep@2", "rep"]
    assert gender["worst_case"]["release"] == "rep@2"
    # The planted leak (about one SD of separation at 2.0) against the weak final release:
    # the worst case reads it, the final release much less; the margins are several times
    # the spread of AUC over 150 private users (about 0.04).
    assert gender["worst_case"]["metrics"]["auc"] > 0.85
    assert gender["final"]["metrics"]["auc"] < gender["worst_case"]["metrics"]["auc"] - 0.15
    assert gender["final"]["baseline"]["auc"] == pytest.approx(0.5)
    assert set(gender["curve"]) == {"rep@1", "rep@2", "rep"}
    assert gender["worst_case"]["n_test"] == w.private.size  # scored on the private users of the population
    assert not out["wire"]["attribute"]["decoded"]
    assert out["wire"]["attribute"]["gender"]["final"]["metrics"]["auc"] == pytest.approx(0.5)
    assert out["wire"]["observed"]["intercepts"] == 0


def test_threat_models_that_captured_the_same_releases_share_one_evaluation(w):
    scenario = _Declared()
    scenario.attacks = (AttributeAttack(kinds=("rep",), field="x", final="rep"),)
    x = _leaky(w, 1.0, 4)
    out = evaluate_attacks(scenario, {"receiver": _capture(("rep", x)), "wire": _capture(("rep", x), name="wire")}, w, seed=0)
    assert out["receiver"]["attribute"] is out["wire"]["attribute"]


def test_reconstruction_recovers_a_secret_that_the_artifact_encodes(w):
    rng = np.random.default_rng(5)
    secret = rng.normal(size=(w.dataset.n_users, 4))
    mix = rng.normal(size=(4, DIM))
    artifact = (secret @ mix + 0.05 * rng.normal(size=(w.dataset.n_users, DIM))).astype(np.float32)
    scenario = _Declared()
    scenario.attacks = (ReconstructionAttack(kinds=("rep",), field="x", final="rep", secret=lambda world, seed: secret),)
    out = evaluate_attacks(scenario, {"receiver": _capture(("rep", artifact)), "wire": Eavesdropper("wire")}, w, seed=0)
    rec = out["receiver"]["reconstruction"]
    # A linear, nearly noiseless encoding: cosine ~1 (0.99+ over seeds), the mean-secret
    # baseline ~0.
    assert rec["decoded"] and rec["metrics"]["cosine"] > 0.9 and abs(rec["baseline"]["cosine"]) < 0.2
    assert set(rec["attributes_of_reconstruction"]) == {"gender", "age_group"}
    assert not out["wire"]["reconstruction"]["decoded"] and rec["estimator"] in ("ridge", "mlp")


def test_membership_attack_uses_the_scenarios_features(w):
    rng = np.random.default_rng(6)

    def features(capture, world, seed):
        if not capture.artifacts():
            return None  # nothing readable: the constant-score attacker
        member = rng.random(400) < 0.5
        x = rng.normal(size=(400, 3)) + 1.5 * member[:, None]
        return x[:200], member[:200], x[200:], member[200:]

    scenario = _Declared()
    scenario.attacks = (MembershipAttack(features=features),)
    out = evaluate_attacks(scenario, {"receiver": _capture(("rep", _leaky(w, 0, 7))), "wire": Eavesdropper("wire")}, w, seed=0)
    member = out["receiver"]["membership"]
    # 1.5 SD of planted separation on 3 features: AUC ~0.97 (0.94-0.99 over seeds).
    assert member["decoded"] and member[member["best"]]["auc"] > 0.85
    assert out["wire"]["membership"] == {"decoded": False}
