"""The command line's promises: options are checked and errors name the valid choices, a bad
option or dataset leaves no run directory behind, and answering --list, --help or an argument
error never loads the heavy machinery."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sim.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_a_typo_in_set_names_the_valid_keys(capsys):
    err = _error(["--scenario", "privnet", "--set", "epoch=15"], capsys)
    assert "unknown option 'epoch' for scenario 'privnet'" in err
    assert "epochs" in err and "patience" in err and "--help-options" in err


@pytest.mark.parametrize(
    "option, fragment",
    [
        ("epochs=fifteen", "--set epochs='fifteen': expected int"),
        ("lr=true", "--set lr=True: expected float"),
        ("hidden=[64, 0.5]", "expected list[int]"),
        ("activation=tanh", "choose one of sigmoid, relu"),
        ("lam=0.5", "option 'lam' is set by each variant; choose variants with --variants or --grid lambda="),
    ],
)
def test_ill_typed_or_variant_options_are_errors(option, fragment, capsys):
    assert fragment in _error(["--scenario", "privnet", "--set", option], capsys)


def test_help_options_lists_every_settable_option(capsys):
    assert main(["--scenario", "privnet", "--help-options"]) == 0
    out = capsys.readouterr().out
    for name in ("epochs", "hidden", "activation", "adv_steps"):
        assert f"  {name} " in out
    assert "set by each variant" in out and "lam" in out


def test_grid_values_from_the_command_line(capsys):
    from sim.cli import build_parser, config_from_args

    config = config_from_args(build_parser().parse_args(["--scenario", "privnet", "--grid", "lambda=0,0.3,2"]))
    names = [v.name for v in config.select_variants(config.validate())]
    assert names[:3] == ["lambda=0", "lambda=0.3", "lambda=2"] and "blurme" in names
    # a second axis that varies shows up in the names
    config.grid["adversary"] = ["paper", "strong"]
    assert [v.name for v in config.select_variants(config.validate())][:2] == ["lambda=0,adversary=paper", "lambda=0,adversary=strong"]
    assert "unknown grid axis 'size'; axes: lambda, adversary" in _error(["--scenario", "privnet", "--grid", "size=10"], capsys)
    err = _error(["--scenario", "privnet", "--variants", "lambda=2"], capsys)
    assert "unknown variant(s) lambda=2" in err and "--grid AXIS=v1,v2" in err


def test_bad_options_and_datasets_leave_no_run_directory(tmp_path, capsys):
    out = tmp_path / "runs"
    _error(["--scenario", "embeddings", "--set", "dims=3", "--out", str(out)], capsys)
    missing = tmp_path / "no-such-dir"
    status = main(["--scenario", "embeddings", "--dataset", "ml-1m", "--data-dir", str(missing), "--out", str(out), "--quiet"])
    assert status == 1
    assert "does not exist or is not a directory" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_listing_and_argument_errors_import_no_heavy_package():
    """--list, --help and a bad argument answer without importing torch, Ray, Flower or
    scikit-learn (which take seconds): only the scenario declarations are read."""
    script = (
        "import sys\n"
        "from sim.cli import main\n"
        "for argv in (['--list'], ['--help'], ['--scenario', 'privnet', '--set', 'epoch=1'], ['--scenario', 'privnet', '--help-options']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = sorted(m for m in ('torch', 'ray', 'flwr', 'sklearn', 'pandas') if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "HEAVY []" in proc.stderr, proc.stderr[-2000:]
