"""Scale: the synthetic generator and the `embeddings` scenario at 10k, 100k and 1M users.

    python bench/bench_scale.py                          # 10k, 100k, 1M users
    python bench/bench_scale.py --users 10000 100000     # some sizes only
    python bench/bench_scale.py --users 1000 --channel plaintext
    python bench/bench_scale.py --users 1000000 --set batch_size=65536   # a larger BPR-MF batch
    python bench/bench_scale.py --set 'optimizer="lazy-adam"'           # BPR-MF linear in the users

With the default dense Adam, BPR-MF's training is quadratic in the users (every step updates
the whole user table): its 1M-user run had not finished after 70 CPU-minutes.
`optimizer="lazy-adam"` updates only the rows a batch touches (models.bprmf.train_bprmf).

Each size runs in a fresh process: one `embeddings --quick --variants transfer` task on the
in-process runtime, through the same parties, relay, taps and evaluation as `python -m
sim.run`, with the time of each phase (wall and CPU) and the peak resident memory when it
ends (RSS, `ru_maxrss`: so growth is visible phase by phase):

- generation: the synthetic dataset (`make_synthetic`, `mean_interactions` ratings per user);
- split: two domains, leave-one-out data with 99 sampled negatives, the public users;
- start: the parties built from their share of the world;
- training: the source's BPR-MF, then the target's (with the received embeddings) and its
  utility on the test users;
- release: the source turning its user embeddings into artifact chunks;
- transport: sealing, relaying (taps, transcript), opening and reassembling those chunks;
- attacks: every threat model's attacks on what it captured;
- outputs: captures, results.json, metrics.csv, report.html, transcript.

Prints one JSON object: per size, the phases, peak memory, ratings, the artifact's bytes and
envelopes, and the time per user of each phase (so superlinear growth stands out).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = (10_000, 100_000, 1_000_000)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Phases:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, float]] = {}

    def run(self, name: str, fn, *args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn(*args, **kwargs)
        row = self.rows.setdefault(name, {"seconds": 0.0, "cpu_seconds": 0.0})
        row["seconds"] += time.perf_counter() - wall
        row["cpu_seconds"] += time.process_time() - cpu
        row["peak_rss_mib"] = round(peak_mib(), 1)
        return out


def child(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from attacks.tap import Eavesdropper
    from sim.config import RunConfig
    from sim.coordinator import Relay, Transcript, start_parties
    from sim.engine import ExperimentResult, TaskResult, channel_config, group_utility, party_specs
    from sim.evaluation import evaluate_attacks, save_captures
    from sim.outputs import write_outputs
    from sim.runtimes.inproc import InprocRuntime
    from sim.scenarios import Outcome
    from sim.world import dataset_of, world

    synthetic = {"n_users": args.child, "n_items": args.n_items, "mean_interactions": args.mean_interactions, "signal": 1.0, "seed": 0}
    options = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}
    config = RunConfig(
        scenario="embeddings",
        dataset="synthetic",
        synthetic=synthetic,
        quick=True,
        channel=args.channel,
        variants=["transfer"],
        options=options,
    )
    scenario = config.validate()
    (variant,) = config.select_variants(scenario)
    run = config.run_dict(0)
    phases = Phases()
    started = time.perf_counter()
    dataset = phases.run("generation", dataset_of, run)
    w = phases.run("split", world, run)
    runtime = InprocRuntime()
    wire = Eavesdropper("wire", retain_kinds=scenario.retained_kinds, fold_kinds=scenario.folded_kinds)
    receiver = Eavesdropper("receiver", retain_kinds=scenario.retained_kinds, fold_kinds=scenario.folded_kinds)
    transcript = Transcript(context={"seed": 0, "variant": variant.name})
    coordinator = phases.run("start", start_parties, runtime, party_specs(config, scenario, variant, 0), channel_config(config, 0))
    relay = Relay(runtime, coordinator, taps=[runtime.tap(wire.observe)], transcript=transcript)
    source = runtime.parties["source"]
    release = source.op_release
    source.op_release = lambda msg: phases.run("release", release, msg)  # the party's own work, timed apart
    trained = phases.run("training", relay.request_one, "source", "train")
    phases.run("transport", relay.request, "source", "release", to="target")
    phases.rows["transport"]["seconds"] -= phases.rows["release"]["seconds"]
    phases.rows["transport"]["cpu_seconds"] -= phases.rows["release"]["cpu_seconds"]
    report = phases.run("training", relay.request_one, "target", "fit", type="report", mode="transfer")
    outcome = Outcome.from_report(report, source_valid=trained.meta.get("valid"))
    receiver.observe_many(runtime.receiver_view(scenario.receiver), point="receiver")
    runtime.stop()
    captures = {"wire": wire, "receiver": receiver}
    attacks = phases.run("attacks", evaluate_attacks, scenario, captures, w, seed=0)
    with tempfile.TemporaryDirectory(dir=args.out) as out:
        result = ExperimentResult(config=config, scenario=scenario)
        result.runs.append(
            TaskResult(
                variant=variant,
                seed=0,
                utility=outcome.utility,
                utility_groups=group_utility(scenario, outcome.per_user, w),
                per_user=outcome.per_user,
                details=outcome.details,
                attacks=attacks,
                transcript=transcript.lines,
                seconds=time.perf_counter() - started,
                rejected=relay.rejected,
            )
        )

        def outputs() -> None:
            save_captures(captures, scenario, w, Path(out) / "intercepted" / variant.name / "seed0")
            write_outputs(result, Path(out), {"total_seconds": time.perf_counter() - started})

        phases.run("outputs", outputs)
    artifact = [line for line in transcript.lines if line["type"] == "artifact"]
    n = args.child
    return {
        "users": n,
        "ratings": int(len(dataset.ratings)),
        "items": int(dataset.n_items),
        "phases": {k: {**v, "us_per_user": round(1e6 * v["seconds"] / n, 2)} for k, v in phases.rows.items()},
        "total_seconds": round(sum(v["seconds"] for v in phases.rows.values()), 2),
        "total_cpu_seconds": round(sum(v["cpu_seconds"] for v in phases.rows.values()), 2),
        "peak_rss_mib": round(peak_mib(), 1),
        "artifact_envelopes": len(artifact),
        "artifact_bytes": int(sum(line["size"] for line in artifact)),
        "messages": relay.messages,
        "utility_HR@10": float(np.round(outcome.utility["HR@10"], 4)),
        "leakage_gender_auc_receiver": attacks["receiver"]["attribute"]["gender"]["final"]["metrics"]["auc"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, nargs="+", default=list(SIZES))
    p.add_argument("--n-items", type=int, default=1200)
    p.add_argument("--mean-interactions", type=float, default=60.0)
    p.add_argument("--channel", default="secure", choices=("secure", "plaintext"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a party option, as --set of sim.run (JSON value)")
    p.add_argument("--out", default=None, help="scratch directory for the outputs phase (default: the system's)")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    rows = []
    for n in args.users:
        argv = [sys.executable, __file__, "--child", str(n), "--n-items", str(args.n_items)]
        argv += ["--mean-interactions", str(args.mean_interactions), "--channel", args.channel]
        argv += [f"--set={item}" for item in args.set]
        if args.out:
            argv += ["--out", args.out]
        wall = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            rows.append({"users": n, "error": done.stderr.strip().splitlines()[-5:]})
            continue
        rows.append({**json.loads(done.stdout.strip().splitlines()[-1]), "process_seconds": round(time.perf_counter() - wall, 1)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # progress: sizes can take long
    # Growth exponent of each phase between consecutive sizes (CPU time): 1 = linear, 2 = quadratic.
    done = [r for r in rows if "phases" in r]
    growth = {}
    for a, b in zip(done, done[1:]):
        ratio = math.log(b["users"] / a["users"])
        growth[f"{a['users']}->{b['users']}"] = {
            phase: round(math.log(max(b["phases"][phase]["cpu_seconds"], 1e-3) / max(a["phases"][phase]["cpu_seconds"], 1e-3)) / ratio, 2)
            for phase in b["phases"]
            if phase in a["phases"]
        }
    print(
        json.dumps(
            {
                "benchmark": "scale",
                "cpu_growth_exponents": growth,
                "scenario": "embeddings --quick --variants transfer (synthetic data, in-process runtime)",
                "options": args.set,
                "channel": args.channel,
                "n_items": args.n_items,
                "mean_interactions": args.mean_interactions,
                "cpu_count": os.cpu_count(),
                "load_average_1min": round(os.getloadavg()[0], 2),
                "sizes": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
