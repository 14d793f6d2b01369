"""PrivNet's exchange interval K on every runtime: round trips and wall time of one epoch.

    python bench/bench_interval.py                                   # K = 1 4 16 64; inproc ray flower
    python bench/bench_interval.py --intervals 1 16 --runtimes inproc flower

One epoch (a full pass over ML-100K's target examples, then the validation release) of the
`lambda=1` variant, seed 0, for each K, side by side on the in-process runtime, on Ray (local,
one Ray for all K; start-up timed apart) and on Flower's simulation engine (one
`python -m sim.run --runtime flower` per K, start-up and party building subtracted). Reports
per (K, runtime): the round trips (in-process and Ray: calls to a party; Flower: Grid
exchanges, where envelopes for the same party travel together), the envelopes, the epoch's
wall time, and the run's test utility, which must be the same on every runtime for one K.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
for key, value in {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "FLWR_TELEMETRY_ENABLED": "0"}.items():
    os.environ.setdefault(key, value)

VARIANT = "lambda=1"


def _config(interval: int, runtime: str, out: str | None = None):
    from sim.config import RunConfig

    options = {"epochs": 1, "exchange_interval": interval}
    return RunConfig(scenario="privnet", variants=[VARIANT], seeds=[0], runtime=runtime, options=options, out=out or "runs")


def one_epoch(runtime: Any, interval: int) -> dict[str, Any]:
    """One epoch through `runtime`, then the test, as PrivNetScenario.drive does for epochs=1."""
    from attacks.tap import Eavesdropper
    from sim.coordinator import Relay, start_parties
    from sim.engine import channel_config, party_specs

    config = _config(interval, runtime.name)
    scenario = config.validate()
    (variant,) = config.select_variants(scenario)
    calls = [0]
    call = runtime.call

    def counted(party: str, envelope: bytes, link: str = "") -> list[bytes]:
        calls[0] += 1
        return call(party, envelope, link)

    runtime.call = counted
    try:
        start = time.perf_counter()
        coordinator = start_parties(runtime, party_specs(config, scenario, variant, 0), channel_config(config, 0))
        wire = Eavesdropper("wire", retain_kinds=scenario.retained_kinds, fold_kinds=scenario.folded_kinds)
        relay = Relay(runtime, coordinator, taps=[runtime.tap(wire.observe)])
        started = time.perf_counter()
        replies = relay.request("target", "epoch", epoch=1, round=1)
        epoch_seconds = time.perf_counter() - started
        epoch_calls, epoch_envelopes = calls[0], relay.messages
        (report,) = [m for m in replies if m.type == "report"]
        if report.meta["improved"]:
            relay.request_one("source", "checkpoint", round=1)
        relay.request_one("source", "restore")
        final = relay.request_one("target", "test", type="report")
    finally:
        runtime.call = call
        runtime.stop()
    return {
        "round_trips": epoch_calls,
        "envelopes": epoch_envelopes,
        "run_round_trips": calls[0],
        "run_envelopes": relay.messages,
        "epoch_seconds": round(epoch_seconds, 2),
        "start_seconds": round(started - start, 2),
        "valid_HR@10": report.meta["valid"]["HR@10"],
        "test_HR@10": final.meta["utility"]["HR@10"],
        "test_NDCG@10": final.meta["utility"]["NDCG@10"],
    }


def flower_epoch(interval: int, tmp: Path) -> dict[str, Any]:
    out = tmp / f"flower-{interval}"
    argv = [sys.executable, "-m", "sim.run", "--scenario", "privnet", "--variants", VARIANT, "--seed", "0", "--runtime", "flower"]
    argv += ["--set", "epochs=1", "--set", f"exchange_interval={interval}", "--quiet", "--out", str(out)]
    wall = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - wall
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-3:]}
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    results = json.loads((run_dir / "results.json").read_text())
    timing = results["timing"]
    (seed,) = results["variants"][0]["per_seed"]
    envelopes = sum(1 for _ in (run_dir / "transcript.jsonl").open())
    return {
        # the whole run's exchanges: party start, the epoch, then checkpoint, restore and test
        "run_round_trips": int(timing["flower_round_trips"]),
        "run_envelopes": envelopes,
        "epoch_seconds": round(timing["flower_engine_seconds"] - timing["flower_start_seconds"], 2),
        "start_seconds": round(timing["flower_start_seconds"], 2),
        "process_seconds": round(wall, 1),
        "valid_HR@10": seed["details"]["history"][0]["valid_HR@10"],
        "test_HR@10": seed["utility"]["HR@10"],
        "test_NDCG@10": seed["utility"]["NDCG@10"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--intervals", type=int, nargs="+", default=[1, 4, 16, 64])
    p.add_argument("--runtimes", nargs="+", default=["inproc", "ray", "flower"], choices=("inproc", "ray", "flower"))
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    rows: dict[str, dict[str, Any]] = {str(k): {} for k in args.intervals}
    if "inproc" in args.runtimes:
        from sim.runtimes.inproc import InprocRuntime

        for k in args.intervals:
            rows[str(k)]["inproc"] = one_epoch(InprocRuntime(), k)
            print(f"K={k} inproc: {rows[str(k)]['inproc']}", file=sys.stderr, flush=True)
    if "ray" in args.runtimes:
        from sim.runtimes.ray import RayRuntime

        runtime = RayRuntime(torch_threads=1, reuse_actors=True)
        started = time.perf_counter()
        runtime.connect()
        connect = time.perf_counter() - started
        try:
            for k in args.intervals:
                rows[str(k)]["ray"] = {**one_epoch(runtime, k), "ray_connect_seconds": round(connect, 2)}
                print(f"K={k} ray: {rows[str(k)]['ray']}", file=sys.stderr, flush=True)
        finally:
            runtime.close()
    if "flower" in args.runtimes:
        with tempfile.TemporaryDirectory(prefix="bench-interval-") as tmp:
            for k in args.intervals:
                rows[str(k)]["flower"] = flower_epoch(k, Path(tmp))
                print(f"K={k} flower: {rows[str(k)]['flower']}", file=sys.stderr, flush=True)
    for row in rows.values():
        figures = {json.dumps([r.get("valid_HR@10"), r.get("test_HR@10"), r.get("test_NDCG@10")]) for r in row.values() if "error" not in r}
        row["same_results_on_every_runtime"] = len(figures) == 1
    print(
        json.dumps(
            {
                "benchmark": "exchange interval",
                "scenario": f"privnet {VARIANT}, ML-100K, seed 0, one epoch (full pass), secure channel",
                "cpu_count": os.cpu_count(),
                "load_average_1min": round(os.getloadavg()[0], 2),
                "by_interval": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
