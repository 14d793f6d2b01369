"""End-to-end runs through the CLI and the engine on small synthetic data (in-process)."""

import json

import numpy as np
import pytest

from sim.config import ConfigError, RunConfig
from sim.engine import run_experiment
from sim.run import main


def _results(run_root):
    (run_dir,) = [p for p in run_root.iterdir() if p.is_dir()]
    return run_dir, json.loads((run_dir / "results.json").read_text())


def test_cli_list_names_every_scenario(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "embeddings" in out and "privnet" in out


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--scenario", "nope"], "valid scenarios: embeddings"),
        (["--scenario", "embeddings", "--runtime", "mars"], "invalid choice"),
        (["--scenario", "embeddings", "--variants", "transfer", "bogus"], "unknown variant(s) bogus"),
        (["--scenario", "embeddings", "--public-fraction", "1.5"], "between 0.05 and 0.95"),
        (["--scenario", "embeddings", "--set", "novalue"], "expected KEY=VALUE"),
    ],
)
def test_cli_rejects_bad_options_with_valid_choices(argv, fragment, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert fragment in capsys.readouterr().err


def test_embeddings_run_writes_every_output(synthetic_config, tmp_path):
    config = synthetic_config()
    argv = [
        "--scenario", "embeddings", "--dataset", "synthetic", "--quick", "--quiet", "--channel", "plaintext",
        "--out", config.out, *[a for k, v in config.synthetic.items() for a in ("--synthetic", f"{k}={v}")],
    ]
    assert main(argv) == 0
    run_dir, results = _results(tmp_path / "runs")
    for name in ("config.json", "results.json", "metrics.csv", "report.html", "transcript.jsonl"):
        assert (run_dir / name).stat().st_size > 0, name
    assert results["schema"] == "cdrsim.results" and results["schema_version"] == 1
    assert results["channel"] == "plaintext" and results["status"] == "complete"
    by_name = {v["name"]: v for v in results["variants"]}
    assert set(by_name) == {"transfer", "target-only", "popularity"}
    transfer = by_name["transfer"]
    # The plaintext wire eavesdropper and the curious receiver both read the embeddings.
    for threat in ("wire", "receiver"):
        assert transfer["attacks"][threat]["decoded"] == [True]
        gender = transfer["attacks"][threat]["gender"]
        assert gender["baseline"]["auc"]["mean"] == pytest.approx(0.5)
        # strong planted signal: the intercepted embeddings leak gender
        assert gender["best"]["auc"]["mean"] > 0.6
    # Nothing was released in the floors: the attacker is left with the prior.
    assert by_name["popularity"]["attacks"]["receiver"]["decoded"] == [False]
    assert by_name["popularity"]["attacks"]["receiver"]["gender"]["best"]["auc"]["mean"] == pytest.approx(0.5, abs=0.05)
    lines = [json.loads(x) for x in (run_dir / "transcript.jsonl").read_text().splitlines()]
    assert {line["type"] for line in lines} >= {"control", "artifact", "ack", "report"}
    assert all(line["status"] == "delivered" for line in lines)
    saved = list((run_dir / "intercepted" / "transfer" / "seed0" / "wire").iterdir())
    assert any(p.suffix == ".safetensors" for p in saved) and any(p.suffix == ".csv" for p in saved)


def test_same_seed_same_metrics(synthetic_config):
    def metrics(cfg):
        result = run_experiment(cfg)
        return [(r.variant.name, r.utility, {t: {a: r.attacks[t][a]["metrics"] for a in ("gender", "age_group")} for t in r.attacks}) for r in result.runs]

    first = metrics(synthetic_config(variants=["transfer"]))
    second = metrics(synthetic_config(variants=["transfer"]))
    assert first == second


def test_unknown_dataset_option_is_a_config_error(synthetic_config):
    with pytest.raises(ConfigError, match="valid: ml-100k, ml-1m, synthetic"):
        run_experiment(synthetic_config(dataset="movielens"))
