"""Every scenario built on the engine runs on Ray and on Flower's simulation engine with the
same bytes as in one process: the same envelopes (the transcript holds each one's SHA-256;
plaintext suite, since on the secure one every run draws fresh keys), the same utility, the
same figures of the attacks. (embeddings and privnet are checked on Ray and Flower in their own modules.)"""

from __future__ import annotations

import json

import pytest
import ray
import test_scenario_adversarial_bpr as adversarial_bpr
import test_scenario_membership as membership
import test_scenario_pfcdr as pfcdr
import test_scenario_privacy_budget as privacy_budget
from run_helpers import run_inline
from test_runtime_flower import _per_seed, _run_dir, _transcript

from sim.api import run
from sim.config import RunConfig

pytestmark = pytest.mark.slow  # a local Ray per run

CASES = {
    "adversarial-bpr": dict(synthetic=adversarial_bpr.SMALL, variants=["lambda=1,size=10"]),
    "membership": dict(synthetic=membership.SMALL, variants=["target=lfm,shadow=lfm,policy=fold-in"]),
    "pfcdr": dict(synthetic=pfcdr.SMALL, split="genre", variants=["pfcdr,beta=0.2"]),
    # three user clients: three actors besides the server
    "privacy-budget": dict(
        synthetic=privacy_budget.SYNTHETIC,
        variants=["beta=0.5,model=metamf"],
        options={**privacy_budget.OPTIONS, "clients": 3},
        quick=False,
    ),
}


def _untimed(value):
    """An attack result without its timings (the only thing allowed to differ)."""
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if "timing" not in k and "seconds" not in k}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def _figures(run) -> str:
    return json.dumps(_untimed(run.attacks), sort_keys=True, default=str)


@pytest.mark.parametrize("scenario", sorted(CASES))
def test_ray_carries_the_same_bytes_as_one_process(scenario, tmp_path):
    case = {"quick": True, **CASES[scenario]}
    common = dict(scenario=scenario, dataset="synthetic", seeds=[0], channel="plaintext", torch_threads=1, out=str(tmp_path), **case)
    here = run_inline(RunConfig(**common))
    on_ray = run_inline(RunConfig(runtime="ray", **common))
    assert not ray.is_initialized()  # the local Ray it started is gone
    (a,), (b,) = here.runs, on_ray.runs
    assert b.utility == a.utility
    assert len(b.transcript) == len(a.transcript) > 0
    assert b.transcript == a.transcript  # every header field and every envelope's SHA-256
    assert _figures(b) == _figures(a)


# privacy-budget on Flower, with many clients: tests/test_runtime_flower.py
@pytest.mark.parametrize("scenario", ["adversarial-bpr", "membership", "pfcdr"])
def test_flower_simulation_carries_the_same_bytes_as_one_process(scenario, tmp_path):
    case = {"quick": True, **CASES[scenario]}
    common = dict(scenario=scenario, dataset="synthetic", seeds=[0], channel="plaintext", torch_threads=1, **case)
    run(RunConfig(out=str(tmp_path / "inproc"), **common), quiet=True)
    run(RunConfig(runtime="flower", out=str(tmp_path / "flower"), **common), quiet=True)
    here, there = _run_dir(tmp_path / "inproc"), _run_dir(tmp_path / "flower")
    results = json.loads((there / "results.json").read_text())
    assert results["status"] == "complete" and results["runtime"] == "flower"
    assert _per_seed(results) == _per_seed(json.loads((here / "results.json").read_text()))
    transcript = _transcript(there)
    assert len(transcript) > 0 and transcript == _transcript(here)
