"""Run configuration: everything needed to rerun a run, JSON-able (written as config.json)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

RUNTIMES = ("inproc", "ray", "flower", "flower-deployment")
CHANNELS = ("secure", "plaintext")
SPLITS = ("year", "genre")


class ConfigError(ValueError):
    """A bad option; the message lists the valid choices."""


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
    variants: list[str] | None = None  # None = all of the scenario's variants
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

    def validate(self) -> None:
        from .data import DATASETS
        from .scenarios import get_scenario

        get_scenario(self.scenario)  # raises with the list of valid names
        _choice("dataset", self.dataset, DATASETS)
        _choice("split", self.split, SPLITS)
        _choice("runtime", self.runtime, RUNTIMES)
        _choice("channel", self.channel, CHANNELS)
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

    def run_dict(self, seed: int) -> dict[str, Any]:
        """The part of the config a party needs to rebuild its data for one seed."""
        return {
            "dataset": self.dataset,
            "data_dir": self.data_dir,
            "split": self.split,
            "seed": int(seed),
            "public_fraction": self.public_fraction,
            "synthetic": self.synthetic,
        }

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _choice(option: str, value: str, valid) -> None:
    if value not in valid:
        raise ConfigError(f"unknown {option} {value!r}; valid: {', '.join(valid)}")
