"""A run's results as a Python object: results.json plus its tables as pandas DataFrames.

from sim.api import load
r = load("runs/privnet-20261130-120000")
r.variants     # one row per variant: every utility and leakage figure, mean and 95% CI
r.per_seed     # one row per (variant, seed): utility, and each attack's worst-case/final/baseline figures
r.releases     # one row per (variant, seed, threat, attack, attribute, release): the leakage curve
r.paired       # one row per (variant, figure): the paired difference to the reference variant
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .outputs.results_json import leakage_figures
from .stats import numeric_leaves


@dataclass
class RunResults:
    run_dir: Path
    results: dict[str, Any]  # results.json as written
    config: dict[str, Any]  # config.json: everything needed to rerun it

    @classmethod
    def load(cls, run_dir: Path) -> RunResults:
        run_dir = Path(run_dir)
        path = run_dir / "results.json"
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir} has no results.json: not a cdrsim run directory, or the run never started")
        results = json.loads(path.read_text(encoding="utf-8"))
        config_path = run_dir / "config.json"
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        return cls(run_dir, results, config)

    @property
    def status(self) -> str:
        return str(self.results.get("status"))

    def _attack_kinds(self) -> dict[str, str]:
        return {a["name"]: a["kind"] for a in self.results.get("scenario", {}).get("attacks", [])}

    @property
    def variants(self) -> pd.DataFrame:
        """One row per variant: parameters, then each utility and leakage figure's mean and
        95% CI over seeds (columns `<figure>` and `<figure> ci95`)."""
        rows = []
        for v in self.results.get("variants", []):
            row: dict[str, Any] = {"variant": v["name"], **{f"param {k}": p for k, p in v.get("params", {}).items()}}
            for section in ("utility", "leakage"):
                for path, stat in _stats(v.get(section, {})).items():
                    name = "/".join((section, *path)) if section == "utility" else "/".join(path)
                    row[name] = stat.get("mean")
                    row[f"{name} ci95"] = stat.get("ci95")
            rows.append(row)
        return _frame(rows, ["variant"])

    @property
    def per_seed(self) -> pd.DataFrame:
        """One row per (variant, seed): utility, and each threat model's attack figures."""
        kinds = self._attack_kinds()
        rows = []
        for v in self.results.get("variants", []):
            for ps in v.get("per_seed", []):
                row: dict[str, Any] = {"variant": v["name"], "seed": ps["seed"]}
                row.update({f"utility/{k}": x for k, x in ps.get("utility", {}).items()})
                for threat, attacks in ps.get("attacks", {}).items():
                    for name, result in attacks.items():
                        figures = leakage_figures(kinds.get(name, "attribute"), result)
                        row.update({"/".join((threat, name, *p)): x for p, x in numeric_leaves(figures).items()})
                rows.append(row)
        return _frame(rows, ["variant", "seed"])

    @property
    def releases(self) -> pd.DataFrame:
        """The leakage curve: the curve attacker's figures on every release each threat model held."""
        rows = []
        for v in self.results.get("variants", []):
            for ps in v.get("per_seed", []):
                for threat, attacks in ps.get("attacks", {}).items():
                    for name, result in attacks.items():
                        for attr, block in result.items():
                            if not isinstance(block, dict) or "curve" not in block:
                                continue
                            worst = block["worst_case"].get("release")
                            for release, entry in block["curve"].items():
                                rows.append(
                                    {
                                        "variant": v["name"], "seed": ps["seed"], "threat": threat, "attack": name,
                                        "attribute": attr, "release": release, "cv_auc": entry.get("cv_auc"),
                                        "worst_case": release == worst, **entry.get("metrics", {}),
                                    }
                                )  # fmt: skip
        return pd.DataFrame(rows)

    @property
    def paired(self) -> pd.DataFrame:
        """Paired differences to the reference variant: one row per (variant, figure)."""
        rows = []
        for v in self.results.get("variants", []):
            paired = v.get("paired")
            if not paired:
                continue
            for section in ("utility", "leakage"):
                for path, stat in _stats(paired.get(section, {})).items():
                    rows.append(
                        {
                            "variant": v["name"], "reference": paired["reference"], "figure": "/".join((section, *path)),
                            "mean": stat["mean"], "ci95": stat["ci95"], "n": stat["n"], "excludes_zero": stat["excludes_zero"],
                        }
                    )  # fmt: skip
        return pd.DataFrame(rows)


def _stats(obj: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], dict[str, Any]]:
    """The stat blocks ({mean, ci95, n, values}) of a nested dict, by path."""
    if isinstance(obj, dict) and "mean" in obj and "ci95" in obj:
        return {prefix: obj}
    out: dict[tuple[str, ...], dict[str, Any]] = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            out.update(_stats(value, (*prefix, str(key))))
    return out


def _frame(rows: list[dict[str, Any]], index: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows).set_index(index) if rows else pd.DataFrame()
