"""Each threat model's attacks on what it captured (the engine calls this once per task).

The rules of the threat model hold for every attack kind:

- the attacker uses everything its party received: every release of the attacked artifact
  (e.g. one representation per epoch, then the final one), and picks the release it reports
  (the worst case) by cross-validation on the public users only;
- attackers train on public users and are scored on private users, both within the run's
  population (users present in both domains, by default);
- every figure stands next to the same attacker given no artifact.

A threat model that could not read the artifact (the wire on the secure channel) is evaluated
all the same: its attacker gets no features, which is the no-artifact baseline, so its figures
show what it learns from what it saw (nothing per user) rather than being left out.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from attacks.attackers import ATTACKERS, PRIOR, cv_folds, run_attacker
from attacks.attribute import AttributeResult, as_features, attribute_inference, encode_labels, kmeans_vmeasure, result_from_runs
from attacks.membership import membership_inference
from attacks.reconstruction import reconstruction_attack
from attacks.releases import ReleasesResult, attribute_inference_over_releases
from attacks.tap import Eavesdropper
from models.data import UserAttributes

from .scenarios.base import AttributeAttack, MembershipAttack, ReconstructionAttack, Scenario
from .world import World

ATTRIBUTES = UserAttributes.NAMES


def releases_of(capture: Eavesdropper, attack: AttributeAttack | ReconstructionAttack, world: World) -> dict[str, np.ndarray]:
    """Every complete artifact of one of the attack's kinds in the capture, in the order it
    arrived, as a dense [n_users, f] matrix: the attack's `features` of it, or by default its
    `field` rows (zeros for users it did not cover). Artifacts of one name and round from
    several senders (e.g. many user clients, each sending its own users' rows) are shards of
    one release: their users' rows are merged into the first shard's matrix."""
    out = {}
    shards: dict[tuple[str, int], tuple[str, set[str]]] = {}  # (name, round) -> (release, its senders)
    n_users = world.dataset.n_users
    for name, artifact in capture.artifacts().items():
        if artifact.kind not in attack.kinds or not artifact.complete:
            continue
        if attack.features is not None:
            dense = np.asarray(attack.features(artifact, world), dtype=np.float32)
        elif attack.field in artifact.arrays:
            values = artifact.arrays[attack.field].reshape(artifact.user_ids.shape[0], -1).astype(np.float32)
            dense = np.zeros((n_users, values.shape[1]), dtype=np.float32)
            dense[artifact.user_ids] = values
        else:
            continue
        release, senders = shards.setdefault((str(artifact.meta.get("artifact", name)), artifact.round), (name, set()))
        if senders and artifact.sender not in senders:
            rows = np.unique(artifact.user_ids)
            out[release][rows] = dense[rows]
        else:
            out[name] = dense
        senders.add(artifact.sender)
    return out


def _digest(arrays: dict[str, np.ndarray]) -> bytes:
    h = hashlib.sha256()
    for name, a in arrays.items():
        h.update(name.encode() + b"\0" + repr(a.shape).encode() + a.tobytes())
    return h.digest()


def attribute_attack(attack: AttributeAttack, releases: dict[str, np.ndarray], world: World, *, seed: int) -> dict[str, Any]:
    """Attribute inference on every release (worst case chosen on public users) and, with the
    full attacker battery, on the final release."""
    pub, priv = world.public, world.private
    labels = world.attributes.as_dict()
    decoded = bool(releases)
    final = releases.get(attack.final)
    out: dict[str, Any] = {"decoded": decoded, "releases": list(releases), "final_release": attack.final if final is not None else None}
    battery = {} if attack.attackers is None else {"attackers": attack.attackers}
    for name in attack.attributes:
        y = labels[name]
        if not decoded:
            empty = np.zeros((world.dataset.n_users, 0), dtype=np.float32)
            result = attribute_inference(empty[pub], y[pub], empty[priv], y[priv], seed=seed, **battery).to_dict()
            out[name] = {"final": result, "worst_case": {**result, "release": None}}
            continue
        result = attribute_inference_over_releases(
            {r: (x[pub], x[priv]) for r, x in releases.items()}, y[pub], y[priv], seed=seed, **battery
        )
        over = result.to_dict()
        block = {"worst_case": over.pop("worst_case"), **over}
        if final is not None and len(releases) > 1:
            block["final"] = final_battery(result, releases, attack, y, pub, priv, seed=seed).to_dict()
        elif final is not None:
            block["final"] = {k: v for k, v in block["worst_case"].items() if k != "release"}
        out[name] = block
    if final is not None:
        pop = world.population
        out["vmeasure_gender"] = float(kmeans_vmeasure(final[pop], labels["gender"][pop], k=2, seed=seed))
    return out


def final_battery(
    over: ReleasesResult,
    releases: dict[str, np.ndarray],
    attack: AttributeAttack,
    y: np.ndarray,
    pub: np.ndarray,
    priv: np.ndarray,
    *,
    seed: int,
) -> AttributeResult:
    """`attribute_inference` of the full battery on the final release (the same result) that
    does not run again what the release procedure `over` ran on the same inputs: its curve
    attacker on the final release, and the whole battery when the worst case it chose is a
    release with exactly the final release's bits (the best epoch's, which the final release
    repeats). Features, labels and folds are built as both procedures build them."""
    final = releases[attack.final]
    chosen = releases[over.release]
    same_as_chosen = chosen.dtype == final.dtype and chosen.shape == final.shape and chosen.tobytes() == final.tobytes()
    X_pub, X_priv = as_features(final[pub], "X_train"), as_features(final[priv], "X_test")
    if X_pub.shape[1] == 0:  # no features: attribute_inference's own special case
        return attribute_inference(X_pub, y[pub], X_priv, y[priv], seed=seed, attackers=attack.attackers or ATTACKERS)
    ytr, yte, n_classes, classes = encode_labels(y[pub], y[priv], None)
    folds = cv_folds(ytr, seed)
    runs = {}
    with threadpool_limits(limits=1):  # as attacks.attribute runs its attackers
        baseline = run_attacker(PRIOR, X_pub, ytr, X_priv, n_classes, seed=seed, folds=folds)
        for name in attack.attackers or ATTACKERS:
            if same_as_chosen and name in over.worst_case.runs:
                runs[name] = over.worst_case.runs[name]
            elif name == over.curve_attacker and attack.final in over.curve_runs:
                runs[name] = over.curve_runs[attack.final]
            else:
                runs[name] = run_attacker(name, X_pub, ytr, X_priv, n_classes, seed=seed, folds=folds)
    return result_from_runs(runs, baseline, yte, n_classes, classes, int(ytr.size))


def reconstruction(attack: ReconstructionAttack, releases: dict[str, np.ndarray], world: World, *, seed: int) -> dict[str, Any]:
    """How well the secret vector is recovered from the final release, and what the
    reconstruction leaks about the attributes. When the release has the secret's width,
    `metrics.direct_cosine` is the mean cosine between each private user's received vector and
    secret, with no learning at all (a geometric fact about the release, not an attacker), and
    `metrics.direct_cosine_centred` the same after subtracting each side's population mean."""
    pub, priv = world.public, world.private
    secret = np.asarray(attack.secret(world, seed), dtype=np.float64)
    final = releases.get(attack.final)
    features = final if final is not None else np.zeros((world.dataset.n_users, 0), dtype=np.float32)
    result = reconstruction_attack(features[pub], secret[pub], features[priv], secret[priv], seed=seed)
    labels = world.attributes.as_dict()
    leak = {
        name: attribute_inference(
            result.train_reconstruction, labels[name][pub], result.test_reconstruction, labels[name][priv], seed=seed
        ).to_dict()
        for name in ATTRIBUTES
    }
    out = {"decoded": final is not None, **result.to_dict(), "attributes_of_reconstruction": leak}
    if final is not None and final.shape[1] == secret.shape[1]:

        def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:  # a zero row counts as cosine 0
            norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
            return float(np.divide((a * b).sum(axis=1), norms, out=np.zeros(a.shape[0]), where=norms > 0).mean())

        pop = world.population
        received, truth = final.astype(np.float64), secret
        out["metrics"]["direct_cosine"] = mean_cosine(received[priv], truth[priv])
        # the same after removing what all users share (each side's mean over the population)
        out["metrics"]["direct_cosine_centred"] = mean_cosine(
            received[priv] - received[pop].mean(axis=0), truth[priv] - truth[pop].mean(axis=0)
        )
    return out


def membership(
    attack: MembershipAttack, capture: Eavesdropper, world: World, *, seed: int, options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Membership inference with the scenario's features; a capture it cannot read gives the
    constant-score attacker (AUC 0.5)."""
    data = attack.features(capture, world, seed, dict(options or {})) if attack.reads_options else attack.features(capture, world, seed)
    if data is None:
        return {"decoded": False}
    X_train, member_train, X_test, member_test = data
    battery = {} if attack.attackers is None else {"attackers": attack.attackers}
    return {"decoded": True, **membership_inference(X_train, member_train, X_test, member_test, seed=seed, **battery)}


def evaluate_attacks(
    scenario: Scenario, captures: dict[str, Eavesdropper], world: World, *, seed: int, options: dict[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """{threat model: {attack name: results, "observed": what it saw}}. Threat models that
    captured byte-identical releases (wire and receiver on a plaintext channel) share one
    evaluation. `options`: the run's party options, for attacks that read them."""
    done: dict[tuple[str, bytes], dict[str, Any]] = {}
    out: dict[str, dict[str, Any]] = {}
    for threat, capture in captures.items():
        out[threat] = {}
        for attack in scenario.attacks:
            if isinstance(attack, MembershipAttack):
                out[threat][attack.name] = membership(attack, capture, world, seed=seed, options=options)
                continue
            releases = releases_of(capture, attack, world)
            key = (attack.name, _digest(releases))
            if key not in done:
                if isinstance(attack, AttributeAttack):
                    done[key] = attribute_attack(attack, releases, world, seed=seed)
                else:
                    done[key] = reconstruction(attack, releases, world, seed=seed)
            out[threat][attack.name] = done[key]
        out[threat]["observed"] = capture.summary()
    return out


def save_captures(captures: dict[str, Eavesdropper], scenario: Scenario, world: World, directory: Path) -> None:
    """What each eavesdropper of one task captured, under directory/<threat>/, with the users'
    attributes and whether each user is public (so anyone can run their own attacks)."""
    users = world.dataset.users.copy()
    users.insert(0, "public", False)
    users.insert(1, "in_population", False)
    users.loc[users.index.isin(world.public), "public"] = True
    users.loc[users.index.isin(world.population), "in_population"] = True
    for threat, capture in captures.items():
        kinds = None if scenario.retained_kinds is None else (*scenario.retained_kinds, *scenario.folded_kinds)
        capture.save(directory / threat, users=users, kinds=kinds)
