"""The final release's attack battery, when it reuses what the release procedure ran, gives
exactly what running it afresh gives (sim.evaluation.final_battery)."""

import json

import numpy as np
import pytest

from attacks.attribute import attribute_inference
from attacks.releases import attribute_inference_over_releases
from sim.evaluation import final_battery
from sim.scenarios.base import AttributeAttack


@pytest.mark.parametrize("final_like", ["worst", "other", "new"])
def test_final_battery_is_attribute_inference(final_like):
    rng = np.random.default_rng(1)
    n, d = 300, 6
    y = rng.integers(0, 2, n)
    releases = {f"r@{e}": (rng.standard_normal((n, d)) + 0.4 * e * y[:, None]).astype(np.float32) for e in range(4)}
    pub, priv = np.arange(0, 220), np.arange(220, n)
    attack = AttributeAttack(kinds=("k",), field="x", final="final", attributes=("gender",))
    probe = attribute_inference_over_releases({r: (x[pub], x[priv]) for r, x in releases.items()}, y[pub], y[priv], seed=0)
    if final_like == "worst":  # the final release repeats the chosen worst case (e.g. the best epoch)
        releases["final"] = releases[probe.release].copy()
    elif final_like == "other":
        releases["final"] = releases[next(r for r in releases if r != probe.release)].copy()
    else:
        releases["final"] = rng.standard_normal((n, d)).astype(np.float32)
    over = attribute_inference_over_releases({r: (x[pub], x[priv]) for r, x in releases.items()}, y[pub], y[priv], seed=0)
    fresh = attribute_inference(releases["final"][pub], y[pub], releases["final"][priv], y[priv], seed=0)
    reused = final_battery(over, releases, attack, y, pub, priv, seed=0)
    assert json.dumps(reused.to_dict(), sort_keys=True) == json.dumps(fresh.to_dict(), sort_keys=True)
