"""A run's results as a Python object: results.json plus its tables as pandas DataFrames."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd


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

    @property
    def variants(self) -> pd.DataFrame:
        """One row per variant: parameters, then every utility and attack figure's mean and
        95% CI over seeds (columns `<figure>` and `<figure> ci95`)."""
        rows = []
        for v in self.results.get("variants", []):
            row: dict[str, Any] = {"variant": v["name"], **{f"param {k}": p for k, p in v.get("params", {}).items()}}
            for name, stat in _flat_stats(v).items():
                row[name] = stat.get("mean")
                row[f"{name} ci95"] = stat.get("ci95")
            rows.append(row)
        return pd.DataFrame(rows).set_index("variant") if rows else pd.DataFrame()

    @property
    def per_seed(self) -> pd.DataFrame:
        """One row per (variant, seed): utility and every attack figure of that run."""
        rows = []
        for v in self.results.get("variants", []):
            for ps in v.get("per_seed", []):
                row: dict[str, Any] = {"variant": v["name"], "seed": ps["seed"]}
                row.update({f"utility/{k}": x for k, x in ps.get("utility", {}).items()})
                for threat, attacks in ps.get("attacks", {}).items():
                    row.update({f"{threat}/{k}": x for k, x in _flat_numbers(attacks).items()})
                rows.append(row)
        return pd.DataFrame(rows).set_index(["variant", "seed"]) if rows else pd.DataFrame()


def _is_stat(obj: Any) -> bool:
    return isinstance(obj, dict) and "mean" in obj and "ci95" in obj


def _flat_stats(variant: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}

    def walk(prefix: str, obj: Any) -> None:
        if _is_stat(obj):
            out[prefix] = obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}/{k}" if prefix else str(k), v)

    walk("utility", variant.get("utility", {}))
    walk("", variant.get("attacks", {}))
    return out


def _flat_numbers(obj: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flat_numbers(v, f"{prefix}/{k}" if prefix else str(k)))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix] = obj
    return out
