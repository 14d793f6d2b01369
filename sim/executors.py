"""Where the engine's tasks run.

- `InlineExecutor(runtime)`: one task after another in this process; the parties run where the
  runtime puts them (here, Ray actors, Flower nodes).
- `PoolExecutor(jobs)`: `--jobs N`, the tasks spread over N worker processes, each running a
  whole task on the in-process runtime (parties still speak only envelopes inside it). A
  worker writes its captures to the run's `intercepted/` folder and returns the task's
  figures as plain data over the executor's own pipe, between the coordinator and its
  workers: no party message travels that way. Workers start with `spawn` (no forked torch or
  OpenMP state) and keep one intra-op thread each, so N jobs use N cores.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import torch

from .config import RunConfig
from .engine import Executor, Task, TaskResult, run_task
from .errors import ConfigError, RunError
from .runtimes.base import Runtime
from .runtimes.inproc import InprocRuntime
from .scenarios import Scenario, get_scenario
from .world import world


class InlineExecutor:
    """Tasks one by one in this process, on one runtime (closed with the executor)."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    def run(self, config: RunConfig, scenario: Scenario, tasks: list[Task], out_dir: Path | None) -> Iterator[tuple[int, TaskResult]]:
        torch.set_num_threads(config.torch_threads)
        for seed in config.seeds:
            world(config.run_dict(seed))  # load and split the data before any party starts
        for index, task in enumerate(tasks):
            yield index, run_task(config, scenario, task, self.runtime, out_dir=out_dir)

    def close(self) -> None:
        self.runtime.close()


def _init_worker(torch_threads: int) -> None:
    torch.set_num_threads(torch_threads)


def _run_in_worker(config_json: dict[str, Any], task: Task, out_dir: str | None) -> TaskResult:
    config = RunConfig(**config_json)
    runtime = InprocRuntime()
    try:
        return run_task(config, get_scenario(config.scenario), task, runtime, out_dir=None if out_dir is None else Path(out_dir))
    finally:
        runtime.close()


def start_order(config: RunConfig, scenario: Scenario, tasks: list[Task]) -> list[int]:
    """Task indices, costliest first by the scenario's estimate (ties keep the given order)."""
    costs = [scenario.relative_cost(config.party_options(scenario, task.variant)) for task in tasks]
    return sorted(range(len(tasks)), key=lambda i: -costs[i])


class PoolExecutor:
    """`--jobs N`: tasks on N spawn worker processes (in-process runtime in each)."""

    def __init__(self, jobs: int, torch_threads: int = 1):
        self.jobs = jobs
        self.torch_threads = torch_threads
        self._pool: ProcessPoolExecutor | None = None

    def run(self, config: RunConfig, scenario: Scenario, tasks: list[Task], out_dir: Path | None) -> Iterator[tuple[int, TaskResult]]:
        self._pool = ProcessPoolExecutor(
            max_workers=min(self.jobs, len(tasks)),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self.torch_threads,),
        )
        where = None if out_dir is None else str(out_dir)
        futures: dict[Future, int] = {
            self._pool.submit(_run_in_worker, config.to_json(), tasks[i], where): i for i in start_order(config, scenario, tasks)
        }
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                index = futures[future]
                try:
                    result = future.result()
                except BrokenProcessPool as exc:
                    task = tasks[index]
                    raise RunError(
                        f"a worker process died while running variant {task.variant.name!r} seed {task.seed} "
                        f"(killed, or out of memory); rerun with fewer --jobs"
                    ) from exc
                yield index, result

    def close(self) -> None:
        # Queued tasks are cancelled; running ones finish (what finished is kept by the engine).
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def make_executor(config: RunConfig) -> Executor:
    """The executor for `config` (the Flower runtimes run the engine inside their ServerApp)."""
    if config.jobs > 1:
        return PoolExecutor(config.jobs, config.torch_threads)
    if config.runtime == "inproc":
        return InlineExecutor(InprocRuntime())
    if config.runtime == "ray":
        # Imported when used: `import ray` costs start-up time every other run does not need.
        from .runtimes.ray import RayRuntime

        return InlineExecutor(RayRuntime(address=config.ray_address, placement=config.placement, torch_threads=config.torch_threads))
    raise ConfigError(f"runtime {config.runtime!r} runs through its launcher (sim.api.run), not an executor")
