"""The Python API and the report command: what a notebook user calls."""

from __future__ import annotations

import json

import jsonschema
import pytest

from sim.api import load, run
from sim.errors import ConfigError
from sim.outputs import validate
from sim.outputs.results_json import schema
from sim.report import main as report_main

SYNTHETIC = {"n_users": 300, "n_items": 400, "mean_interactions": 40, "signal": 2.0, "seed": 0}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two small runs (embeddings, two seeds; privnet, one seed), as a notebook would make them."""
    out = tmp_path_factory.mktemp("runs")
    common = dict(dataset="synthetic", synthetic=SYNTHETIC, quick=True, channel="plaintext", out=str(out))
    emb = run(scenario="embeddings", seeds=[0, 1], variants=["transfer", "target-only"], **common)
    priv = run(scenario="privnet", seeds=[0], variants=["lambda=0", "lambda=1"], options={"epochs": 2}, **common)
    return emb, priv


def test_run_returns_tables(two_runs):
    emb, priv = two_runs
    assert emb.status == "complete" and emb.run_dir.is_dir()
    assert list(emb.variants.index) == ["transfer", "target-only"]
    assert emb.variants.loc["transfer", "utility/HR@10"] == pytest.approx(emb.results["variants"][0]["utility"]["HR@10"]["mean"])
    assert list(emb.per_seed.index) == [("transfer", 0), ("transfer", 1), ("target-only", 0), ("target-only", 1)]
    # transfer vs the reference (target-only): one paired row per figure, over both seeds
    paired = emb.paired.set_index("figure")
    assert paired.loc["utility/HR@10", "n"] == 2 and paired.loc["utility/HR@10", "reference"] == "target-only"
    hr = [ps["utility"]["HR@10"] for v in emb.results["variants"] for ps in v["per_seed"]]
    assert paired.loc["utility/HR@10", "mean"] == pytest.approx((hr[0] - hr[2] + hr[1] - hr[3]) / 2)
    # privnet holds a release per epoch (and the epochs' batches) besides the final one
    rel = priv.releases
    releases = set(rel[(rel.variant == "lambda=0") & (rel.threat == "receiver")].release)
    assert {"x_trans@1", "x_trans@2", "x_trans_batch@1", "x_trans_batch@2", "x_trans"} <= releases
    assert rel.groupby(["variant", "threat", "attribute"]).worst_case.sum().eq(1).all()  # one worst case each


def test_load_gives_the_same_object(two_runs):
    emb, _ = two_runs
    again = load(emb.run_dir)
    assert again.results == emb.results
    assert again.variants.equals(emb.variants)


def test_every_run_follows_the_schema_and_the_schema_can_fail(two_runs):
    for r in two_runs:
        validate(r.results)
    broken = json.loads(json.dumps(two_runs[0].results))
    broken["variants"][0]["utility"]["HR@10"]["ci95"] = "wide"
    with pytest.raises(ValueError, match=r"at variants/0/utility/HR@10"):
        validate(broken)
    jsonschema.Draft202012Validator.check_schema(schema())


def test_report_rerenders_and_overlays(two_runs, tmp_path, capsys):
    emb, priv = two_runs
    (emb.run_dir / "report.html").unlink()
    assert report_main([str(emb.run_dir)]) == 0
    page = (emb.run_dir / "report.html").read_text()
    assert "privacy-utility trade-off" in page and "transfer" in page
    out = tmp_path / "frontier.html"
    assert report_main([str(emb.run_dir), str(priv.run_dir), "--out", str(out)]) == 0
    overlay = out.read_text()
    assert "2 runs on one frontier" in overlay and "lambda=1" in overlay and "target-only" in overlay
    capsys.readouterr()
    assert report_main([str(priv.run_dir), "--markdown"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| variant | HR@10 |") and table[1].startswith("|---|")
    names = [row.split(" | ")[0].lstrip("| ") for row in table[2:]]
    assert set(names) >= {v["name"] for v in priv.results["variants"]}
    with pytest.raises(SystemExit):
        report_main([str(tmp_path / "nothing-here")])
    assert "has no results.json" in capsys.readouterr().err


def test_run_checks_before_it_writes(tmp_path):
    with pytest.raises(ConfigError, match="unknown option 'epoch'"):
        run(scenario="privnet", options={"epoch": 3}, out=str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()
