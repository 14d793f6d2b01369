"""PrivNet training throughput through the parties and protocol against the same model trained
in a plain PyTorch loop (`models.privnet.train_privnet_joint`), side by side, with peak memory.

    python bench/bench_privnet.py [--epochs 1] [--steps 150] [--repeats 2]

Each mode runs in a fresh subprocess (so peak RSS is its own); modes alternate within each
repeat so the ratio compares runs made under the same machine load. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_mode(mode: str, epochs: int, steps: int, channel: str) -> dict:
    import torch

    torch.set_num_threads(1)
    from models.privnet import train_privnet_joint
    from sim.config import RunConfig
    from sim.coordinator import Relay, start_parties
    from sim.engine import channel_config, party_specs
    from sim.runtimes.inproc import InprocRuntime
    from sim.scenarios import get_scenario
    from sim.world import world

    scenario = get_scenario("privnet")
    config = RunConfig(scenario="privnet", channel=channel, options={"epochs": epochs, "max_steps_per_epoch": steps, "patience": 50})
    w = world(config.run_dict(0))
    opts = {**scenario.defaults(False), **config.options}
    batch = int(opts["batch_size"])
    started = time.perf_counter()
    if mode == "plain":
        labels = w.attributes.restricted_to(w.public).as_dict()
        train_privnet_joint(
            w.split.source,
            w.split.target,
            labels,
            lam=1.0,
            epochs=epochs,
            batch_size=batch,
            lr=opts["lr"],
            seed=0,
            patience=50,
            dim=opts["dim"],
            hidden=tuple(opts["hidden"]),
            adv_hidden=tuple(opts["adv_hidden"]),
            max_steps_per_epoch=steps,
        )
        messages = 0
    else:
        (variant,) = [v for v in scenario.variants(False) if v.name == "lambda=1"]
        runtime = InprocRuntime()
        relay = Relay(runtime, start_parties(runtime, party_specs(config, scenario, variant, 0), channel_config(config, 0)))
        scenario.drive(relay, variant)
        messages = relay.messages
    seconds = time.perf_counter() - started
    # per step: one target batch and one source batch of `batch` examples each
    examples = epochs * steps * batch * 2
    return {
        "mode": mode if mode == "plain" else f"parties-{channel}",
        "seconds": seconds,
        "examples_per_s": examples / seconds,
        "messages": messages,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--steps", type=int, default=150, help="training steps per epoch")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--channel", default="plaintext", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.epochs, args.steps, args.channel)))
        return
    rows: list[dict] = []
    for _ in range(args.repeats):
        for mode, channel in (("plain", "plaintext"), ("parties", "plaintext"), ("parties", "secure")):
            out = subprocess.run(
                [sys.executable, __file__, "--mode", mode, "--channel", channel, "--epochs", str(args.epochs), "--steps", str(args.steps)],
                check=True,
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    by_mode: dict[str, list[dict]] = {}
    for r in rows:
        by_mode.setdefault(r["mode"], []).append(r)
    summary = {
        m: {
            "examples_per_s": statistics.median(r["examples_per_s"] for r in rs),
            "seconds": statistics.median(r["seconds"] for r in rs),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in rs),
            "messages": rs[0]["messages"],
        }
        for m, rs in by_mode.items()
    }
    plain = summary["plain"]["examples_per_s"]
    print(
        json.dumps(
            {
                "benchmark": "privnet_training_throughput",
                "dataset": "ml-100k (release-year split), lambda=1, paper hyperparameters",
                "epochs": args.epochs,
                "steps_per_epoch": args.steps,
                "summary": summary,
                "throughput_ratio_parties_plaintext_over_plain": summary["parties-plaintext"]["examples_per_s"] / plain,
                "throughput_ratio_parties_secure_over_plain": summary["parties-secure"]["examples_per_s"] / plain,
                "runs": rows,
                "note": "timings include one validation pass per epoch in both modes; medians over repeats",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
