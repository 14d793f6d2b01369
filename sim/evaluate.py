"""Attack evaluation on what each threat model captured, and statistics over seeds."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from attacks.attribute import attribute_inference, kmeans_vmeasure
from attacks.tap import Eavesdropper
from models.data import UserAttributes

from .scenarios import Scenario
from .world import World

ATTRIBUTES = UserAttributes.NAMES


def per_user_features(eavesdropper: Eavesdropper, artifact: str, field: str, n_users: int) -> np.ndarray | None:
    """The attacked artifact as a dense [n_users, f] matrix, or None if it was not readable."""
    found = eavesdropper.artifacts().get(artifact)
    if found is None:
        return None
    values = found.arrays[field].reshape(found.user_ids.shape[0], -1).astype(np.float32)
    dense = np.zeros((n_users, values.shape[1]), dtype=np.float32)
    dense[found.user_ids] = values
    return dense


def evaluate_attacks(scenario: Scenario, captures: dict[str, Eavesdropper], world: World, *, seed: int) -> dict[str, dict[str, Any]]:
    """Each threat model's attacks on what it captured; threat models that captured
    byte-identical features (wire and receiver on a plaintext channel) share one evaluation."""
    done: dict[bytes, dict[str, Any]] = {}
    out = {}
    for name, eaves in captures.items():
        out[name] = {}
        for attack in scenario.attacks:
            features = per_user_features(eaves, attack.final, attack.field, world.dataset.n_users)
            key = b"none" if features is None else hashlib.sha256(features.tobytes()).digest() + repr(features.shape).encode()
            if key not in done:
                done[key] = attack_features(features, world, seed=seed)
            out[name].update(done[key])
        out[name]["observed"] = eaves.summary()
    return out


def save_captures(captures: dict[str, Eavesdropper], scenario: Scenario, world: World, directory: Path) -> None:
    """What each eavesdropper of one task captured, under directory/<threat>/, with the users'
    attributes and whether each user is public (so anyone can run their own attacks)."""
    users = world.dataset.users.copy()
    users.insert(0, "public", False)
    users.loc[users.index.isin(world.public), "public"] = True
    for threat, eaves in captures.items():
        eaves.save(directory / threat, users=users, kinds=scenario.retained_kinds)


def attack_features(features: np.ndarray | None, world: World, *, seed: int, attackers=None) -> dict[str, Any]:
    """Attribute inference on per-user features: trained on public users, tested on private ones.

    A threat model that could not read the artifact (secure channel) is still evaluated: its
    attacker gets no features, which is exactly the no-artifact baseline, so its figures show
    what it can learn from what it saw (nothing per user) rather than being left out.
    """
    n_users = world.dataset.n_users
    decoded = features is not None
    if features is None:
        features = np.zeros((n_users, 0), dtype=np.float32)
    labels = world.attributes.as_dict()
    public, private = world.public, world.private
    out: dict[str, Any] = {"decoded": decoded}
    kwargs = {"seed": seed} if attackers is None else {"seed": seed, "attackers": attackers}
    for name in ATTRIBUTES:
        y = labels[name]
        result = attribute_inference(features[public], y[public], features[private], y[private], **kwargs)
        out[name] = result.to_dict()
    if decoded:
        out["vmeasure_gender"] = float(kmeans_vmeasure(features, labels["gender"], k=2, seed=seed))
    return out


def mean_ci(values: list[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean and the half-width of its t-based confidence interval (0 for one seed)."""
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return {"mean": None, "ci95": None, "n": 0, "values": list(values)}
    half = 0.0
    if arr.size > 1:
        half = float(stats.t.ppf(0.5 + confidence / 2, arr.size - 1) * arr.std(ddof=1) / math.sqrt(arr.size))
    return {"mean": float(arr.mean()), "ci95": half, "n": int(arr.size), "values": [float(v) for v in arr]}
