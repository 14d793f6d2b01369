"""In-process runtime overhead: a full `embeddings` transfer run through parties, protocol,
relay and taps, against the same training and attack code called directly, side by side.

    python bench/bench_runtime.py [--quick] [--repeats N]

Prints one JSON object. Each repetition runs direct, plaintext and secure back to back so the
ratios compare runs made under the same machine load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from models.bprmf import train_bprmf  # noqa: E402
from sim.config import RunConfig  # noqa: E402
from sim.engine import run_experiment  # noqa: E402
from sim.evaluate import attack_features  # noqa: E402
from sim.executors import make_executor  # noqa: E402
from sim.scenarios import get_scenario  # noqa: E402
from sim.world import world  # noqa: E402


def direct(config: RunConfig) -> float:
    """The transfer variant's work without parties: train, transfer, train, score, attack twice."""
    started = time.perf_counter()
    w = world(config.run_dict(config.seeds[0]))
    options = get_scenario("embeddings").defaults(config.quick)
    seed = config.seeds[0]
    source, _ = train_bprmf(w.split.source, seed=seed, **options)
    vectors = source.user_vectors()
    target, _ = train_bprmf(w.split.target, user_features=vectors, seed=seed, **options)
    users, cands = w.split.target.candidates("test")
    target.score(users, cands)
    attack_features(vectors, w, seed=seed)  # receiver; the wire shares it on plaintext
    return time.perf_counter() - started


def through_parties(config: RunConfig) -> float:
    started = time.perf_counter()
    run_experiment(config, make_executor(config))
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="smaller model settings")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(1)
    base = dict(scenario="embeddings", variants=["transfer"], quick=args.quick, out="/tmp/cdrsim-bench")
    plain = RunConfig(channel="plaintext", **base)
    secure = RunConfig(channel="secure", **base)
    world(plain.run_dict(0))  # load once, outside the timings
    rows = []
    for _ in range(args.repeats):
        rows.append({"direct_s": direct(plain), "inproc_plaintext_s": through_parties(plain), "inproc_secure_s": through_parties(secure)})
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(
        json.dumps(
            {
                "benchmark": "inproc_runtime_overhead",
                "scenario": "embeddings/transfer on ml-100k" + (" (quick)" if args.quick else ""),
                "repeats": args.repeats,
                "median_seconds": med,
                "ratio_plaintext_over_direct": med["inproc_plaintext_s"] / med["direct_s"],
                "ratio_secure_over_direct": med["inproc_secure_s"] / med["direct_s"],
                "runs": rows,
                "note": "ratios of medians; each repeat runs the three modes back to back under the same load",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
