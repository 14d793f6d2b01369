"""The scenario contract: what a scenario declares, and the one thing it does (drive a run).

A scenario is a short, declarative wiring:

- `parties`: the names of its parties, and `build_party` to make one from the world where it
  runs (a source and a target; a recommender service and a requester; many user clients and a
  server; any number);
- `options`: every hyperparameter its parties take (name, default, quick default, meaning),
  so that `--set` is checked and `--help-options` can list them;
- `grid`: its variants as a declarative grid (e.g. lambda x embedding size, values users may
  replace with `--grid lambda=0,0.3,2`) plus named `extras`;
- `utility`: ranking (HR/NDCG/MRR/AUC@k over sampled negatives) or rating (MAE/RMSE), each
  optionally per user group;
- `attacks`: what each threat model's attacker does with the artifacts its party received;
- `drive(relay, variant)`: the coordinator's steps for one run.

The engine does everything else (parties started where the runtime puts them, keys, the
relay and its taps, evaluation, outputs) the same way for every scenario.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # declarations stay cheap to import (`--list` answers at once)
    from attacks.artifact import Artifact
    from parties.base import ChannelConfig, Party
    from protocol import Message

    from ..coordinator import Relay
    from ..world import World

# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Option:
    """One hyperparameter a scenario's parties take. `quick` is the default under --quick
    (None: same as `default`); `by_variant` options are set by each variant, not by --set."""

    name: str
    default: Any
    help: str
    quick: Any = None
    by_variant: bool = False
    choices: tuple[Any, ...] | None = None

    def value(self, quick: bool) -> Any:
        return self.quick if quick and self.quick is not None else self.default

    @property
    def kind(self) -> str:
        """'int', 'float', 'bool', 'str', 'list[int]' or 'any': what --set accepts."""
        d = self.default
        if isinstance(d, bool):
            return "bool"
        if isinstance(d, int):
            return "int"
        if isinstance(d, float):
            return "float"
        if isinstance(d, str):
            return "str"
        if isinstance(d, (list, tuple)):
            return "list[int]"
        return "any"

    def check(self, value: Any) -> Any:
        """The value as this option's type, or ValueError saying what was expected."""
        kind = self.kind
        ok = {
            "bool": isinstance(value, bool),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
            "str": isinstance(value, str),
            "list[int]": isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value),
            "any": True,
        }[kind]
        if not ok:
            raise ValueError(f"--set {self.name}={value!r}: expected {kind} ({self.help})")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"--set {self.name}={value!r}: choose one of {', '.join(map(str, self.choices))}")
        return float(value) if kind == "float" else list(value) if kind == "list[int]" else value


# --------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class Variant:
    """One row of the results: a name, the parameters users see, the options parties get."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Axis:
    """One axis of a variant grid: `name` (as users write it: `--grid lambda=0,0.5`) sets the
    party option `option` to each of `values`."""

    name: str
    option: str
    values: tuple[Any, ...]
    parse: Callable[[str], Any] = float


@dataclass(frozen=True)
class Grid:
    """Variants as the product of its axes (each point also gets `params` / `options`), then
    the named `extras` (references and baselines outside the grid)."""

    axes: tuple[Axis, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    extras: tuple[Variant, ...] = ()

    def variants(self, values: Mapping[str, Sequence[Any]] | None = None) -> list[Variant]:
        """The grid's points (named by the axes that take more than one value), then extras."""
        values = dict(values or {})
        unknown = sorted(set(values) - {a.name for a in self.axes})
        if unknown:
            valid = ", ".join(a.name for a in self.axes) or "none (this scenario has no grid)"
            raise ValueError(f"unknown grid axis {', '.join(unknown)}; axes: {valid}")
        axes = [(a, tuple(values.get(a.name, a.values))) for a in self.axes]
        out = []
        for point in product(*(vals for _, vals in axes)) if axes else ():
            shown = [(a, v) for (a, vals), v in zip(axes, point) if len(vals) > 1] or [(axes[0][0], point[0])]
            name = ",".join(f"{a.name}={v:g}" if isinstance(v, float) else f"{a.name}={v}" for a, v in shown)
            params = {**{a.name: v for (a, _), v in zip(axes, point)}, **self.params}
            options = {**{a.option: v for (a, _), v in zip(axes, point)}, **self.options}
            out.append(Variant(name, params, options))
        return out + list(self.extras)

    def parse(self, axis: str, text: str) -> list[Any]:
        """`--grid axis=v1,v2,...` values, parsed by the axis."""
        found = [a for a in self.axes if a.name == axis]
        if not found:
            valid = ", ".join(a.name for a in self.axes) or "none (this scenario has no grid)"
            raise ValueError(f"unknown grid axis {axis!r}; axes: {valid}")
        try:
            return [found[0].parse(v) for v in text.split(",") if v.strip()]
        except ValueError as exc:
            raise ValueError(f"--grid {axis}={text}: {exc}") from None


# --------------------------------------------------------------------------- utility


@dataclass(frozen=True)
class UserGroups:
    """Named groups of users, each reported separately (e.g. fewest / median / most ratings)."""

    name: str
    assign: Callable[[World], dict[str, np.ndarray]]  # group name -> user ids


@dataclass(frozen=True)
class RankingUtility:
    """HR/NDCG/MRR@k and AUC of one held-out positive against sampled negatives (the
    target's report carries them per user), plus accuracy@k over the full catalogue where a
    scenario reports it."""

    kind: str = "ranking"
    headline: str = "HR@10"
    higher_is_better: bool = True
    groups: UserGroups | None = None


@dataclass(frozen=True)
class RatingUtility:
    """MAE and RMSE on held-out ratings; ΔMAE = MAE / MAE of `reference` (a variant)."""

    kind: str = "rating"
    headline: str = "MAE"
    higher_is_better: bool = False
    reference: str | None = None
    groups: UserGroups | None = None


# --------------------------------------------------------------------------- attacks


@dataclass(frozen=True)
class AttributeAttack:
    """Attribute inference on a per-user artifact: every release of the artifact kinds
    `kinds` a threat model holds is attacked; `final` names the release the run ends with.
    Attackers train on the world's public users and are tested on its private users (both
    within the run's population)."""

    kinds: tuple[str, ...]
    field: str
    final: str
    attributes: tuple[str, ...] = ("gender", "age_group")
    # Attacker families (attacks.attackers; None: the default battery), and how a release
    # becomes per-user features (None: the `field` rows of its users).
    attackers: tuple[str, ...] | None = None
    features: Callable[[Artifact, World], np.ndarray] | None = None
    name: str = "attribute"


@dataclass(frozen=True)
class MembershipAttack:
    """Membership inference: `features(capture, world, seed)` turns what a threat model
    captured (and the attacker's own shadow data) into (X_train, member_train, X_test,
    member_test), or None when it cannot read the capture. With `reads_options` it is called
    `features(capture, world, seed, options)` with the run's party options (what the variant
    chose for the attacker, e.g. its shadow algorithm). `attackers`: the attack families
    (attacks.membership.ATTACKERS; None: the default battery)."""

    features: Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None]
    name: str = "membership"
    reads_options: bool = False
    attackers: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ReconstructionAttack:
    """How well a secret per-user vector (`secret(world, seed)`, e.g. the source's private
    user embedding) is recovered from the release `final` (of one of the kinds `kinds`)."""

    kinds: tuple[str, ...]
    field: str
    final: str
    secret: Callable[[World, int], np.ndarray]
    features: Callable[[Artifact, World], np.ndarray] | None = None
    name: str = "reconstruction"


Attack = AttributeAttack | MembershipAttack | ReconstructionAttack


# --------------------------------------------------------------------------- outcome


@dataclass
class Outcome:
    """What the coordinator learned from one run: the utility the evaluating party reported
    (means, and per-user values for groups and intervals) and anything else worth keeping."""

    utility: dict[str, float]
    per_user: dict[str, np.ndarray]
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_report(cls, report: Message, **details: Any) -> Outcome:
        per_user = {k: np.asarray(v) for k, v in report.arrays.items()}
        extra = {k: v for k, v in report.meta.items() if k not in ("op", "utility")}
        return cls(utility=dict(report.meta["utility"]), per_user=per_user, details={**extra, **details})


# --------------------------------------------------------------------------- the scenario


class Scenario(ABC):
    name: str = "?"
    title: str = ""
    paper: str = ""
    parties: tuple[str, ...] = ("source", "target")
    receiver: str = "target"  # the curious receiver: the party whose received artifacts are attacked
    population: str | None = None  # the run's users when the scenario fixes them (one domain: "all"); None: --population
    options: tuple[Option, ...] = ()
    grid: Grid = Grid()
    reference: str | None = None  # the variant paired differences are taken against (see reference_of)
    utility: RankingUtility | RatingUtility = RankingUtility()
    attacks: tuple[Attack, ...] = ()
    # Artifact kinds the eavesdroppers keep (None = all): per-step training traffic is still
    # counted in each eavesdropper's index. Kinds in `folded_kinds` (per-step artifacts) are
    # folded per round into one artifact of each user's latest row.
    retained_kinds: tuple[str, ...] | None = None
    folded_kinds: tuple[str, ...] = ()

    def variants(self, quick: bool = False, grid: Mapping[str, Sequence[Any]] | None = None) -> list[Variant]:
        return self.grid.variants(grid)

    def reference_of(self, variant: Variant) -> str | None:
        """The variant `variant` is compared with, seed by seed (paired differences, ratios such
        as ΔMAE). One reference for all by default; a grid may pair each point with its own
        (e.g. each model with itself at the full privacy budget)."""
        return self.reference

    def relative_cost(self, options: Mapping[str, Any]) -> float:
        """A rough estimate of one task's run time with these (party) options, relative to the
        scenario's other tasks. `--jobs` starts the costliest tasks first (longest processing
        time first), so that no long task is left to run alone at the end; only the order in
        which tasks start depends on it, never a result."""
        return 1.0

    def party_names(self, options: Mapping[str, Any]) -> tuple[str, ...]:
        """The parties of one run (a scenario may size them by an option, e.g. clients=N)."""
        return self.parties

    def option(self, name: str) -> Option:
        for opt in self.options:
            if opt.name == name:
                return opt
        raise KeyError(name)

    def defaults(self, quick: bool) -> dict[str, Any]:
        """Every option's value before --set and the variant's own options."""
        return {o.name: o.value(quick) for o in self.options if not o.by_variant}

    @abstractmethod
    def build_party(self, name: str, world: World, channel: ChannelConfig, options: dict[str, Any]) -> Party:
        """The party `name`, made from its own share of the world, where it runs."""

    @abstractmethod
    def drive(self, relay: Relay, variant: Variant) -> Outcome:
        """Run one variant through the relay; return the evaluating party's reported utility."""
