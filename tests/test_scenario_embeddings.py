"""The `embeddings` scenario on MovieLens-100K, and what each threat model learns from it."""

import pytest
from run_helpers import run_inline

from sim.config import RunConfig


def _attacks(run, threat):
    return {a: run.attacks[threat]["attribute"][a]["final"] for a in ("gender", "age_group")}


def test_secure_channel_blinds_the_wire_but_not_the_receiver(synthetic_config):
    secure = run_inline(synthetic_config(variants=["transfer"], channel="secure")).runs[0]
    plain = run_inline(synthetic_config(variants=["transfer"], channel="plaintext")).runs[0]
    # wire: nothing decodable, so every attacker is exactly the no-artifact prior
    assert not secure.attacks["wire"]["attribute"]["decoded"]
    for result in _attacks(secure, "wire").values():
        assert result["metrics"]["auc"] == pytest.approx(0.5)
        assert result["metrics"]["balanced_accuracy"] == pytest.approx(result["baseline"]["balanced_accuracy"])
    observed = secure.attacks["wire"]["observed"]
    assert observed["intercepts"] > 0 and observed["decoded"]["count"] == 0
    assert observed["could_not_decode"]["reasons"]  # e.g. ENCRYPTED: sizes and headers only
    # receiver: the same artifact, so the same leakage as on the plaintext channel
    assert secure.attacks["receiver"]["attribute"]["decoded"]
    assert _attacks(secure, "receiver") == _attacks(plain, "receiver")
    assert secure.utility == plain.utility
    assert plain.attacks["wire"]["attribute"]["decoded"]
    assert {line["suite"] for line in secure.transcript} == {"secure"}


@pytest.mark.slow
def test_movielens_transfer_beats_popularity_and_leaks_gender(tmp_path):
    config = RunConfig(scenario="embeddings", seeds=[0], channel="secure", out=str(tmp_path))
    runs = {r.variant.name: r for r in run_inline(config).runs}
    assert runs["transfer"].utility["HR@10"] > runs["popularity"].utility["HR@10"] + 0.03
    assert runs["target-only"].utility["HR@10"] > runs["popularity"].utility["HR@10"]
    gender = runs["transfer"].attacks["receiver"]["attribute"]["gender"]["final"]
    assert gender["baseline"]["auc"] == pytest.approx(0.5)
    assert gender["metrics"]["auc"] > 0.6  # the notes: raw-rating attackers reach 0.74-0.77
    assert runs["transfer"].attacks["wire"]["attribute"]["gender"]["final"]["metrics"]["auc"] == pytest.approx(0.5)
