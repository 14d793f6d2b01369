"""The command line: `python -m sim.run --scenario NAME [options]`.

Examples:
  python -m sim.run --list
  python -m sim.run --scenario privnet
  python -m sim.run --scenario privnet --seeds 0 1 2 --jobs 2
  python -m sim.run --scenario embeddings --seeds 0 1 2 --channel plaintext
  python -m sim.run --scenario embeddings --dataset ml-1m --data-dir ~/data/ml-1m
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .config import CHANNELS, RUNTIMES, SPLITS, ConfigError, RunConfig


def _kv(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def build_parser() -> argparse.ArgumentParser:
    from .data import DATASETS

    p = argparse.ArgumentParser(
        prog="python -m sim.run",
        description="Simulate a privacy-aware cross-domain transfer and report utility next to leakage.",
    )
    p.add_argument("--scenario", help="scenario to run (see --list)")
    p.add_argument("--list", action="store_true", help="list scenarios and their variants, then exit")
    p.add_argument("--dataset", default="ml-100k", choices=DATASETS, help="dataset (default: embedded MovieLens-100K)")
    p.add_argument("--data-dir", help="a GroupLens ml-100k / ml-1m directory to read instead of the embedded copy")
    p.add_argument("--split", default="year", choices=SPLITS, help="how to cut two domains out of the dataset")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, help="one seed (default 0)")
    seeds.add_argument("--seeds", type=int, nargs="+", help="several seeds; figures get 95%% CIs")
    p.add_argument("--variants", nargs="+", help="run only these variants of the scenario")
    p.add_argument("--public-fraction", type=float, default=0.8, help="fraction of users whose attributes are public (attacker training)")
    p.add_argument("--runtime", default="inproc", choices=RUNTIMES, help="where parties run")
    p.add_argument("--channel", default="secure", choices=CHANNELS, help="protocol suite between parties (plaintext only for ablations)")
    p.add_argument(
        "--set",
        dest="options",
        type=_kv,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a party hyperparameter, e.g. --set epochs=10",
    )
    p.add_argument(
        "--synthetic",
        type=_kv,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="synthetic generator option, e.g. --synthetic n_users=5000",
    )
    p.add_argument("--ray-address", help="join an existing Ray cluster (auto, ray://host:port, host:port)")
    p.add_argument(
        "--placement",
        type=_kv,
        action="append",
        default=[],
        metavar="PARTY=RESOURCE",
        help="pin a party to nodes with a custom Ray resource",
    )
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads per process (default 1)")
    p.add_argument("--jobs", type=int, default=1, help="run variants (x seeds) in N worker processes at once (inproc runtime; default 1)")
    p.add_argument("--out", default="runs", help="directory under which the run directory is created")
    p.add_argument("--quick", action="store_true", help="small and fast settings (tests, smoke runs)")
    p.add_argument("--quiet", action="store_true", help="no progress bars, no table")
    return p


def list_scenarios() -> str:
    from .scenarios import get_scenario, scenario_names

    lines = []
    for name in scenario_names():
        s = get_scenario(name)
        variants = ", ".join(v.name for v in s.variants(False))
        lines.append(f"{name:18s} {s.title}\n{'':18s} variants: {variants}")
    return "\n".join(lines)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    seeds = args.seeds if args.seeds else [args.seed if args.seed is not None else 0]
    return RunConfig(
        scenario=args.scenario,
        dataset=args.dataset,
        data_dir=str(Path(args.data_dir).expanduser()) if args.data_dir else None,
        split=args.split,
        seeds=list(seeds),
        runtime=args.runtime,
        channel=args.channel,
        quick=args.quick,
        public_fraction=args.public_fraction,
        variants=args.variants,
        options=dict(args.options),
        synthetic=dict(args.synthetic) or None,
        out=args.out,
        torch_threads=args.threads,
        jobs=args.jobs,
        ray_address=args.ray_address,
        placement={k: str(v) for k, v in args.placement},
    )


def new_run_dir(out: str, scenario: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = Path(out) / f"{scenario}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    path.mkdir(parents=True)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        print(list_scenarios())
        return 0
    if not args.scenario:
        parser.error("--scenario is required (see --list)")
    config = config_from_args(args)
    try:
        config.validate()
        from .engine import select_variants
        from .scenarios import get_scenario

        select_variants(get_scenario(config.scenario), config)
    except (ConfigError, ValueError) as exc:
        parser.error(str(exc))
    return execute(config, quiet=args.quiet)


def execute(config: RunConfig, *, quiet: bool = False) -> int:
    from .data import DatasetError
    from .engine import Keys, dump_json, run_experiment
    from .report import print_summary, write_outputs
    from .runtimes.base import RunError

    run_dir = new_run_dir(config.out, config.scenario)
    dump_json(config.to_json(), run_dir / "config.json")
    keys = Keys.generate() if config.channel == "secure" else None
    if keys is not None:
        keys.save(run_dir / "keys")
    started = time.perf_counter()
    flower = config.runtime in ("flower", "flower-deployment")
    progress = None
    bar = None
    if not quiet and not flower:
        from tqdm import tqdm

        from .engine import select_variants
        from .scenarios import get_scenario

        total = len(config.seeds) * len(select_variants(get_scenario(config.scenario), config))
        bar = tqdm(total=total, desc=config.scenario, unit="variant", file=sys.stderr)

        def progress(label: str) -> None:
            bar.set_postfix_str(label)

    from .engine import ExperimentResult
    from .scenarios import get_scenario

    result = ExperimentResult(config=config, scenario=get_scenario(config.scenario))

    def done(_run) -> None:
        if bar is not None:
            bar.update(1)

    try:
        if flower:
            # Flower inverts control: the coordinator runs inside the ServerApp, which writes
            # the run directory itself (also on failure).
            from .runtimes.flower import run_experiment_flower

            results = run_experiment_flower(config, run_dir=run_dir, keys=keys, quiet=quiet)
            if results and not quiet:
                print_summary(results)
            print(f"run directory: {run_dir}")
            return 0
        run_experiment(config, keys=keys, on_variant_done=done, progress=progress, result=result, intercepted_dir=run_dir / "intercepted")
        status = 0
    except (RunError, DatasetError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        print("interrupted: keeping what finished", file=sys.stderr)
        status = 130
    finally:
        if bar is not None:
            bar.close()
    if flower:  # the ServerApp already wrote what finished
        print(f"run directory: {run_dir}", file=sys.stderr)
        return status
    timing = {"total_seconds": time.perf_counter() - started}
    results = write_outputs(result, run_dir, timing)
    if results and not quiet:
        print_summary(results)
    print(f"run directory: {run_dir}", file=sys.stderr if status else sys.stdout)
    return status


if __name__ == "__main__":
    sys.exit(main())
