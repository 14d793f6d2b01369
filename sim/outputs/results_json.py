"""results.json, version 2 (docs/results.md; JSON Schema: results.schema.json next to this file).

Per variant: utility (overall and per user group) and every attack's headline figures as mean
and 95% CI over seeds, the per-release leakage curve, paired differences to the scenario's
reference variant, and `per_seed` with everything each task reported. Every run validates what
it writes against the schema.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

from ..engine import ExperimentResult, TaskResult
from ..scenarios.base import AttributeAttack, MembershipAttack, RatingUtility, Scenario
from ..stats import over_seeds, paired_over_seeds
from ..world import world

SCHEMA = "cdrsim.results"
SCHEMA_VERSION = 2
SCHEMA_FILE = Path(__file__).with_name("results.schema.json")
THREAT_MODELS = {
    "receiver": "curious receiver: the receiving party attacks every plaintext artifact it is legitimately given",
    "wire": "wire eavesdropper: sees every envelope on the transport and decodes what it can",
}


class ResultsSchemaError(ValueError):
    """A results document does not follow results.schema.json."""


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def validate(results: dict[str, Any]) -> None:
    try:
        jsonschema.validate(results, schema())
    except jsonschema.ValidationError as exc:
        where = "/".join(map(str, exc.absolute_path)) or "(top level)"
        raise ResultsSchemaError(f"results.json does not follow schema version {SCHEMA_VERSION} at {where}: {exc.message}") from None


def attack_kind(attack: Any) -> str:
    if isinstance(attack, AttributeAttack):
        return "attribute"
    if isinstance(attack, MembershipAttack):
        return "membership"
    return "reconstruction"


def leakage_figures(kind: str, result: dict[str, Any]) -> dict[str, Any]:
    """The figures of one attack result that are summarised over seeds."""
    if kind == "attribute":
        out: dict[str, Any] = {}
        for attr, block in result.items():
            if isinstance(block, dict) and "worst_case" in block:
                out[attr] = {
                    "worst_case": block["worst_case"]["metrics"],
                    "final": block["final"]["metrics"],
                    "baseline": block["final"]["baseline"],
                }
        if "vmeasure_gender" in result:
            out["vmeasure_gender"] = result["vmeasure_gender"]
        return out
    if kind == "membership":
        if not result.get("decoded"):
            return {}
        families = {name: result[name] for name in result.get("attackers", ())}  # each attack family run, by name
        return {"best": result[result["best"]], "baseline": result["baseline"], **families}
    leak = {
        attr: {"metrics": r["metrics"], "baseline": r["baseline"]} for attr, r in result.get("attributes_of_reconstruction", {}).items()
    }
    return {"metrics": result["metrics"], "baseline": result["baseline"], "attributes_of_reconstruction": leak}


def curve_figures(result: dict[str, Any]) -> dict[str, Any]:
    """Per attribute and release, the curve attacker's figures on the private users."""
    out = {}
    for attr, block in result.items():
        if isinstance(block, dict) and "curve" in block:
            out[attr] = {release: entry["metrics"] for release, entry in block["curve"].items()}
    return out


def headline(scenario: Scenario) -> dict[str, Any]:
    """Which figures a plot or a one-line summary shows for this scenario."""
    attack = scenario.attacks[0] if scenario.attacks else None
    kind = attack_kind(attack) if attack is not None else None
    path = {
        "attribute": ["gender", "worst_case", "auc"],
        "membership": ["best", "auc"],
        "reconstruction": ["metrics", "cosine"],
    }.get(kind, [])
    return {
        "utility": scenario.utility.headline,
        "utility_higher_is_better": scenario.utility.higher_is_better,
        "leakage": {"threat": "receiver", "attack": attack.name if attack else None, "path": path},
    }


def _per_seed(run: TaskResult, scenario: Scenario) -> dict[str, Any]:
    attacks = {t: {k: v for k, v in a.items() if k != "observed"} for t, a in run.attacks.items()}
    return {
        "seed": run.seed,
        "utility": run.utility,
        "utility_groups": run.utility_groups,
        "details": run.details,
        "attacks": attacks,
        "observed": {t: a["observed"] for t, a in run.attacks.items()},
        "rejected_messages": run.rejected,
        "messages": len(run.transcript),
        "seconds": run.seconds,
    }


def _leakage(run: TaskResult, scenario: Scenario) -> dict[str, Any]:
    return {
        threat: {a.name: leakage_figures(attack_kind(a), attacks[a.name]) for a in scenario.attacks}
        for threat, attacks in run.attacks.items()
    }


def _curve(run: TaskResult, scenario: Scenario) -> dict[str, Any]:
    return {
        threat: {a.name: curve_figures(attacks[a.name]) for a in scenario.attacks if attack_kind(a) == "attribute"}
        for threat, attacks in run.attacks.items()
    }


def _figure(path: tuple[str, ...]) -> bool:
    """Paths worth a mean and interval (sample sizes are counts, not figures)."""
    return path[-1] != "n" and not path[-1].startswith("n_")


def variant_summary(runs: list[TaskResult], reference: list[TaskResult] | None, scenario: Scenario) -> dict[str, Any]:
    """One variant over seeds; `reference` is its reference variant's runs (None: none ran)."""
    first = runs[0]
    summary: dict[str, Any] = {
        "name": first.variant.name,
        "params": first.variant.params,
        "seeds": [r.seed for r in runs],
        "utility": over_seeds([r.utility for r in runs]),
        "utility_groups": over_seeds([r.utility_groups for r in runs]),
        "leakage": over_seeds([_leakage(r, scenario) for r in runs], _figure),
        "curve": over_seeds([_curve(r, scenario) for r in runs], _figure),
        "decoded": {
            t: [bool(r.attacks[t].get(a.name, {}).get("decoded")) for r in runs] for t in first.attacks for a in scenario.attacks[:1]
        },
    }
    if reference is not None and first.variant.name != reference[0].variant.name:
        by_seed = {r.seed: r for r in reference}
        mine = [r for r in runs if r.seed in by_seed]
        theirs = [by_seed[r.seed] for r in mine]
        summary["paired"] = {
            "reference": theirs[0].variant.name if theirs else None,
            "seeds": [r.seed for r in mine],
            "utility": paired_over_seeds([r.utility for r in mine], [t.utility for t in theirs], lambda p: True),
            "leakage": paired_over_seeds(
                [_leakage(r, scenario) for r in mine], [_leakage(t, scenario) for t in theirs], lambda p: _figure(p) and "baseline" not in p
            ),
        }
        if isinstance(scenario.utility, RatingUtility) and theirs:
            ratios = [{k: r.utility[k] / t.utility[k] for k in r.utility if t.utility.get(k)} for r, t in zip(mine, theirs)]
            summary["relative_to_reference"] = over_seeds(ratios)
    summary["per_seed"] = [_per_seed(r, scenario) for r in runs]
    return summary


def results_dict(result: ExperimentResult, timing: dict[str, float] | None = None) -> dict[str, Any]:
    config, scenario = result.config, result.scenario
    w = world(config.run_dict(config.seeds[0]))
    groups: dict[str, list[TaskResult]] = {}
    for run in result.runs:
        groups.setdefault(run.variant.name, []).append(run)

    def reference_runs(runs: list[TaskResult]) -> list[TaskResult] | None:
        name = scenario.reference_of(runs[0].variant)
        return groups.get(name) if name else None

    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "status": "failed" if result.error else "complete",
        "error": result.error,
        "scenario": {
            "name": scenario.name,
            "title": scenario.title,
            "paper": scenario.paper,
            "reference_variant": scenario.reference,
            "utility": {"kind": scenario.utility.kind, "headline": scenario.utility.headline},
            "attacks": [{"name": a.name, "kind": attack_kind(a), **_attack_target(a)} for a in scenario.attacks],
            "headline": headline(scenario),
        },
        "config": config.to_json(),
        "dataset": {
            "name": config.dataset,
            "source": w.dataset.source,
            "fingerprint": w.dataset.fingerprint(),
            "n_users": w.dataset.n_users,
            "n_items": w.dataset.n_items,
            "n_ratings": int(len(w.dataset.ratings)),
            "split": w.split.description,
            "population": {
                "rule": config.population,
                "users": int(w.population.size),
                "public": int(w.public.size),
                "private": int(w.private.size),
                "public_fraction": config.public_fraction,
            },
        },
        "channel": config.channel,
        "runtime": config.runtime,
        "seeds": list(config.seeds),
        "quick": config.quick,
        "threat_models": THREAT_MODELS,
        "variants": [variant_summary(runs, reference_runs(runs), scenario) for runs in groups.values()],
        "timing": timing or {},
    }


def _attack_target(attack: Any) -> dict[str, Any]:
    if isinstance(attack, MembershipAttack):
        return {}
    return {"kinds": list(attack.kinds), "field": attack.field, "final": attack.final}
