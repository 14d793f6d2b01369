"""The tables of a run: the summary (variants x utility and leakage, worst case first) shown in
the terminal and report.html, and metrics.csv (every per-seed figure in long format)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from ..stats import numeric_leaves

UTILITY_COLUMNS = ("HR@10", "NDCG@10", "MAE", "RMSE", "HR@100 members", "HR@100 non-members")


def fmt(stat: dict[str, Any] | None, digits: int = 3) -> str:
    if not stat or stat.get("mean") is None:
        return "-"
    if stat["n"] > 1:
        return f"{stat['mean']:.{digits}f}±{stat['ci95']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}"


def fmt_paired(stat: dict[str, Any] | None, digits: int = 3) -> str:
    """A paired difference, starred when its 95% interval excludes zero."""
    if not stat or stat.get("mean") is None:
        return ""
    text = f"{stat['mean']:+.{digits}f}" + (f"±{stat['ci95']:.{digits}f}" if stat["n"] > 1 else "")
    return text + ("*" if stat.get("excludes_zero") else "")


def dig(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _age_attribute(results: dict[str, Any], attack: str) -> str:
    """The age attribute an attribute attack reports (`age_group`, or e.g. `age_bracket`)."""
    for v in results["variants"]:
        for attribute, block in (dig(v["leakage"], "receiver", attack) or {}).items():
            if attribute.startswith("age") and isinstance(block, dict):
                return attribute
    return "age_group"


def _leak_columns(results: dict[str, Any]) -> list[tuple[str, tuple[str, ...]]]:
    """(column title, path under a variant's `leakage`) for the scenario's attacks."""
    cols: list[tuple[str, tuple[str, ...]]] = []
    attribute_attacks = 0
    for attack in results["scenario"]["attacks"]:
        name, kind = attack["name"], attack["kind"]
        if kind == "attribute" and attribute_attacks:  # a second attribute attack: name its columns
            cols += [(f"{name}: {title}", path) for title, path in _leak_columns({**results, "scenario": {"attacks": [attack]}})]
        elif kind == "attribute":
            attribute_attacks += 1
            age = _age_attribute(results, name)
            cols += [
                ("rcv gender AUC (worst)", ("receiver", name, "gender", "worst_case", "auc")),
                ("rcv gender AUC (final)", ("receiver", name, "gender", "final", "auc")),
                ("rcv gender BA", ("receiver", name, "gender", "worst_case", "balanced_accuracy")),
                ("rcv age AUC (worst)", ("receiver", name, age, "worst_case", "auc")),
                ("wire gender AUC", ("wire", name, "gender", "worst_case", "auc")),
            ]
        elif kind == "membership":
            if any(dig(v["leakage"], "receiver", name, "paper") for v in results["variants"]):
                cols.append(("rcv paper-MLP AUC", ("receiver", name, "paper", "auc")))
            cols += [
                ("rcv member AUC", ("receiver", name, "best", "auc")),
                ("rcv TPR@1%FPR", ("receiver", name, "best", "tpr_at_fpr", "0.01")),
                ("rcv advantage", ("receiver", name, "best", "advantage")),
                ("wire member AUC", ("wire", name, "best", "auc")),
            ]
        else:
            cols += [
                ("rcv cosine", ("receiver", name, "metrics", "cosine")),
                ("rcv R²", ("receiver", name, "metrics", "r2")),
                ("rcv re-id top1", ("receiver", name, "metrics", "reid_top1")),
            ]
    return cols


def summary_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Variants x (utility, leakage, paired differences to the reference variant)."""
    variants = results["variants"]
    head = results["scenario"]["headline"]
    shown = dict.fromkeys((head["utility"], *UTILITY_COLUMNS))  # the headline first, once
    utility_keys = [k for k in shown if any(k in v["utility"] for v in variants)]
    leaks = _leak_columns(results)
    lead = leaks[0][1] if leaks else None
    reference = results["scenario"].get("reference_variant")
    paired_any = any(v.get("paired") for v in variants)
    header = ["variant", *utility_keys, *(title for title, _ in leaks)]
    if paired_any:
        references = {v["paired"].get("reference") for v in variants if v.get("paired")}
        # one reference for every variant is named; per-variant ones (e.g. beta=1 of the same model) are not
        versus = (
            f" vs {references.pop()}" if len(references) == 1 else f" vs {reference}" if reference and " " in reference else " vs reference"
        )
        header += [f"Δ{head['utility']}{versus}", f"Δ{leaks[0][0]}" if leaks else "Δleak"]
    rows = []
    for v in variants:
        row = [v["name"], *(fmt(v["utility"].get(k)) for k in utility_keys), *(fmt(dig(v["leakage"], *path)) for _, path in leaks)]
        if paired_any:
            paired = v.get("paired") or {}
            same = v["name"] == reference
            row += [
                "" if same else fmt_paired(dig(paired, "utility", head["utility"])),
                "" if same or lead is None else fmt_paired(dig(paired, "leakage", *lead)),
            ]
        rows.append(row)
    if variants and leaks and results["scenario"]["attacks"][0]["kind"] == "attribute":
        name = results["scenario"]["attacks"][0]["name"]
        base = variants[0]["leakage"].get("receiver", {}).get(name, {})
        age = _age_attribute(results, name)
        baseline = {
            "rcv gender AUC (worst)": fmt(dig(base, "gender", "baseline", "auc")),
            "rcv gender AUC (final)": fmt(dig(base, "gender", "baseline", "auc")),
            "rcv gender BA": fmt(dig(base, "gender", "baseline", "balanced_accuracy")),
            "rcv age AUC (worst)": fmt(dig(base, age, "baseline", "auc")),
            "wire gender AUC": fmt(dig(base, "gender", "baseline", "auc")),
        }
        rows.append(
            ["no-artifact baseline", *("" for _ in utility_keys), *(baseline.get(t, "") for t, _ in leaks)]
            + [""] * (2 if paired_any else 0)
        )
    return header, rows


def write_metrics_csv(results: dict[str, Any], path: Path) -> None:
    """Long format: one row per (variant, seed, group, metric) over every number a task
    reported (utility, utility per user group, every attack figure)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["variant", "seed", "group", "metric", "value"])
        for v in results["variants"]:
            for ps in v["per_seed"]:
                for metric, value in sorted(ps["utility"].items()):
                    out.writerow([v["name"], ps["seed"], "utility", metric, value])
                for path, value in sorted(numeric_leaves(ps["utility_groups"]).items()):
                    out.writerow([v["name"], ps["seed"], "utility/" + "/".join(path[:-1]), path[-1], value])
                for path, value in sorted(numeric_leaves(ps["attacks"]).items()):
                    out.writerow([v["name"], ps["seed"], "/".join(path[:-1]), path[-1], value])
