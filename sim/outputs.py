"""Everything a run writes: results.json (versioned), metrics.csv, transcript.jsonl,
report.html, and the summary table printed at the end (captures go to intercepted/ as each
task finishes)."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path
from typing import Any

from .engine import ExperimentResult, TaskResult
from .evaluate import ATTRIBUTES, mean_ci
from .jsonio import dump_json
from .world import world

SCHEMA = "cdrsim.results"
SCHEMA_VERSION = 1
THREATS = ("receiver", "wire")
ATTACK_METRICS = ("auc", "balanced_accuracy", "macro_f1", "accuracy", "weighted_precision", "weighted_recall", "weighted_f1")


def _stat_block(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    keys = sorted({k for d in per_seed for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return {k: mean_ci([d.get(k) for d in per_seed]) for k in keys}


def variant_summary(runs: list[TaskResult]) -> dict[str, Any]:
    first = runs[0]
    attacks: dict[str, Any] = {}
    for threat in THREATS:
        per_seed = [r.attacks[threat] for r in runs]
        block: dict[str, Any] = {"decoded": [bool(a["decoded"]) for a in per_seed]}
        for attr in ATTRIBUTES:
            block[attr] = {
                "best": _stat_block([a[attr]["metrics"] for a in per_seed]),
                "baseline": _stat_block([a[attr]["baseline"] for a in per_seed]),
                "best_attacker": [a[attr]["best"] for a in per_seed],
            }
        if all("vmeasure_gender" in a for a in per_seed):
            block["vmeasure_gender"] = mean_ci([a["vmeasure_gender"] for a in per_seed])
        attacks[threat] = block
    return {
        "name": first.variant.name,
        "params": first.variant.params,
        "utility": _stat_block([r.utility for r in runs]),
        "attacks": attacks,
        "per_seed": [
            {
                "seed": r.seed,
                "utility": r.utility,
                "details": r.details,
                "attacks": {t: {k: v for k, v in r.attacks[t].items() if k != "observed"} for t in THREATS},
                "observed": {t: r.attacks[t]["observed"] for t in THREATS},
                "rejected_messages": r.rejected,
                "messages": len(r.transcript),
            }
            for r in runs
        ],
    }


def results_dict(result: ExperimentResult, timing: dict[str, float] | None = None) -> dict[str, Any]:
    config = result.config
    w = world(config.run_dict(config.seeds[0]))
    groups: dict[str, list[TaskResult]] = {}
    for run in result.runs:
        groups.setdefault(run.variant.name, []).append(run)
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "status": "failed" if result.error else "complete",
        "error": result.error,
        "scenario": {"name": result.scenario.name, "title": result.scenario.title, "paper": result.scenario.paper},
        "dataset": {
            "name": config.dataset,
            "source": w.dataset.source,
            "fingerprint": w.dataset.fingerprint(),
            "n_users": w.dataset.n_users,
            "n_items": w.dataset.n_items,
            "n_ratings": int(len(w.dataset.ratings)),
            "split": w.split.description,
            "public_fraction": config.public_fraction,
            "n_public_users": int(w.public.size),
        },
        "channel": config.channel,
        "runtime": config.runtime,
        "seeds": list(config.seeds),
        "quick": config.quick,
        "threat_models": {
            "receiver": "curious receiver: the target party attacks the plaintext artifacts it is given",
            "wire": "wire eavesdropper: sees every envelope on the transport, decodes what it can",
        },
        "variants": [variant_summary(runs) for runs in groups.values()],
        "timing": timing or {},
    }


def write_metrics_csv(results: dict[str, Any], path: Path) -> None:
    """Long format: one row per (variant, seed, group, metric)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["variant", "seed", "group", "metric", "value"])
        for v in results["variants"]:
            for ps in v["per_seed"]:
                for metric, value in sorted(ps["utility"].items()):
                    out.writerow([v["name"], ps["seed"], "utility", metric, value])
                for threat in THREATS:
                    for attr in ATTRIBUTES:
                        a = ps["attacks"][threat][attr]
                        for which in ("metrics", "baseline"):
                            label = "best" if which == "metrics" else "baseline"
                            for metric, value in sorted(a[which].items()):
                                if isinstance(value, (int, float)):
                                    out.writerow([v["name"], ps["seed"], f"{threat}/{attr}/{label}", metric, value])


def fmt(stat: dict[str, Any] | None, digits: int = 3) -> str:
    if not stat or stat.get("mean") is None:
        return "-"
    if stat["n"] > 1:
        return f"{stat['mean']:.{digits}f}±{stat['ci95']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}"


def summary_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Variants x (utility, leakage). Leakage columns: best attacker's ROC-AUC / balanced
    accuracy per threat model (rcv = curious receiver, wire = eavesdropper on the transport)."""
    utility_keys = [k for k in ("HR@10", "NDCG@10", "MAE", "RMSE") if any(k in v["utility"] for v in results["variants"])]
    header = ["variant", *utility_keys, "rcv gender AUC", "rcv gender BA", "rcv age AUC", "wire gender AUC"]

    def leak(a: dict[str, Any]) -> list[str]:
        return [
            fmt(a["gender"]["best"].get("auc")),
            fmt(a["gender"]["best"].get("balanced_accuracy")),
            fmt(a["age_group"]["best"].get("auc")),
        ]

    rows = []
    for v in results["variants"]:
        rows.append(
            [
                v["name"],
                *(fmt(v["utility"].get(k)) for k in utility_keys),
                *leak(v["attacks"]["receiver"]),
                fmt(v["attacks"]["wire"]["gender"]["best"].get("auc")),
            ]
        )
    base = results["variants"][0]["attacks"]["receiver"]
    baseline = [
        fmt(base["gender"]["baseline"].get("auc")),
        fmt(base["gender"]["baseline"].get("balanced_accuracy")),
        fmt(base["age_group"]["baseline"].get("auc")),
    ]
    rows.append(["no-artifact baseline", *("" for _ in utility_keys), *baseline, baseline[0]])
    return header, rows


def print_summary(results: dict[str, Any], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=max(120, Console().width))
    header, rows = summary_rows(results)
    title = (
        f"{results['scenario']['name']} on {results['dataset']['name']} · channel {results['channel']} · "
        f"runtime {results['runtime']} · seeds {results['seeds']}"
    )
    table = Table(title=title)
    for h in header:
        table.add_column(h, justify="left" if h == "variant" else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _plot_png(results: dict[str, Any]) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    utility = "HR@10" if "HR@10" in results["variants"][0]["utility"] else None
    if utility is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for v in results["variants"]:
        u = v["utility"].get(utility)
        a = v["attacks"]["receiver"]["gender"]["best"].get("auc")
        if not u or not a or u.get("mean") is None or a.get("mean") is None:
            continue
        ax.errorbar(a["mean"], u["mean"], xerr=a["ci95"], yerr=u["ci95"], fmt="o", capsize=3)
        ax.annotate(v["name"], (a["mean"], u["mean"]), textcoords="offset points", xytext=(5, 5))
    ax.axvline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("gender attack ROC-AUC (curious receiver, best attacker)")
    ax.set_ylabel(f"target {utility}")
    ax.set_title("privacy-utility trade-off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def write_html(results: dict[str, Any], path: Path) -> None:
    header, rows = summary_rows(results)
    table = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
    table += "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    png = _plot_png(results)
    img = f'<img alt="trade-off plot" src="data:image/png;base64,{png}">' if png else ""
    split = html.escape(str(results["dataset"]["split"]))
    path.write_text(
        f"""<!doctype html><html><head><meta charset="utf-8"><title>cdrsim · {html.escape(results["scenario"]["name"])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}</style></head>
<body><h1>{html.escape(results["scenario"]["title"])}</h1>
<p>dataset {html.escape(results["dataset"]["name"])} ({results["dataset"]["n_users"]} users) · split {split} ·
channel <b>{html.escape(results["channel"])}</b> · runtime {html.escape(results["runtime"])} · seeds {results["seeds"]} · status {results["status"]}</p>
<p>Attack figures: best attacker (chosen by cross-validation on public users) tested on private users; ± is the 95% CI over seeds.
<i>receiver</i> = curious target party; <i>wire</i> = eavesdropper on the transport.</p>
<table>{table}</table>{img}</body></html>
""",
        encoding="utf-8",
    )


def write_outputs(result: ExperimentResult, run_dir: Path, timing: dict[str, float] | None = None) -> dict[str, Any]:
    """Write every output file; safe to call on a partial (failed) result."""
    run_dir.mkdir(parents=True, exist_ok=True)
    transcript = run_dir / "transcript.jsonl"
    transcript.unlink(missing_ok=True)
    with open(transcript, "a", encoding="utf-8") as f:
        for run in result.runs:
            for line in run.transcript:
                f.write(json.dumps(line, sort_keys=True) + "\n")
    if not result.runs:
        transcript.touch()
        dump_json(
            {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "status": "failed", "error": result.error, "variants": []},
            run_dir / "results.json",
        )
        return {}
    results = results_dict(result, timing)
    dump_json(results, run_dir / "results.json")
    write_metrics_csv(results, run_dir / "metrics.csv")
    write_html(results, run_dir / "report.html")
    return results
