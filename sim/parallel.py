"""`--jobs N`: the (seed, variant) runs of one experiment spread over N worker processes.

Each run is a whole transfer (both parties, the relay and the eavesdroppers) inside one worker,
exactly as the in-process runtime does it: parties still talk only through protocol envelopes.
A worker writes what its eavesdroppers captured to the run's `intercepted/` folder and returns
the run's figures as plain data (numbers, strings, lists, arrays) over the executor's own
pipe, between the coordinator and its workers: no party message travels that way, and no
party object or envelope comes back. Workers start with `spawn` (no forked torch
or OpenMP state) and keep one intra-op thread each, so N jobs use N cores.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from .config import RunConfig
from .engine import ExperimentResult, Keys, VariantRun, make_runtime, run_variant, save_intercepted, select_variants
from .runtimes.base import RunError, Transcript
from .scenarios import Scenario, Variant, get_scenario
from .world import world


def _init_worker(torch_threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, int(torch_threads)))


def _run_in_worker(
    config_json: dict[str, Any], variant_name: str, seed: int, keys_json: dict[str, Any] | None, intercepted_dir: str | None
) -> dict[str, Any]:
    """One (variant, seed) run in a worker; returns its VariantRun as plain data."""
    config = RunConfig(**config_json)
    scenario = get_scenario(config.scenario)
    (variant,) = [v for v in select_variants(scenario, config) if v.name == variant_name]
    keys = Keys.from_json(keys_json) if keys_json is not None else None
    runtime = make_runtime(config)
    run = run_variant(config, scenario, variant, seed, runtime, keys)
    if intercepted_dir is not None:
        save_intercepted(run, scenario, world(config.run_dict(seed)), Path(intercepted_dir))
    return {
        "utility": run.utility,
        "per_user": run.per_user,
        "details": run.details,
        "attacks": run.attacks,
        "transcript": {"lines": run.transcript.lines, "context": run.transcript.context},
        "seconds": run.seconds,
        "rejected": run.rejected,
    }


def _variant_run(variant: Variant, seed: int, data: dict[str, Any]) -> VariantRun:
    return VariantRun(
        variant=variant,
        seed=seed,
        utility=data["utility"],
        per_user=data["per_user"],
        details=data["details"],
        attacks=data["attacks"],
        transcript=Transcript(**data["transcript"]),
        eavesdroppers={},
        seconds=data["seconds"],
        rejected=data["rejected"],
    )


def run_parallel(
    config: RunConfig,
    scenario: Scenario,
    variants: list[Variant],
    keys: Keys | None,
    result: ExperimentResult,
    on_variant_done: Callable[[VariantRun], None] | None,
    progress: Callable[[str], None] | None,
    intercepted_dir: Path | None,
) -> ExperimentResult:
    tasks = [(seed, variant) for seed in config.seeds for variant in variants]
    done: dict[int, VariantRun] = {}
    workers = min(config.jobs, len(tasks))
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(config.torch_threads,),
    )
    futures: dict[Future, int] = {}
    try:
        keys_json = keys.to_json() if keys is not None else None
        for i, (seed, variant) in enumerate(tasks):
            future = pool.submit(
                _run_in_worker, config.to_json(), variant.name, seed, keys_json, None if intercepted_dir is None else str(intercepted_dir)
            )
            futures[future] = i
        if progress:
            progress(f"{len(tasks)} runs on {workers} workers")
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                i = futures[future]
                seed, variant = tasks[i]
                try:
                    data = future.result()
                except BrokenProcessPool as exc:
                    raise RunError(
                        f"a worker process died while running variant {variant.name!r} seed {seed} "
                        f"(killed, or out of memory); rerun with fewer --jobs"
                    ) from exc
                done[i] = _variant_run(variant, seed, data)
                if progress:
                    progress(f"seed {seed} · {variant.name} done")
                if on_variant_done:
                    on_variant_done(done[i])
    except BaseException as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        # Queued runs are cancelled; what finished is kept, in (seed, variant) order.
        pool.shutdown(wait=True, cancel_futures=True)
        result.runs.extend(done[i] for i in sorted(done))
    return result
