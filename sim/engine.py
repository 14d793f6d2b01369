"""The experiment engine: one loop over (variant, seed) tasks for every scenario and runtime.

A task is one transfer, whole:

    parties started where the runtime puts them (each makes its own identity key)
    -> the coordinator pins their public keys and relays the scenario's steps (taps see every byte)
    -> the receiver's view is collected, the parties stop
    -> each threat model's attacker works on what it captured; captures are saved

`run_task` does that wherever it runs; an executor decides where (`sim.executors`: in this
process on any runtime, or in worker processes for --jobs) and the ServerApp of the Flower
runtimes calls the same `run_experiment` with a Flower runtime. A task's result is plain data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from attacks.tap import Eavesdropper
from parties.base import ChannelConfig

from .config import RunConfig
from .coordinator import Relay, Transcript, start_parties
from .evaluation import evaluate_attacks, save_captures
from .party_factory import PARTY_FACTORY
from .runtimes.base import PartySpec, Runtime
from .scenarios import Scenario, Variant
from .world import World, world

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class Task:
    variant: Variant
    seed: int


@dataclass
class TaskResult:
    """One (variant, seed) run as plain data (it may come back from a worker process)."""

    variant: Variant
    seed: int
    utility: dict[str, float]
    utility_groups: dict[str, dict[str, float]]  # user group -> utility of its users
    per_user: dict[str, np.ndarray]
    details: dict[str, Any]
    attacks: dict[str, dict[str, Any]]  # threat model -> attack results (and what it observed)
    transcript: list[dict[str, Any]]
    seconds: float
    rejected: int = 0


@dataclass
class ExperimentResult:
    config: RunConfig
    scenario: Scenario
    runs: list[TaskResult] = field(default_factory=list)  # in (seed, variant) order
    error: str | None = None


class Executor(Protocol):
    """Where tasks run. `run` yields (task index, result) as tasks finish, in any order."""

    def run(self, config: RunConfig, scenario: Scenario, tasks: list[Task], out_dir: Path | None) -> Iterator[tuple[int, TaskResult]]: ...

    def close(self) -> None: ...


def channel_config(config: RunConfig, seed: int) -> ChannelConfig:
    """The channel every party (and the coordinator) of one task uses: no key material, only
    the suite and the seed of the plaintext suite's session ids."""
    return ChannelConfig(suite=config.channel, session_seed=f"{config.scenario}/{seed}".encode())


def party_specs(config: RunConfig, scenario: Scenario, variant: Variant, seed: int) -> list[PartySpec]:
    options = config.party_options(scenario, variant)
    channel = channel_config(config, seed).to_json()
    return [
        PartySpec(
            name=name,
            factory=PARTY_FACTORY,
            config={"role": name, "scenario": scenario.name, "run": config.run_dict(seed), "channel": channel, "options": options},
        )
        for name in scenario.party_names({**options, "seed": seed})
    ]


def group_utility(scenario: Scenario, per_user: dict[str, np.ndarray], w: World) -> dict[str, dict[str, float]]:
    """Utility over each of the scenario's user groups (a group with no evaluated user is left
    out). Ranking: the mean of each per-user figure. Rating: the report has one row per test
    rating (`users`, `abs_error`, `squared_error`), so a group's MAE and RMSE are pooled over
    its ratings."""
    groups = scenario.utility.groups
    if groups is None or "users" not in per_user:
        return {}
    users = np.asarray(per_user["users"])
    out = {}
    for name, members in groups.assign(w).items():
        rows = np.isin(users, members)
        if not rows.any():
            continue
        if scenario.utility.kind == "rating":
            out[name] = {
                "MAE": float(np.mean(per_user["abs_error"][rows])),
                "RMSE": float(np.sqrt(np.mean(per_user["squared_error"][rows]))),
                "ratings": float(rows.sum()),
            }
        else:
            out[name] = {k: float(np.mean(v[rows])) for k, v in per_user.items() if k != "users"}
    return out


def run_task(config: RunConfig, scenario: Scenario, task: Task, runtime: Runtime, *, out_dir: Path | None = None) -> TaskResult:
    """One transfer: parties started fresh, driven through the relay, then attacked. What the
    eavesdroppers captured goes to `out_dir/intercepted/` (if given)."""
    started = time.perf_counter()
    variant, seed = task.variant, task.seed
    w = world(config.run_dict(seed))
    wire = Eavesdropper("wire", retain_kinds=scenario.retained_kinds, fold_kinds=scenario.folded_kinds)
    receiver = Eavesdropper("receiver", retain_kinds=scenario.retained_kinds, fold_kinds=scenario.folded_kinds)
    transcript = Transcript(context={"seed": seed, "variant": variant.name})
    try:
        coordinator = start_parties(runtime, party_specs(config, scenario, variant, seed), channel_config(config, seed))
        relay = Relay(runtime, coordinator, taps=[runtime.tap(wire.observe)], transcript=transcript)
        outcome = scenario.drive(relay, variant)
        receiver.observe_many(runtime.receiver_view(scenario.receiver), point="receiver")
    finally:
        runtime.stop()
    captures = {"wire": wire, "receiver": receiver}
    attacks = evaluate_attacks(scenario, captures, w, seed=seed, options={**config.party_options(scenario, variant), "seed": seed})
    if out_dir is not None:
        save_captures(captures, scenario, w, out_dir / "intercepted" / variant.name / f"seed{seed}")
    return TaskResult(
        variant=variant,
        seed=seed,
        utility=outcome.utility,
        utility_groups=group_utility(scenario, outcome.per_user, w),
        per_user=outcome.per_user,
        details=outcome.details,
        attacks=attacks,
        transcript=transcript.lines,
        seconds=time.perf_counter() - started,
        rejected=relay.rejected,
    )


def run_experiment(
    config: RunConfig,
    executor: Executor,
    *,
    out_dir: Path | None = None,
    on_task_done: Callable[[TaskResult], None] | None = None,
    result: ExperimentResult | None = None,
) -> ExperimentResult:
    """Every (seed, variant) task of `config` on `executor`, appended to `result` in (seed,
    variant) order; a caller that passed `result` keeps what finished when a later task
    fails (the error re-raises). The executor is closed at the end."""
    scenario = config.validate()
    tasks = [Task(variant, seed) for seed in config.seeds for variant in config.select_variants(scenario)]
    if result is None:
        result = ExperimentResult(config=config, scenario=scenario)
    done: dict[int, TaskResult] = {}
    try:
        for index, task_result in executor.run(config, scenario, tasks, out_dir):
            done[index] = task_result
            if on_task_done is not None:
                on_task_done(task_result)
    except BaseException as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        result.runs.extend(done[i] for i in sorted(done))
        executor.close()
    return result
