"""Everything a run writes: results.json (schema version 2, validated), metrics.csv,
transcript.jsonl, report.html, and the summary table printed at the end. (What the
eavesdroppers captured goes to intercepted/ as each task finishes.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ..engine import ExperimentResult
from ..jsonio import dump_json, json_default
from .html import write_report
from .results_json import SCHEMA, SCHEMA_VERSION, results_dict, validate
from .tables import summary_rows, write_metrics_csv

__all__ = ["print_summary", "results_dict", "summary_rows", "validate", "write_outputs"]


def write_outputs(result: ExperimentResult, run_dir: Path, timing: dict[str, float] | None = None) -> dict[str, Any]:
    """Write every output file; safe to call on a partial (failed) result."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "transcript.jsonl", "w", encoding="utf-8") as f:
        for run in result.runs:
            for line in run.transcript:
                f.write(json.dumps(line, sort_keys=True) + "\n")
    if not result.runs:
        failed = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "status": "failed", "error": result.error, "variants": []}
        dump_json(failed, run_dir / "results.json")
        return {}
    results = json.loads(json.dumps(results_dict(result, timing), default=json_default))  # exactly what the file will hold
    validate(results)
    dump_json(results, run_dir / "results.json")
    write_metrics_csv(results, run_dir / "metrics.csv")
    write_report(results, run_dir / "report.html")
    return results


def print_summary(results: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console(width=max(140, Console().width))
    header, rows = summary_rows(results)
    pop = results["dataset"]["population"]
    title = (
        f"{results['scenario']['name']} on {results['dataset']['name']} ({pop['rule']}: {pop['users']} users, "
        f"{pop['private']} private) · channel {results['channel']} · runtime {results['runtime']} · seeds {results['seeds']}"
    )
    table = Table(title=title)
    for h in header:
        table.add_column(h, justify="left" if h == "variant" else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
