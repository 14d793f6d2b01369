"""PrivNet training throughput through the parties and protocol against the same model trained
in a plain PyTorch loop (`models.privnet.train_privnet_joint`), side by side, with peak memory.

    python bench/bench_privnet.py [--epochs 2] [--steps 0] [--repeats 2] [--interval 1]

Both modes train the same thing: the scenario's options (network, activation, optimiser) and
the variant's simulated attacker (the `lambda=1` variant: lambda = 1, the "strong" preset's 5
attacker updates per step at 1e-2), on ML-100K's release-year split; `--steps 0` is a full
pass over the target's examples. The figure is the last epoch (its training steps and its
validation), timed alone in both modes: set-up (data, networks, parties) and the parties'
test come before and after it. Each mode runs in a fresh subprocess (so peak RSS is its own);
modes alternate within each repeat so that the ratios compare runs made under the same
machine load. Throughput ratios are given by wall time and by CPU time of the process (the
fairer figure on a shared machine).

The same model work (the training steps, the transfers, the validation) runs in both modes,
so the time spent outside it is the framework's share, measured within each run: each mode
also reports `model_seconds` (time inside those functions, timed by a wrapper) and
`outside_model_seconds`; `framework_overhead_*` = (outside-model seconds of the parties -
those of the plain loop) / the plain loop's seconds, per repeat (each mode's runs made under
the same load), median over repeats. It is steadier than the throughput ratios on a loaded
machine, and it does not count the parties' effect on the model code's own speed (caches). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = (("plain", "plaintext"), ("parties", "plaintext"), ("parties", "secure"))
# The model work both modes share, wherever it is called from.
MODEL_WORK = ("adversary_step", "source_step", "target_step", "group_transfer", "transfer_for_step", "source_transfer", "evaluate_privnet")


def time_model_work() -> list[float]:
    """Wrap MODEL_WORK in every module that calls it; returns a one-item list holding the
    seconds spent inside (outermost calls only: one function may call another)."""
    import models.privnet.loops
    import models.privnet.steps
    import parties.privnet

    total, depth = [0.0], [0]

    def timed(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            depth[0] += 1
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    total[0] += time.perf_counter() - started

        return wrapper

    for name in MODEL_WORK:
        wrapped = timed(getattr(models.privnet.steps, name, None) or getattr(models.privnet.loops, name))
        for module in (models.privnet.steps, models.privnet.loops, parties.privnet):
            if hasattr(module, name):
                setattr(module, name, wrapped)
    return total


def run_mode(mode: str, epochs: int, steps: int, channel: str, interval: int) -> dict:
    import torch

    torch.set_num_threads(1)
    model_time = time_model_work()
    from models.privnet import target_stream, train_privnet_joint
    from parties.names import ADVERSARY_PRESETS, adversary_steps
    from sim.config import RunConfig
    from sim.coordinator import Relay, start_parties
    from sim.engine import channel_config, party_specs
    from sim.runtimes.inproc import InprocRuntime
    from sim.scenarios import get_scenario
    from sim.world import world

    scenario = get_scenario("privnet")
    options = {"epochs": epochs, "max_steps_per_epoch": steps, "patience": 50}
    if interval != 1:
        options["exchange_interval"] = interval
    config = RunConfig(scenario="privnet", channel=channel, options=options)
    (variant,) = [v for v in scenario.variants(False) if v.name == "lambda=1"]
    w = world(config.run_dict(0))
    opts = config.party_options(scenario, variant)
    preset = ADVERSARY_PRESETS[str(opts["adversary"])]
    marks: list[tuple[float, float, float]] = []  # (wall, cpu, model work) at the end of each epoch

    def mark(*_: object) -> None:
        marks.append((time.perf_counter(), time.process_time(), model_time[0]))

    if mode == "plain":
        started = (time.perf_counter(), time.process_time(), model_time[0])
        report = train_privnet_joint(
            w.split.source,
            w.split.target,
            w.attributes.restricted_to(w.public).as_dict(),
            lam=float(opts["lam"]),
            epochs=epochs,
            batch_size=int(opts["batch_size"]),
            lr=float(opts["lr"]),
            clip=float(opts["clip"]),
            seed=0,
            patience=50,
            dim=int(opts["dim"]),
            hidden=tuple(opts["hidden"]),
            activation=str(opts["activation"]),
            adv_hidden=tuple(opts["adv_hidden"]),
            adv_steps=adversary_steps(opts),
            adv_lr=float(opts["adv_lr"] or 0) or preset["lr"],
            window=int(opts["window"]),
            max_steps_per_epoch=steps or None,
            progress=mark,
            **({"exchange_interval": interval} if interval != 1 else {}),  # (older trees have no such argument)
        )[3]
        messages, valid = 0, report.history[-1]["valid_HR@10"]
    else:
        runtime = InprocRuntime()
        relay = Relay(runtime, start_parties(runtime, party_specs(config, scenario, variant, 0), channel_config(config, 0)))
        started = (time.perf_counter(), time.process_time(), model_time[0])
        for epoch in range(1, epochs + 1):  # PrivNetScenario.drive's loop
            replies = relay.request("target", "epoch", epoch=epoch, round=epoch)
            (report,) = [m for m in replies if m.type == "report"]
            if report.meta["improved"]:  # as the plain loop's early stopping snapshots its networks
                relay.request_one("source", "checkpoint", round=epoch)
            mark()
        messages, valid = relay.messages, report.meta["valid"]["HR@10"]
    # The last epoch alone: from the end of the one before (or from the start) to its end.
    (wall_end, cpu_end, model_end), (wall_start, cpu_start, model_start) = marks[-1], (marks[-2] if len(marks) > 1 else started)
    seconds, cpu, model = wall_end - wall_start, cpu_end - cpu_start, model_end - model_start
    n_steps = steps or target_stream(w.split.target, int(opts["window"]), int(opts["batch_size"]), 0).steps_per_epoch
    examples = n_steps * int(opts["batch_size"]) * 2  # the last epoch: one target and one source batch per step
    return {
        "mode": mode if mode == "plain" else f"parties-{channel}",
        "seconds": seconds,
        "cpu_seconds": cpu,
        "model_seconds": model,
        "outside_model_seconds": seconds - model,
        "examples_per_s": examples / seconds,
        "examples_per_cpu_s": examples / cpu,
        "messages": messages,
        "last_valid_HR@10": valid,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=2, help="epochs; the last one is timed")
    p.add_argument("--steps", type=int, default=0, help="training steps per epoch (0: a full pass)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--interval", type=int, default=1, help="exchange interval K of the parties (and of the plain loop)")
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--channel", default="plaintext", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.epochs, args.steps, args.channel, args.interval)))
        return
    rows: list[dict] = []
    for _ in range(args.repeats):
        for mode, channel in MODES:
            argv = [sys.executable, __file__, "--mode", mode, "--channel", channel]
            argv += ["--epochs", str(args.epochs), "--steps", str(args.steps), "--interval", str(args.interval)]
            out = subprocess.run(argv, check=True, capture_output=True, text=True, cwd=ROOT)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    by_mode: dict[str, list[dict]] = {}
    for r in rows:
        by_mode.setdefault(r["mode"], []).append(r)
    summary = {
        m: {
            "examples_per_s": statistics.median(r["examples_per_s"] for r in rs),
            "examples_per_cpu_s": statistics.median(r["examples_per_cpu_s"] for r in rs),
            "seconds": statistics.median(r["seconds"] for r in rs),
            "cpu_seconds": statistics.median(r["cpu_seconds"] for r in rs),
            "model_seconds": statistics.median(r["model_seconds"] for r in rs),
            "outside_model_seconds": statistics.median(r["outside_model_seconds"] for r in rs),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in rs),
            "messages": rs[0]["messages"],
        }
        for m, rs in by_mode.items()
    }
    plain = summary["plain"]
    ratios = {}
    for m in ("parties-plaintext", "parties-secure"):
        ratios[f"throughput_ratio_{m.replace('-', '_')}_over_plain"] = summary[m]["examples_per_s"] / plain["examples_per_s"]
        ratios[f"cpu_throughput_ratio_{m.replace('-', '_')}_over_plain"] = summary[m]["examples_per_cpu_s"] / plain["examples_per_cpu_s"]
        per_repeat = [
            (parties["outside_model_seconds"] - base["outside_model_seconds"]) / base["seconds"]
            for parties, base in zip(by_mode[m], by_mode["plain"])
        ]
        ratios[f"framework_overhead_{m.replace('-', '_')}"] = statistics.median(per_repeat)
    print(
        json.dumps(
            {
                "benchmark": "privnet_training_throughput",
                "dataset": "ml-100k (release-year split), variant lambda=1 with its attacker preset, the scenario's options",
                "epochs": args.epochs,
                "steps_per_epoch": args.steps or "full pass",
                "exchange_interval": args.interval,
                "summary": summary,
                **ratios,
                "runs": rows,
                "note": "the last epoch (its steps and its validation pass) in both modes; medians over repeats; "
                "the same last validation HR@10 in every mode means the same training",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
