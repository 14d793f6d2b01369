"""The Python API, for notebooks and scripts: the same runs as the command line.

    from sim.api import run, load
    results = run(scenario="privnet", seeds=[0, 1], quick=True)   # RunConfig fields
    results.variants        # one row per variant: utility and leakage, mean and 95% CI
    results.per_seed        # one row per (variant, seed)
    results = load("runs/privnet-20261130-120000")                 # a finished run, the same way

`run` checks the configuration and loads the data before it creates the run directory, so a
bad option or dataset leaves nothing behind; the command line (`python -m sim.run`) is a thin
layer over it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .config import FLOWER_RUNTIMES, RunConfig
from .engine import ExperimentResult, TaskResult, run_experiment
from .executors import make_executor
from .jsonio import dump_json
from .outputs import write_outputs
from .results import RunResults
from .world import world

__all__ = ["RunConfig", "RunResults", "load", "new_run_dir", "run"]


def new_run_dir(out: str | Path, scenario: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = Path(out) / f"{scenario}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    path.mkdir(parents=True)
    return path


def run(
    config: RunConfig | None = None,
    *,
    on_task_done: Callable[[TaskResult], None] | None = None,
    quiet: bool = True,
    **fields: Any,
) -> RunResults:
    """Run an experiment (a RunConfig, or its fields as keywords) and return its results.

    On failure the run directory still holds what finished (results.json says `failed` and
    why) and the error re-raises (RunError, DatasetError, ConfigError)."""
    config = config if config is not None else RunConfig(**fields)
    config.validate()
    for seed in config.seeds:
        world(config.run_dict(seed))  # a missing or corrupt dataset fails here, before any directory
    run_dir = new_run_dir(config.out, config.scenario)
    dump_json(config.to_json(), run_dir / "config.json")
    try:
        if config.runtime in FLOWER_RUNTIMES:
            # Flower inverts control: the engine runs inside its ServerApp, which writes the outputs.
            from .runtimes.flower import run_experiment_flower  # Flower's import costs seconds; only here

            run_experiment_flower(config, run_dir=run_dir, quiet=quiet)
        else:
            started = time.perf_counter()
            result = ExperimentResult(config=config, scenario=config.validate())
            try:
                run_experiment(config, make_executor(config), out_dir=run_dir, on_task_done=on_task_done, result=result)
            finally:
                write_outputs(result, run_dir, {"total_seconds": time.perf_counter() - started})
    except BaseException as exc:
        exc.run_dir = run_dir  # where what finished was written (the CLI prints it)
        raise
    return RunResults.load(run_dir)


def load(run_dir: str | Path) -> RunResults:
    """A finished run directory's results (the same object `run` returns)."""
    return RunResults.load(Path(run_dir))
