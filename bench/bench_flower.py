"""Wall time of one scenario on inproc, flower (simulation) and flower-deployment; prints JSON.

Each runtime runs as `python -m sim.run` in a fresh process (what a user waits for, imports
included). From the run's results.json timing it separates the fixed start-up cost (Ray or
the SuperLink and SuperNodes starting, the node handshake) from the run itself, and reports
how fast envelopes go through the coordinator's relay:

- `envelopes_per_second`: envelopes on the wire / time the engine ran (party work included);
- `carrier_seconds_per_round_trip`: time in the Grid exchange minus the time the party hosts
  said they worked, per Flower message (what Flower itself costs per message);
- `ping_round_trips_per_second`: bare handshake round trips to one node (no party host).

    python bench/bench_flower.py                      # embeddings --quick on synthetic data
    python bench/bench_flower.py --runtimes inproc flower --n-users 2000
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
RUNTIMES = ("inproc", "flower", "flower-deployment")


def child(runtime: str, args: argparse.Namespace, out: Path) -> None:
    """One run, in this (fresh) process, as the CLI would do it; writes the run directory."""
    # Imported here: the parent process only starts children and must not pay for torch and Flower.
    from sim.api import new_run_dir, run
    from sim.config import RunConfig

    config = RunConfig(
        scenario=args.scenario,
        dataset="synthetic",
        synthetic={"n_users": args.n_users, "n_items": args.n_items, "mean_interactions": 40, "signal": 2.0, "seed": 0},
        seeds=[0],
        runtime=runtime,
        channel=args.channel,
        quick=True,
        variants=args.variants,
        out=str(out),
        torch_threads=args.threads,
    )
    if runtime == "inproc":
        run(config, quiet=True)  # results.json timing: total_seconds
    else:
        from sim.runtimes.flower import run_experiment_flower

        run_experiment_flower(config, run_dir=new_run_dir(config.out, config.scenario), quiet=True, ping_rounds=args.ping)


def run_once(runtime: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        runtime,
        "--out",
        str(out),
        "--scenario",
        args.scenario,
        "--channel",
        args.channel,
        "--n-users",
        str(args.n_users),
        "--n-items",
        str(args.n_items),
        "--threads",
        str(args.threads),
        "--ping",
        str(args.ping),
    ]
    if args.variants:
        argv += ["--variants", *args.variants]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    }
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{runtime} run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    results = json.loads((run_dir / "results.json").read_text())
    timing = results["timing"]
    envelopes = sum(1 for _ in (run_dir / "transcript.jsonl").open())
    row: dict[str, Any] = {"wall_seconds": wall, "envelopes": envelopes}
    if runtime == "inproc":
        row["run_seconds"] = timing["total_seconds"]
        row["fixed_seconds"] = wall - timing["total_seconds"]  # interpreter, imports, data, outputs
        row["envelopes_per_second"] = envelopes / timing["total_seconds"]
        return row
    engine = timing["flower_engine_seconds"]
    carrier = timing["flower_seconds"] - timing["flower_node_seconds"]
    row.update(
        run_seconds=engine,
        # Launch to ServerApp start, node handshake, and whatever the wall time has beyond the
        # engine's run (imports, Ray or process start-up and tear-down, writing outputs).
        startup_seconds=timing["flower_startup_seconds"],
        nodes_seconds=timing["flower_nodes_seconds"],
        fixed_seconds=wall - engine - timing.get("flower_ping_seconds", 0.0),
        other_fixed_seconds=wall
        - engine
        - timing.get("flower_ping_seconds", 0.0)
        - timing["flower_startup_seconds"]
        - timing["flower_nodes_seconds"],  # imports, outputs, tear-down
        round_trips=int(timing["flower_round_trips"]),
        batched_envelopes=int(timing["flower_batched"]),
        start_seconds=timing["flower_start_seconds"],  # parties built on their nodes (party hosts), per task
        node_seconds=timing["flower_node_seconds"],
        envelopes_per_second=envelopes / engine,
        carrier_seconds_per_round_trip=carrier / max(1, timing["flower_round_trips"]),
        envelopes_per_carrier_second=envelopes / carrier if carrier > 0 else None,
    )
    if timing.get("flower_ping_round_trips"):
        row["ping_round_trips_per_second"] = timing["flower_ping_round_trips"] / timing["flower_ping_seconds"]
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES)
    p.add_argument("--scenario", default="embeddings")
    p.add_argument("--variants", nargs="+", help="only these variants (default: all)")
    p.add_argument("--channel", default="plaintext", choices=("plaintext", "secure"))
    p.add_argument("--n-users", type=int, default=400)
    p.add_argument("--n-items", type=int, default=300)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (1 = bitwise reproducible)")
    p.add_argument("--ping", type=int, default=5, help="empty round trips to time on the Flower runtimes")
    p.add_argument("--child", choices=RUNTIMES, help=argparse.SUPPRESS)  # internal: one run in this process
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args, Path(args.out))
        return 0

    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-flower-") as tmp:
        for runtime in args.runtimes:
            out = Path(tmp) / runtime
            out.mkdir()
            runs[runtime] = run_once(runtime, args, out)
            print(f"{runtime}: {runs[runtime]['wall_seconds']:.1f}s", file=sys.stderr)
    report: dict[str, Any] = {
        "benchmark": "flower runtimes",
        "scenario": args.scenario,
        "variants": args.variants or "all",
        "quick": True,
        "dataset": {"synthetic": True, "n_users": args.n_users, "n_items": args.n_items},
        "channel": args.channel,
        "torch_threads": args.threads,
        "machine": {"cpus": os.cpu_count(), "load_average_1m_at_end": os.getloadavg()[0]},
        "command": "python bench/bench_flower.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "runs": runs,
    }
    if "inproc" in runs:
        base = runs["inproc"]
        report["ratios_to_inproc"] = {
            rt: {
                "wall": r["wall_seconds"] / base["wall_seconds"],
                "run_without_fixed_costs": r["run_seconds"] / base["run_seconds"],
            }
            for rt, r in runs.items()
            if rt != "inproc"
        }
    report["fixed_startup_seconds"] = {rt: r["fixed_seconds"] for rt, r in runs.items()}
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
