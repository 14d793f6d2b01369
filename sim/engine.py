"""Runs a scenario: for each seed and variant, start the parties, drive the transfer through
the relay, then let each threat model attack what it captured."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attacks.tap import Eavesdropper
from parties.base import COORDINATOR, SOURCE, TARGET
from protocol import Endpoint, Identity, Registry

from .config import RunConfig
from .evaluate import attack_threats
from .runtimes.base import PartySpec, Relay, RunError, Runtime, Transcript
from .scenarios import Scenario, Variant, get_scenario
from .world import world

PARTY_FACTORY = "sim.world:build_party"
PARTIES = (SOURCE, TARGET)


@dataclass
class Keys:
    """Per-run identity keys (secure channel): generated fresh, pinned in a registry."""

    identities: dict[str, Identity]
    registry: Registry

    @classmethod
    def generate(cls, names=(COORDINATOR, *PARTIES)) -> Keys:
        identities = {n: Identity.generate(name=n) for n in names}
        registry = Registry()
        for n, ident in identities.items():
            registry.add(n, ident.public_bytes())
        return cls(identities, registry)

    def to_json(self) -> dict[str, Any]:
        """The key material as plain strings, to hand to this run's worker processes."""
        return {
            "identities": {n: ident.private_bytes().hex() for n, ident in self.identities.items()},
            "registry": self.registry.to_json(),
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Keys:
        identities = {n: Identity.from_private_bytes(bytes.fromhex(h), name=n) for n, h in obj["identities"].items()}
        return cls(identities, Registry.from_json(obj["registry"]))

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.registry.save(directory / "registry.json")
        for name, ident in self.identities.items():
            path = directory / f"{name}.key"
            ident.save(path)
            os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)


@dataclass
class VariantRun:
    variant: Variant
    seed: int
    utility: dict[str, float]
    per_user: dict[str, Any]
    details: dict[str, Any]
    attacks: dict[str, dict[str, Any]]  # threat model -> attack results
    transcript: Transcript
    eavesdroppers: dict[str, Eavesdropper]
    seconds: float
    rejected: int = 0


@dataclass
class ExperimentResult:
    config: RunConfig
    scenario: Scenario
    runs: list[VariantRun] = field(default_factory=list)
    error: str | None = None


def channel_json(config: RunConfig, name: str, seed: int, keys: Keys | None) -> dict[str, Any]:
    obj: dict[str, Any] = {"suite": config.channel, "session_seed": f"{config.scenario}/{seed}".encode().hex()}
    if config.channel == "secure":
        assert keys is not None
        obj["identity_private"] = keys.identities[name].private_bytes().hex()
        obj["registry_json"] = keys.registry.to_json()
    return obj


def party_specs(config: RunConfig, scenario: Scenario, variant: Variant, seed: int, keys: Keys | None) -> list[PartySpec]:
    options = {**scenario.options(config.quick), **config.options, **variant.options}
    return [
        PartySpec(
            name=role,
            factory=PARTY_FACTORY,
            config={
                "role": role,
                "scenario": scenario.name,
                "run": config.run_dict(seed),
                "channel": channel_json(config, role, seed, keys),
                "options": options,
            },
        )
        for role in PARTIES
    ]


def coordinator_endpoint(config: RunConfig, seed: int, keys: Keys | None) -> Endpoint:
    from .world import channel_from_json

    return channel_from_json(channel_json(config, COORDINATOR, seed, keys)).endpoint(COORDINATOR)


def run_variant(config: RunConfig, scenario: Scenario, variant: Variant, seed: int, runtime: Runtime, keys: Keys | None) -> VariantRun:
    """One transfer: parties started fresh, driven through the relay, then attacked."""
    started = time.perf_counter()
    w = world(config.run_dict(seed))
    wire = Eavesdropper("wire", retain_kinds=scenario.intercepted_kinds)
    receiver = Eavesdropper("receiver", retain_kinds=scenario.intercepted_kinds)
    transcript = Transcript(context={"seed": seed, "variant": variant.name})
    runtime.start(party_specs(config, scenario, variant, seed, keys))
    tap = getattr(runtime, "tap", None)  # a runtime may host the eavesdropper itself (Ray: an actor)
    relay = Relay(
        runtime, coordinator_endpoint(config, seed, keys), taps=[tap(wire.observe) if tap else wire.observe], transcript=transcript
    )
    try:
        outcome = scenario.drive(relay, variant)
        for envelope in runtime.receiver_view(TARGET):
            receiver.observe(envelope, point="receiver")
    finally:
        runtime.stop()
    attacks = attack_threats({"wire": wire, "receiver": receiver}, scenario.attacked_artifact, scenario.attacked_field, w, seed=seed)
    return VariantRun(
        variant=variant,
        seed=seed,
        utility=outcome.utility,
        per_user=outcome.per_user,
        details=outcome.details,
        attacks=attacks,
        transcript=transcript,
        eavesdroppers={"wire": wire, "receiver": receiver},
        seconds=time.perf_counter() - started,
        rejected=relay.rejected,
    )


def save_intercepted(run: VariantRun, scenario: Scenario, w, directory: Path) -> None:
    """What each eavesdropper of one run captured, under directory/<variant>/seed<N>/<threat>/."""
    users = w.dataset.users.copy()
    users.insert(0, "public", False)
    users.loc[users.index.isin(w.public), "public"] = True
    for threat, eaves in run.eavesdroppers.items():
        eaves.save(directory / run.variant.name / f"seed{run.seed}" / threat, users=users, kinds=scenario.intercepted_kinds)


def select_variants(scenario: Scenario, config: RunConfig) -> list[Variant]:
    all_variants = scenario.variants(config.quick)
    if config.variants is None:
        return all_variants
    by_name = {v.name: v for v in all_variants}
    unknown = [n for n in config.variants if n not in by_name]
    if unknown:
        from .config import ConfigError

        raise ConfigError(f"unknown variant(s) {', '.join(unknown)} for scenario {scenario.name!r}; valid: {', '.join(by_name)}")
    return [by_name[n] for n in config.variants]


def make_runtime(config: RunConfig) -> Runtime:
    if config.runtime == "inproc":
        from .runtimes.inproc import InprocRuntime

        return InprocRuntime()
    if config.runtime == "ray":
        from .runtimes.ray import RayRuntime

        return RayRuntime(address=config.ray_address, placement=config.placement, torch_threads=config.torch_threads)
    raise RunError(f"runtime {config.runtime!r} is not available in this build; use --runtime inproc")


def run_experiment(
    config: RunConfig,
    *,
    keys: Keys | None = None,
    on_variant_done: Callable[[VariantRun], None] | None = None,
    progress: Callable[[str], None] | None = None,
    result: ExperimentResult | None = None,
    intercepted_dir: Path | None = None,
) -> ExperimentResult:
    """All seeds x variants, appended to `result` as they finish, so that a caller who
    passed `result` keeps what finished when a later variant fails (the error re-raises).

    With `config.jobs > 1` the (seed, variant) runs are spread over worker processes; each
    worker writes its eavesdroppers' captures to `intercepted_dir` (if given; otherwise they
    are dropped) and sends back plain data, so those runs carry no eavesdropper objects.
    Runs are listed in (seed, variant) order either way."""
    config.validate()
    scenario = get_scenario(config.scenario)
    variants = select_variants(scenario, config)
    if config.channel == "secure" and keys is None:
        keys = Keys.generate()
    if result is None:
        result = ExperimentResult(config=config, scenario=scenario)
    if config.jobs > 1:
        from .parallel import run_parallel

        return run_parallel(config, scenario, variants, keys, result, on_variant_done, progress, intercepted_dir)
    import torch

    torch.set_num_threads(max(1, int(config.torch_threads)))
    for seed in config.seeds:
        world(config.run_dict(seed))  # load and split the data before any party starts
    runtime = make_runtime(config)
    try:
        for seed in config.seeds:
            for variant in variants:
                if progress:
                    progress(f"seed {seed} · {variant.name}")
                run = run_variant(config, scenario, variant, seed, runtime, keys)
                result.runs.append(run)
                if on_variant_done:
                    on_variant_done(run)
    except BaseException as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        close = getattr(runtime, "close", None)
        if close:
            close()
    return result


def dump_json(obj: Any, path: Path) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n", encoding="utf-8")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (bytes, bytearray)):
        return o.hex()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-able: {type(o).__name__}")
