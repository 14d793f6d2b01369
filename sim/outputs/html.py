"""report.html: the summary table, the privacy-utility plot with 95% CI error bars, and the
per-release leakage curves; and the overlay of several runs on one frontier."""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

from .tables import dig, fmt, summary_rows  # noqa: E402

_EPOCH = re.compile(r"@(\d+)$")
STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
    "img{max-width:100%}.note{color:#555;font-size:90%}"
)


def headline_point(results: dict[str, Any], variant: dict[str, Any]) -> tuple[dict | None, dict | None]:
    """(leakage stat, utility stat) of a variant's headline figures."""
    head = results["scenario"]["headline"]
    leak = head["leakage"]
    return dig(variant["leakage"], leak["threat"], leak["attack"], *leak["path"]), variant["utility"].get(head["utility"])


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _label(results: dict[str, Any]) -> str:
    h = results["scenario"]["headline"]["leakage"]
    return f"{' '.join(h['path'])} ({h['threat']}, {h['attack']})"


def tradeoff_png(runs: list[tuple[str, dict[str, Any]]]) -> str | None:
    """One point per variant (and run): headline leakage against headline utility, 95% CIs."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = "osD^vP*X"
    drawn = False
    for i, (label, results) in enumerate(runs):
        for v in results["variants"]:
            leak, util = headline_point(results, v)
            if not leak or not util or leak.get("mean") is None or util.get("mean") is None:
                continue
            ax.errorbar(leak["mean"], util["mean"], xerr=leak["ci95"], yerr=util["ci95"], fmt=markers[i % len(markers)], capsize=3,
                        color=f"C{i}", label=label if not drawn or len(runs) > 1 else None)  # fmt: skip
            ax.annotate(v["name"], (leak["mean"], util["mean"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    first = runs[0][1]
    ax.axvline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel(_label(first) + "  (chance = 0.5)")
    ax.set_ylabel(f"utility: {first['scenario']['headline']['utility']}")
    ax.set_title("privacy-utility trade-off (mean ± 95% CI over seeds)")
    if len(runs) > 1:
        ax.legend(fontsize=8)
    return _png(fig)


def curves_png(results: dict[str, Any], threat: str = "receiver", attribute: str = "gender") -> str | None:
    """Leakage on each release the party received, per variant: the curve attacker's AUC on the
    private users, per epoch (the final release at the right)."""
    attack = next((a["name"] for a in results["scenario"]["attacks"] if a["kind"] == "attribute"), None)
    if attack is None:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for i, v in enumerate(results["variants"]):
        curve = dig(v["curve"], threat, attack, attribute) or {}
        points = []
        for release, metrics in curve.items():
            m = _EPOCH.search(release)
            stat = metrics.get("auc")
            if m and stat and stat.get("mean") is not None:
                points.append((int(m.group(1)), stat["mean"], stat["ci95"] or 0.0))
        if len(points) < 2:
            continue
        points.sort()
        xs, ys, es = zip(*points)
        ax.plot(xs, ys, marker=".", color=f"C{i % 10}", label=v["name"])
        ax.fill_between(xs, [y - e for y, e in zip(ys, es)], [y + e for y, e in zip(ys, es)], color=f"C{i % 10}", alpha=0.12)
        final = dig(v["leakage"], threat, attack, attribute, "final", "auc")
        if final and final.get("mean") is not None:
            ax.scatter([xs[-1] + 1], [final["mean"]], marker="*", color=f"C{i % 10}")
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("epoch of the release (★ the final release, best attacker)")
    ax.set_ylabel(f"{attribute} ROC-AUC on private users ({threat})")
    ax.set_title("leakage of every release the receiver held")
    ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def _numeric_axis(variants: list[dict[str, Any]]) -> str | None:
    """The variant parameter that takes three or more numeric values (e.g. a privacy budget)."""
    for key in variants[0].get("params", {}) if variants else ():
        values = {v["params"].get(key) for v in variants}
        if len(values) >= 3 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in values):
            return key
    return None


def _lines(variants: list[dict[str, Any]], axis: str) -> dict[str, list[dict[str, Any]]]:
    """Variants by the values of their other parameters (one line each), sorted along `axis`."""
    lines: dict[str, list[dict[str, Any]]] = {}
    for v in variants:
        label = ",".join(f"{k}={x}" for k, x in v["params"].items() if k != axis) or v["name"]
        lines.setdefault(label, []).append(v)
    return {k: sorted(vs, key=lambda v: v["params"][axis]) for k, vs in lines.items()}


def _errorline(ax, xs, stats, **kw) -> None:
    pts = [(x, s["mean"], s.get("ci95") or 0.0) for x, s in zip(xs, stats) if s and s.get("mean") is not None]
    if pts:
        x, y, e = zip(*pts)
        ax.errorbar(x, y, yerr=e, capsize=2, marker=kw.pop("marker", "o"), **kw)


def axis_png(results: dict[str, Any]) -> str | None:
    """Utility (as a ratio to each variant's reference where there is one: ΔMAE) and headline
    leakage against a numeric variant parameter, one line per value of the other parameters;
    then the headline utility of each user group against it."""
    variants = [v for v in results["variants"] if v.get("params")]
    axis = _numeric_axis(variants)
    if axis is None:
        return None
    head = results["scenario"]["headline"]
    metric, leak = head["utility"], head["leakage"]
    lines = _lines(variants, axis)
    groups = sorted({g for v in variants for g in v.get("utility_groups", {})})
    fig, axes = plt.subplots(1, 1 + len(lines) * bool(groups), figsize=(6 + 4 * len(lines) * bool(groups), 4.5), squeeze=False)
    ax, right = axes[0][0], axes[0][0].twinx()
    relative = any("relative_to_reference" in v for v in variants)
    for i, (label, vs) in enumerate(lines.items()):
        xs = [v["params"][axis] for v in vs]
        ratio = [(v.get("relative_to_reference") or {}).get(metric) or ({"mean": 1.0} if "paired" not in v else None) for v in vs]
        _errorline(ax, xs, ratio if relative else [v["utility"].get(metric) for v in vs], color=f"C{i}", label=f"{label}: {metric}")
        auc = [dig(v["leakage"], leak["threat"], leak["attack"], *leak["path"]) for v in vs]
        _errorline(right, xs, auc, color=f"C{i}", linestyle="--", marker="x", label=f"{label}: leakage")
    ax.set_xlabel(axis)
    ax.set_ylabel(f"{metric} / {metric} of the reference" if relative else metric)
    right.set_ylabel(f"{' '.join(leak['path'])} ({leak['threat']}, {leak['attack']}), dashed")
    ax.set_title(f"utility and leakage against {axis} (mean ± 95% CI)")
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=7)
    for j, (label, vs) in enumerate(lines.items() if groups else ()):
        gx = axes[0][j + 1]
        for k, g in enumerate(groups):
            _errorline(gx, [v["params"][axis] for v in vs], [dig(v, "utility_groups", g, metric) for v in vs], color=f"C{k + 3}", label=g)
        gx.set_xlabel(axis)
        gx.set_ylabel(f"{metric} of the group")
        gx.set_title(label)
        gx.legend(fontsize=7)
    return _png(fig)


def _table(header: list[str], rows: list[list[str]]) -> str:
    out = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
    out += "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{out}</table>"


def _img(png: str | None, alt: str) -> str:
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{png}"></p>' if png else ""


def render(results: dict[str, Any]) -> str:
    """report.html of one run."""
    e = html.escape
    scen, data = results["scenario"], results["dataset"]
    pop = data.get("population", {})
    header, rows = summary_rows(results)
    groups = _groups_table(results)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>cdrsim · {e(scen["name"])}</title><style>{STYLE}</style></head>
<body><h1>{e(scen["title"])}</h1>
<p>dataset {e(data["name"])} ({data["n_users"]} users, {data["n_items"]} items) · population <b>{e(str(pop.get("rule")))}</b>:
{pop.get("users")} users, {pop.get("public")} public, {pop.get("private")} private · channel <b>{e(results["channel"])}</b> ·
runtime {e(results["runtime"])} · seeds {results["seeds"]} · status {e(results["status"])}</p>
<p class="note">Leakage: attackers train on public users and are scored on private users; <i>worst</i> is the release (of every one
the party received) and attacker chosen by cross-validation on public users, <i>final</i> the release the run ended with.
<i>rcv</i> = curious receiver (the receiving party), <i>wire</i> = eavesdropper on the transport. ± is the 95% CI over seeds;
Δ columns are paired differences to each variant's reference variant (default {e(str(scen.get("reference_variant")))}), * where the 95% CI excludes zero.</p>
{_table(header, rows)}
{_img(tradeoff_png([(scen["name"], results)]), "privacy-utility trade-off")}
{_img(curves_png(results), "per-release leakage")}
{_img(axis_png(results), "utility and leakage against a variant parameter")}
{groups}
</body></html>
"""


def _groups_table(results: dict[str, Any]) -> str:
    names = sorted({g for v in results["variants"] for g in v.get("utility_groups", {})})
    if not names:
        return ""
    metric = results["scenario"]["headline"]["utility"]
    rows = [[v["name"], *(fmt(dig(v, "utility_groups", g, metric)) for g in names)] for v in results["variants"]]
    return f"<h2>{html.escape(metric)} per user group</h2>" + _table(["variant", *names], rows)


def render_overlay(runs: list[tuple[str, dict[str, Any]]]) -> str:
    """One page for several runs: their variants on one frontier, and each run's table."""
    parts = [f"<h2>{html.escape(label)}</h2>" + _table(*summary_rows(results)) for label, results in runs]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>cdrsim · {len(runs)} runs</title><style>{STYLE}</style></head>
<body><h1>{len(runs)} runs on one frontier</h1>
{_img(tradeoff_png(runs), "privacy-utility trade-off of every run")}
{"".join(parts)}
</body></html>
"""


def write_report(results: dict[str, Any], path: Path) -> None:
    path.write_text(render(results), encoding="utf-8")
