"""The command line: parser, configuration, and `--list` / `--help-options`.

Start-up is kept short: only the scenario declarations are imported until a run really
starts, so `--list`, `--help` and argument errors answer at once; the engine (torch, the
attackers) is imported when a run begins.

Examples:
  python -m sim.run --list
  python -m sim.run --scenario privnet
  python -m sim.run --scenario privnet --seeds 0 1 2 --jobs 2
  python -m sim.run --scenario privnet --grid lambda=0,0.3,2 --variants lambda=0 lambda=0.3
  python -m sim.run --scenario privnet --help-options
  python -m sim.run --scenario embeddings --dataset ml-1m --data-dir ~/data/ml-1m
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .config import CHANNELS, DATASETS, POPULATIONS, RUNTIMES, SPLITS, ConfigError, RunConfig
from .errors import RunError
from .scenarios import get_scenario, scenario_names


def _kv(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _axis(text: str) -> tuple[str, str]:
    key, sep, values = text.partition("=")
    if not sep or not key or not values:
        raise argparse.ArgumentTypeError(f"expected AXIS=V1,V2,..., got {text!r}")
    return key, values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sim.run",
        description="Simulate a privacy-aware cross-domain transfer and report utility next to leakage.",
    )
    p.add_argument("--scenario", help="scenario to run (see --list)")
    p.add_argument("--list", action="store_true", help="list scenarios and their variants, then exit")
    p.add_argument("--help-options", action="store_true", help="list the --scenario's options (--set KEY=VALUE), then exit")
    p.add_argument("--dataset", default="ml-100k", choices=DATASETS, help="dataset (default: embedded MovieLens-100K)")
    p.add_argument("--data-dir", help="a GroupLens ml-100k / ml-1m directory to read instead of the embedded copy")
    p.add_argument("--split", default="year", choices=SPLITS, help="how to cut two domains out of the dataset")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, help="one seed (default 0)")
    seeds.add_argument("--seeds", type=int, nargs="+", help="several seeds; figures get 95%% CIs")
    p.add_argument("--variants", nargs="+", help="run only these variants of the scenario")
    p.add_argument(
        "--grid",
        type=_axis,
        action="append",
        default=[],
        metavar="AXIS=V1,V2",
        help="replace a grid axis's values, e.g. --grid lambda=0,0.3,2",
    )
    p.add_argument(
        "--population", default="overlap", choices=POPULATIONS, help="users of the run: with data in both domains (default) or all"
    )
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
        help="set a party option (--help-options lists them)",
    )
    p.add_argument(
        "--synthetic", type=_kv, action="append", default=[], metavar="KEY=VALUE", help="synthetic generator option, e.g. n_users=5000"
    )
    p.add_argument("--ray-address", help="join an existing Ray cluster (auto, ray://host:port, host:port)")
    p.add_argument(
        "--placement",
        type=_kv,
        action="append",
        default=[],
        metavar="PARTY=RESOURCE",
        help="pin a party to Ray nodes with a custom resource",
    )
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads per process (default 1)")
    p.add_argument("--jobs", type=int, default=1, help="run variants (x seeds) in N worker processes at once (inproc runtime; default 1)")
    p.add_argument("--out", default="runs", help="directory under which the run directory is created")
    p.add_argument("--quick", action="store_true", help="small and fast settings (tests, smoke runs)")
    p.add_argument("--quiet", action="store_true", help="no progress bars, no table")
    return p


def list_scenarios() -> str:
    lines = []
    for name in scenario_names():
        s = get_scenario(name)
        variants = ", ".join(v.name for v in s.variants(False))
        axes = "".join(
            f"\n{'':18s} grid: {a.name} = {', '.join(f'{x:g}' if isinstance(x, float) else str(x) for x in a.values)}" for a in s.grid.axes
        )
        lines.append(f"{name:18s} {s.title}\n{'':18s} variants: {variants}{axes}")
    return "\n".join(lines)


def describe_options(scenario_name: str) -> str:
    s = get_scenario(scenario_name)
    lines = [f"options of {s.name!r} (--set KEY=VALUE; quick: the --quick default):"]
    for o in s.options:
        if o.by_variant:
            continue
        quick = "" if o.quick is None else f", quick {o.quick!r}"
        choices = "" if o.choices is None else f", one of {', '.join(map(str, o.choices))}"
        lines.append(f"  {o.name:20s} {o.kind:9s} default {o.default!r}{quick}{choices}\n  {'':20s} {o.help}")
    fixed = [o.name for o in s.options if o.by_variant]
    if fixed:
        lines.append(f"set by each variant (use --variants / --grid): {', '.join(fixed)}")
    return "\n".join(lines)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    seeds = args.seeds if args.seeds else [args.seed if args.seed is not None else 0]
    scenario = get_scenario(args.scenario)
    grid = {}
    for axis, values in args.grid:
        try:
            grid[axis] = scenario.grid.parse(axis, values)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
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
        population=args.population,
        variants=args.variants,
        grid=grid,
        options=dict(args.options),
        synthetic=dict(args.synthetic) or None,
        out=args.out,
        torch_threads=args.threads,
        jobs=args.jobs,
        ray_address=args.ray_address,
        placement={k: str(v) for k, v in args.placement},
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        print(list_scenarios())
        return 0
    if not args.scenario:
        parser.error("--scenario is required (see --list)")
    try:
        if args.help_options:
            print(describe_options(args.scenario))
            return 0
        config = config_from_args(args)
        config.validate()
    except ConfigError as exc:
        parser.error(str(exc))
    return execute(config, quiet=args.quiet)


def execute(config: RunConfig, *, quiet: bool = False) -> int:
    """Run `config`, print the summary table and where the run went; 0 on success."""
    # Imported when a run starts: the engine and the datasets bring torch, scikit-learn and
    # pandas (seconds), which --list, --help and argument errors never need.
    from . import api
    from .datasets import DatasetError
    from .outputs import print_summary

    bar = None
    on_task_done = None
    if not quiet and config.runtime not in ("flower", "flower-deployment"):
        total = len(config.seeds) * len(config.select_variants(get_scenario(config.scenario)))
        bar = tqdm(total=total, desc=config.scenario, unit="run", file=sys.stderr)

        def on_task_done(task) -> None:
            bar.set_postfix_str(f"seed {task.seed} · {task.variant.name}")
            bar.update(1)

    try:
        results = api.run(config, on_task_done=on_task_done, quiet=quiet)
    except (RunError, DatasetError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        _say_where(exc)
        return 1
    except KeyboardInterrupt as exc:
        print("interrupted: keeping what finished", file=sys.stderr)
        _say_where(exc)
        return 130
    finally:
        if bar is not None:
            bar.close()
    if not quiet:
        print_summary(results.results)
    print(f"run directory: {results.run_dir}")
    return 0


def _say_where(exc: BaseException) -> None:
    run_dir = getattr(exc, "run_dir", None)
    if run_dir is not None:
        print(f"run directory: {run_dir}", file=sys.stderr)
