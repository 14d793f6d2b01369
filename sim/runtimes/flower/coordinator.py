"""The ServerApp's work: the engine's experiment loop on a FlowerRuntime, then every output.

Flower inverts control (the coordinator runs inside the ServerApp), so the ServerApp calls
`serve(exchange, settings)`: find the parties' nodes, then `sim.engine.run_experiment` with an
`InlineExecutor(FlowerRuntime(...))`, exactly the loop every other runtime runs, and
`sim.outputs.write_outputs` into the run directory, also after a failure.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sim.flower_app.records import HELLO, HelloRequest

from ...config import RunConfig
from ...engine import Executor, ExperimentResult, Task, TaskResult, run_experiment
from ...errors import RunError
from ...executors import InlineExecutor
from ...outputs import write_outputs
from ...scenarios import Scenario, get_scenario
from .exchange import Exchange, RecordingExchange
from .nodes import discover_nodes
from .runtime import FlowerRuntime
from .settings import Settings


def party_roles(config: RunConfig, scenario: Scenario) -> list[str]:
    """Every party any task of this run starts, in first-seen order (one Flower node each)."""
    roles: list[str] = []
    for seed in config.seeds:
        for variant in config.select_variants(scenario):
            for name in scenario.party_names({**config.party_options(scenario, variant), "seed": seed}):
                if name not in roles:
                    roles.append(name)
    return roles


class AnnouncingExecutor:
    """An executor that says which task starts before it runs (a progress line on the
    ServerApp's stderr, which `flwr run --stream` shows). The inline executor runs one task
    each time the engine asks for the next result, so the line comes right before its task."""

    def __init__(self, inner: Executor, say: Callable[[str], None]):
        self.inner = inner
        self.say = say

    def run(self, config: RunConfig, scenario: Scenario, tasks: list[Task], out_dir: Path | None) -> Iterator[tuple[int, TaskResult]]:
        results = self.inner.run(config, scenario, tasks, out_dir)
        for i, task in enumerate(tasks):
            self.say(f"seed {task.seed} · {task.variant.name} ({i + 1}/{len(tasks)})")
            try:
                yield next(results)
            except StopIteration:
                return

    def close(self) -> None:
        self.inner.close()


def serve(exchange: Exchange, settings: Settings) -> dict[str, Any]:
    """The ServerApp's main: run the experiment on the nodes behind `exchange`; write every
    output file into the run directory. On failure, writes what finished and re-raises."""
    main_started = time.time()
    launched = settings.launched_at or main_started
    say: Callable[[str], None] = (
        (lambda text: print(f"cdrsim: {text}", file=sys.stderr, flush=True)) if settings.progress else (lambda _: None)
    )
    config = RunConfig(**settings.config)
    run_dir = Path(settings.run_dir)
    if settings.record_dir:
        exchange = RecordingExchange(exchange, settings.record_dir)
    result = ExperimentResult(config=config, scenario=get_scenario(config.scenario))
    timing: dict[str, float] = {"flower_startup_seconds": main_started - launched}
    runtime: FlowerRuntime | None = None
    results: dict[str, Any] = {}
    try:
        scenario = config.validate()
        t = time.perf_counter()
        nodes = discover_nodes(
            exchange, party_roles(config, scenario), timeout=settings.nodes_timeout, host_idle_timeout=settings.host_idle_timeout
        )
        timing["flower_nodes_seconds"] = time.perf_counter() - t
        say("nodes: " + ", ".join(f"{r}=node {n.node_id} (party host pid {n.host_pid})" for r, n in nodes.items()))
        runtime = FlowerRuntime(
            exchange,
            nodes,
            call_timeout=settings.call_timeout,
            close_timeout=settings.close_timeout,
            host_idle_timeout=settings.host_idle_timeout,
            torch_threads=config.torch_threads,
            batch=settings.batch,
            expected_public_keys={p: bytes.fromhex(k) for p, k in settings.expected_public_keys.items()},
        )
        executor = AnnouncingExecutor(InlineExecutor(runtime), say)
        try:
            timing.update(ping(exchange, nodes[next(iter(nodes))].node_id, settings.ping_rounds, settings.call_timeout))
        except BaseException:
            executor.close()
            raise
        t = time.perf_counter()
        run_experiment(config, executor, out_dir=run_dir, result=result)  # closes the executor, so the runtime
        timing["flower_engine_seconds"] = time.perf_counter() - t
    except BaseException as exc:
        if result.error is None:
            result.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        if runtime is not None:
            timing.update(runtime.stats.as_timing())
        timing["total_seconds"] = time.time() - launched
        try:
            results = write_outputs(result, run_dir, timing)
            say(f"wrote {run_dir}")
        except Exception as exc:
            if result.error is None:
                raise
            # Do not mask the error that ended the run; the launcher writes a failed results.json.
            say(f"could not write the outputs after the failure: {type(exc).__name__}: {exc}")
    return results


def ping(exchange: Exchange, node: int, rounds: int, timeout: float) -> dict[str, float]:
    """`rounds` bare handshake round trips to one node: the Flower carrier's own latency,
    without any party work (a benchmark figure; 0 rounds = skipped)."""
    if rounds <= 0:
        return {}
    request = HelloRequest(warm=False)
    started = time.perf_counter()
    for _ in range(rounds):
        reply = exchange.exchange([(node, HELLO, request.to_content())], timeout).get(node)
        if reply is None or reply.error:
            raise RunError(f"Flower node {node} did not answer a ping: {reply.error if reply else 'no reply'}")
    return {"flower_ping_round_trips": float(rounds), "flower_ping_seconds": time.perf_counter() - started}
