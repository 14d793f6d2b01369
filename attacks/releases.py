"""Attribute inference over every release of a per-user artifact a party received.

A receiver often holds several releases of the same artifact (one representation per training
epoch, then the final one); its attacker uses all of them. This reports, per release, the
leakage on the private users (the curve), and the worst case chosen honestly: the attacker
picks one (release, attacker family) by cross-validation on the public users alone, and that
choice is scored once on the private users.

Procedure (affordable for ~50 releases: a cheap attacker for the curve, the full battery only
on a shortlist):

1. Every release: the curve attacker (standardised logistic regression), cross-validated on
   the public users (CV ROC-AUC, decision rule), refitted and scored on the private users.
2. The `shortlist` releases with the highest CV AUC in step 1 are kept (ties: earlier release).
3. Every attacker family is cross-validated on each shortlisted release, on the same folds.
4. The (release, family) with the highest CV AUC is the worst case (ties: earlier in the
   shortlist, then earlier family), reported like `attribute_inference` on that release.

Private labels are only read to score steps 1 and 4; no choice depends on them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from threadpoolctl import threadpool_limits

from .attackers import ATTACKERS, PRIOR, AttackerRun, check_attackers, cv_folds, run_attacker
from .attribute import AttributeResult, as_features, encode_labels, result_from_runs
from .jsonable import json_safe
from .metrics import classification_metrics

CURVE_ATTACKER = "lr"
SHORTLIST = 3


@dataclass
class ReleasesResult:
    """`worst_case` is the chosen release's full `AttributeResult`; `curve` the curve
    attacker's figures on every release, in the order given."""

    releases: list[str]
    curve: dict[str, dict]
    shortlist: list[str]
    candidates_cv_auc: dict[str, dict[str, float]]
    release: str
    attacker: str
    worst_case: AttributeResult
    curve_attacker: str
    attackers: list[str]
    timing_s: dict[str, float] = field(default_factory=dict)
    # The curve attacker's run on every release (out-of-fold and test probabilities); not in to_dict.
    curve_runs: dict[str, AttackerRun] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        """JSON-able (NaN becomes null). Every key is deterministic for a seed but `timing_s`."""
        wc = self.worst_case
        return json_safe(
            {
                "worst_case": {**wc.to_dict(), "release": self.release},
                "curve": self.curve,
                "baseline": wc.baseline,
                "baseline_decision": wc.baseline_decision.to_dict() if wc.baseline_decision else None,
                "selection": {
                    "procedure": (
                        f"1. every release: {self.curve_attacker}, CV on the public users, scored on the private users (the curve); "
                        f"2. shortlist the {len(self.shortlist)} releases with the highest CV ROC-AUC; "
                        f"3. cross-validate every attacker ({', '.join(self.attackers)}) on each shortlisted release, same folds; "
                        "4. the (release, attacker) with the highest CV ROC-AUC is the worst case, scored once on the private users. "
                        "No choice reads a private label."
                    ),
                    "curve_attacker": self.curve_attacker,
                    "shortlist": self.shortlist,
                    "cv_auc": self.candidates_cv_auc,
                    "release": self.release,
                    "attacker": self.attacker,
                    "cv_auc_chosen": self.candidates_cv_auc[self.release][self.attacker],
                },
                "releases": self.releases,
                "n_train": wc.n_train,
                "n_test": wc.n_test,
                "classes": wc.classes,
                "timing_s": self.timing_s,
            }
        )


def _ranked(scores: Mapping[str, float]) -> list[str]:
    """Names by decreasing score (NaN last); ties keep the given order."""
    order = list(scores)
    return sorted(order, key=lambda n: (-(scores[n] if not math.isnan(scores[n]) else -math.inf), order.index(n)))


def attribute_inference_over_releases(
    releases: Mapping[str, tuple[np.ndarray, np.ndarray]],
    y_public: np.ndarray,
    y_private: np.ndarray,
    *,
    attackers: Sequence[str] = ATTACKERS,
    seed: int = 0,
    n_classes: int | None = None,
    shortlist: int = SHORTLIST,
    curve_attacker: str = CURVE_ATTACKER,
) -> ReleasesResult:
    """`releases` maps a release name to (X_public, X_private): that release's features of the
    public users (rows aligned with `y_public`) and of the private users (with `y_private`).
    Labels as in `attribute_inference`. See the module docstring for the procedure."""
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    if not releases:
        raise ValueError("no releases given")
    check_attackers(attackers)
    check_attackers([curve_attacker])
    if shortlist < 1:
        raise ValueError(f"shortlist must be at least 1, got {shortlist}")
    ytr, yte, K, classes = encode_labels(y_public, y_private, n_classes)
    if np.unique(ytr).size < 2:
        raise ValueError("the public (training) users all have the same label; an attacker needs at least two classes")
    data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, (X_pub, X_priv) in releases.items():
        X_pub, X_priv = as_features(X_pub, f"release {name!r} public"), as_features(X_priv, f"release {name!r} private")
        if X_pub.shape[0] != ytr.size or X_priv.shape[0] != yte.size or X_pub.shape[1] != X_priv.shape[1]:
            raise ValueError(
                f"release {name!r}: public {X_pub.shape} and private {X_priv.shape} features do not match "
                f"{ytr.size} public and {yte.size} private labels with one feature width"
            )
        data[str(name)] = (X_pub, X_priv)

    folds = cv_folds(ytr, seed)

    def run(family: str, release: str) -> AttackerRun:
        X_pub, X_priv = data[release]
        if X_pub.shape[1] == 0:
            return replace(baseline_run, name=family)
        return run_attacker(family, X_pub, ytr, X_priv, K, seed=seed, folds=folds)

    with threadpool_limits(limits=1):  # see attacks.attribute: avoids oversubscription
        first_X = next(iter(data.values()))
        baseline_run = run_attacker(PRIOR, first_X[0][:, :0], ytr, first_X[1][:, :0], K, seed=seed, folds=folds)
        curve_runs = {name: run(curve_attacker, name) for name in data}
        curve_done = time.perf_counter()
        short = _ranked({name: r.cv_auc for name, r in curve_runs.items()})[:shortlist]
        battery: dict[str, dict[str, AttackerRun]] = {}
        for name in short:
            battery[name] = {a: curve_runs[name] if a == curve_attacker else run(a, name) for a in attackers}
    battery_done = time.perf_counter()

    # Step 4: one flat ranking over the shortlist (in shortlist order), families in the given order.
    pairs = {(name, a): battery[name][a].cv_auc for name in short for a in attackers}
    release, attacker = _ranked(pairs)[0]
    worst = result_from_runs(battery[release], baseline_run, yte, K, classes, int(ytr.size))
    curve = {
        name: {
            "attacker": curve_attacker,
            "cv_auc": r.cv_auc,
            "metrics": classification_metrics(yte, r.test_proba, K, y_pred=r.test_pred),
            "decision": r.decision.to_dict(),
        }
        for name, r in curve_runs.items()
    }
    end_wall = time.perf_counter()
    return ReleasesResult(
        releases=list(data),
        curve=curve,
        shortlist=short,
        candidates_cv_auc={name: {a: battery[name][a].cv_auc for a in attackers} for name in short},
        release=release,
        attacker=attacker,
        worst_case=worst,
        curve_attacker=curve_attacker,
        attackers=list(attackers),
        timing_s={
            "curve": curve_done - start_wall,
            "shortlist_battery": battery_done - curve_done,
            "total": end_wall - start_wall,
            "total_cpu": time.process_time() - start_cpu,
        },
        curve_runs=curve_runs,
    )
