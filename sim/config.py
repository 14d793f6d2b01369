"""Run configuration: everything needed to rerun a run, JSON-able (written as config.json),
and every check that can be made before any data is loaded or any directory is created."""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ConfigError
from .scenarios import Scenario, Variant, get_scenario

RUNTIMES = ("inproc", "ray", "flower", "flower-deployment")
FLOWER_RUNTIMES = ("flower", "flower-deployment")
CHANNELS = ("secure", "plaintext")
# The package each runtime other than inproc needs, and the project extra that installs it.
RUNTIME_PACKAGES = {"ray": ("ray", "ray"), "flower": ("flwr", "flower"), "flower-deployment": ("flwr", "flower")}
SPLITS = ("year", "genre")
POPULATIONS = ("overlap", "all")
DATASETS = ("ml-100k", "ml-1m", "synthetic")

__all__ = ["CHANNELS", "DATASETS", "FLOWER_RUNTIMES", "POPULATIONS", "RUNTIMES", "SPLITS", "ConfigError", "RunConfig"]


@dataclass
class RunConfig:
    scenario: str
    dataset: str = "ml-100k"
    data_dir: str | None = None
    split: str = "year"
    seeds: list[int] = field(default_factory=lambda: [0])
    runtime: str = "inproc"
    channel: str = "secure"
    quick: bool = False
    public_fraction: float = 0.8
    # Users the run concerns: "overlap" (data in both domains, the cross-domain setting) or "all".
    population: str = "overlap"
    variants: list[str] | None = None  # None = all of the scenario's variants
    grid: dict[str, list[Any]] = field(default_factory=dict)  # grid axis -> values replacing the scenario's
    options: dict[str, Any] = field(default_factory=dict)  # overrides of party hyperparameters
    synthetic: dict[str, Any] | None = None  # options of the synthetic generator
    out: str = "runs"
    # One intra-op thread: these models are small, and spinning OpenMP threads on a shared
    # 2-core machine made training several times slower than a single thread.
    torch_threads: int = 1
    # Variants (x seeds) run at once in worker processes, in-process runtime only. Each
    # (variant, seed) is independent and seeded, so results do not depend on it.
    jobs: int = 1
    ray_address: str | None = None
    placement: dict[str, str] = field(default_factory=dict)  # party -> custom resource

    def validate(self) -> Scenario:
        """Every check that needs no data; returns the scenario. Raises ConfigError."""
        scenario = get_scenario(self.scenario)  # raises with the list of valid names
        if scenario.population is not None:  # e.g. a single-domain scenario: the "overlap" rule does not apply
            self.population = scenario.population
        _choice("dataset", self.dataset, DATASETS)
        _choice("split", self.split, SPLITS)
        _choice("runtime", self.runtime, RUNTIMES)
        _check_installed(self.runtime)
        _choice("channel", self.channel, CHANNELS)
        _choice("population", self.population, POPULATIONS)
        if not 0.05 <= self.public_fraction <= 0.95:
            raise ConfigError(f"--public-fraction must be between 0.05 and 0.95, got {self.public_fraction}")
        if not self.seeds:
            raise ConfigError("at least one seed is needed (--seed N or --seeds N [N ...])")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"--seeds must be distinct, got {self.seeds}")
        if self.jobs < 1:
            raise ConfigError(f"--jobs must be >= 1, got {self.jobs}")
        if self.jobs > 1 and self.runtime != "inproc":
            raise ConfigError(
                f"--jobs {self.jobs} runs variants in parallel on the inproc runtime only; the {self.runtime} "
                "runtime already places parties in their own processes: drop --jobs or use --runtime inproc"
            )
        if self.torch_threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {self.torch_threads}")
        check_options(scenario, self.options)
        self.select_variants(scenario)
        return scenario

    def select_variants(self, scenario: Scenario) -> list[Variant]:
        """The variants to run: the scenario's grid (with --grid values) and extras, or the
        ones named by --variants."""
        try:
            all_variants = scenario.variants(self.quick, self.grid)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.variants is None:
            return all_variants
        by_name = {v.name: v for v in all_variants}
        unknown = [n for n in self.variants if n not in by_name]
        if unknown:
            hint = " (grid values other than the defaults: --grid AXIS=v1,v2)" if scenario.grid.axes else ""
            raise ConfigError(f"unknown variant(s) {', '.join(unknown)} for scenario {scenario.name!r}; valid: {', '.join(by_name)}{hint}")
        return [by_name[n] for n in self.variants]

    def party_options(self, scenario: Scenario, variant: Variant) -> dict[str, Any]:
        """What every party of one run gets: defaults, then --set, then the variant's own."""
        return {**scenario.defaults(self.quick), **self.options, **variant.options}

    def run_dict(self, seed: int) -> dict[str, Any]:
        """The part of the config a party needs to rebuild its data for one seed."""
        return {
            "dataset": self.dataset,
            "data_dir": self.data_dir,
            "split": self.split,
            "seed": int(seed),
            "public_fraction": self.public_fraction,
            "synthetic": self.synthetic,
            "population": self.population,
        }

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def check_options(scenario: Scenario, options: dict[str, Any]) -> None:
    """--set KEY=VALUE: each key must be an option of the scenario, of the option's type, and
    not one a variant sets."""
    valid = {o.name: o for o in scenario.options}
    for key, value in options.items():
        opt = valid.get(key)
        if opt is None:
            names = ", ".join(o.name for o in scenario.options if not o.by_variant)
            raise ConfigError(
                f"unknown option {key!r} for scenario {scenario.name!r}; valid: {names} "
                f"(`python -m sim.run --scenario {scenario.name} --help-options` lists them)"
            )
        if opt.by_variant:
            axes = ", ".join(f"--grid {a.name}=..." for a in scenario.grid.axes)
            raise ConfigError(f"option {key!r} is set by each variant; choose variants with --variants{' or ' + axes if axes else ''}")
        try:
            options[key] = opt.check(value)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


def _check_installed(runtime: str) -> None:
    """The Ray and Flower runtimes need packages the main job does not (`make demo` installs
    the core only; `make test` installs everything)."""
    if runtime not in RUNTIME_PACKAGES:
        return
    package, extra = RUNTIME_PACKAGES[runtime]
    if importlib.util.find_spec(package) is None:
        raise ConfigError(
            f"--runtime {runtime} needs the {package!r} package, which is not installed; install it with "
            f"`.venv/bin/pip install -e '.[{extra}]'` (or `make test`, which installs every runtime)"
        )


def _choice(option: str, value: str, valid) -> None:
    if value not in valid:
        raise ConfigError(f"unknown {option} {value!r}; valid: {', '.join(valid)}")
