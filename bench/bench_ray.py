"""Ray runtime benchmark: prints one JSON object.

- `scenario`: wall time of the same run (embeddings scenario, 3 variants) in-process and on
  the Ray runtime, measured side by side in this process with Ray already up: `ray_s` with
  the default fresh actors per variant, `ray_reuse_s` with `reuse_actors=True`; ratios to
  in-process, and whether the transcripts match (type and size of every envelope; digests
  too with --threads 1, since BPR-MF on 2 torch threads is not bit-reproducible).
- `startup`: the fixed cost, apart: `ray.init` of a private local Ray, creating two empty
  actors, and starting the scenario's two party actors (which build their data and models).
- `throughput`: envelopes of 1 KB .. 256 MB (`--quick` stops at 64 MB) between two actors
  (`actor_to_actor`), and driver -> party actor -> driver (`relay_path`, what `call` does: the
  bytes go in and the same number of bytes come back), in MB/s (10^6 bytes), sequential.

Usage:
  .venv/bin/python bench/bench_ray.py --quick --repeats 2
  .venv/bin/python bench/bench_ray.py --dataset ml-100k --quick   # needs the embedded MovieLens
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
for key, value in {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}.items():
    os.environ.setdefault(key, value)

import numpy as np  # noqa: E402
import ray  # noqa: E402

SIZES = [1 << 10, 16 << 10, 256 << 10, 4 << 20, 64 << 20, 256 << 20]  # 1 KB .. 256 MB
MIN_BYTES_PER_SIZE = 64 << 20  # move at least this much per size (small envelopes: many repeats)
MAX_REPEATS = 2000


@ray.remote(num_cpus=0)
class Sink:
    """The receiving party: takes an envelope, answers its length (as `call` answers acks)."""

    def take(self, data: bytes) -> int:
        return len(data)

    def echo(self, data: bytes) -> bytes:
        return bytes(data)


@ray.remote(num_cpus=0)
class Sender:
    """The sending party: pushes envelopes to a Sink actor one after another."""

    def blast(self, sink, size: int, repeats: int) -> float:
        payload = np.random.default_rng(size).bytes(size)
        ray.get(sink.take.remote(payload))  # warm-up: worker connections, object store pages
        started = time.perf_counter()
        for _ in range(repeats):
            n = ray.get(sink.take.remote(payload))
            assert n == size
        return time.perf_counter() - started


def repeats_for(size: int) -> int:
    return int(min(MAX_REPEATS, max(3, MIN_BYTES_PER_SIZE // size)))


def throughput(sizes: list[int]) -> list[dict]:
    sender, sink, echo = Sender.remote(), Sink.remote(), Sink.remote()
    rows = []
    for size in sizes:
        repeats = repeats_for(size)
        seconds = ray.get(sender.blast.remote(sink, size, repeats))
        payload = np.random.default_rng(size + 1).bytes(size)
        ray.get(echo.echo.remote(payload))  # warm-up
        started = time.perf_counter()
        for _ in range(repeats):
            back = ray.get(echo.echo.remote(payload))
            assert len(back) == size
        relay_seconds = time.perf_counter() - started
        rows.append(
            {
                "bytes": size,
                "repeats": repeats,
                "actor_to_actor_mb_s": round(size * repeats / seconds / 1e6, 2),
                "actor_to_actor_ms_per_envelope": round(seconds / repeats * 1e3, 3),
                # in and back out again: 2 x size bytes cross per call
                "relay_path_mb_s": round(2 * size * repeats / relay_seconds / 1e6, 2),
                "relay_path_ms_per_call": round(relay_seconds / repeats * 1e3, 3),
            }
        )
        del payload
    for actor in (sender, sink, echo):
        ray.kill(actor)
    return rows


def scenario_config(args: argparse.Namespace, runtime: str):
    from sim.config import RunConfig

    synthetic = None
    if args.dataset == "synthetic":
        synthetic = {"n_users": args.users, "n_items": args.items, "mean_interactions": 40, "signal": 2.0, "seed": 0}
    return RunConfig(
        scenario="embeddings",
        dataset=args.dataset,
        synthetic=synthetic,
        seeds=[0],
        quick=True,
        channel=args.channel,
        runtime=runtime,
        torch_threads=args.threads,
        out=str(ROOT / "runs" / "bench"),
    )


def run_scenario(args: argparse.Namespace, runtime: str, reuse: bool = False) -> tuple[float, list[dict]]:
    from sim.engine import run_experiment
    from sim.executors import InlineExecutor, make_executor
    from sim.runtimes.ray import RayRuntime

    config = scenario_config(args, runtime)
    executor = InlineExecutor(RayRuntime(torch_threads=config.torch_threads, reuse_actors=True)) if reuse else make_executor(config)
    started = time.perf_counter()
    result = run_experiment(config, executor)
    seconds = time.perf_counter() - started
    lines = [line for run in result.runs for line in run.transcript]
    return seconds, lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="skip the 256 MB envelopes")
    p.add_argument("--dataset", default="synthetic", choices=["synthetic", "ml-100k"])
    p.add_argument("--users", type=int, default=2000, help="synthetic users")
    p.add_argument("--items", type=int, default=1000, help="synthetic items")
    p.add_argument("--channel", default="plaintext", choices=["plaintext", "secure"])
    p.add_argument("--repeats", type=int, default=1, help="scenario runs per runtime (best of)")
    # 1 by default: BPR-MF on 2 torch threads is not bit-reproducible, and on a busy 2-core
    # machine 2 OpenMP threads can be many times slower than 1, which swamps what is measured.
    p.add_argument("--threads", type=int, default=1, help="torch threads, driver and party actors (default 1)")
    args = p.parse_args(argv)

    import torch

    from sim.runtimes.ray import RayRuntime
    from sim.world import world

    torch.set_num_threads(args.threads)
    world(scenario_config(args, "inproc").run_dict(0))  # load data once, outside the timings

    sizes = [s for s in SIZES if not (args.quick and s > 64 << 20)]
    store = (384 << 20) if args.quick else (1 << 30)  # room for one 256 MB envelope in flight, twice

    # Fixed start-up cost, apart from the run.
    runtime = RayRuntime(object_store_memory=store, torch_threads=args.threads)
    startup: dict[str, float] = {}
    try:
        runtime.connect()
        startup["ray_init_s"] = round(runtime.connect_seconds, 3)
        started = time.perf_counter()
        empties = [Sink.remote(), Sink.remote()]
        ray.get([a.take.remote(b"") for a in empties])
        startup["two_empty_actors_s"] = round(time.perf_counter() - started, 3)
        for a in empties:
            ray.kill(a)
        from sim.engine import party_specs
        from sim.scenarios import get_scenario

        cfg = scenario_config(args, "ray")
        scen = get_scenario("embeddings")
        started = time.perf_counter()
        runtime.start(party_specs(cfg, scen, scen.variants(True)[0], 0))
        startup["party_actors_start_s"] = round(time.perf_counter() - started, 3)
        runtime.stop()

        # The same scenario on both runtimes, interleaved, best of --repeats each.
        inproc_times, ray_times, reuse_times = [], [], []
        same = True
        keys = ("type", "size", "sha256") if args.channel == "plaintext" and args.threads == 1 else ("type", "size")
        for _ in range(max(1, args.repeats)):
            t_in, lines_in = run_scenario(args, "inproc")
            t_ray, lines_ray = run_scenario(args, "ray")  # joins the Ray started above
            t_reuse, lines_reuse = run_scenario(args, "ray", reuse=True)
            inproc_times.append(t_in)
            ray_times.append(t_ray)
            reuse_times.append(t_reuse)
            want = [tuple(line[k] for k in keys) for line in lines_in]
            same = same and want == [tuple(line[k] for k in keys) for line in lines_ray]
            same = same and want == [tuple(line[k] for k in keys) for line in lines_reuse]
        envelopes = len(lines_in)
        wire_bytes = sum(line["size"] for line in lines_in)
        scenario = {
            "scenario": "embeddings",
            "dataset": args.dataset,
            "users": args.users if args.dataset == "synthetic" else None,
            "channel": args.channel,
            "variants": 3,
            "envelopes": envelopes,
            "wire_bytes": wire_bytes,
            "threads": args.threads,
            "inproc_s": round(min(inproc_times), 3),
            "ray_s": round(min(ray_times), 3),
            "ray_reuse_s": round(min(reuse_times), 3),
            "ratio_ray_over_inproc": round(min(ray_times) / min(inproc_times), 3),
            "ratio_ray_reuse_over_inproc": round(min(reuse_times) / min(inproc_times), 3),
            "ray_overhead_s": round(min(ray_times) - min(inproc_times), 3),
            "same_transcript": same,
            "compared": list(keys),
        }
        rows = throughput(sizes)
    finally:
        runtime.close()

    out = {
        "bench": "ray",
        "ray": ray.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "quick": args.quick,
        "scenario": scenario,
        "startup": startup,
        "throughput": rows,
        "ray_initialized_after_close": ray.is_initialized(),
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
