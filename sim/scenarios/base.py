"""What a scenario declares: its variants, its parties, and the steps the coordinator drives."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protocol import Message

from ..runtimes.base import Relay


@dataclass(frozen=True)
class Variant:
    """One row of the results: a name, the parameters users see, the options parties get."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """What the coordinator learned from one variant's run (utility reported by the target)."""

    utility: dict[str, float]
    per_user: dict[str, np.ndarray]
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_report(cls, report: Message, **details: Any) -> Outcome:
        per_user = {k: np.asarray(v) for k, v in report.arrays.items()}
        extra = {k: v for k, v in report.meta.items() if k not in ("op", "utility")}
        return cls(utility=dict(report.meta["utility"]), per_user=per_user, details={**extra, **details})


class Scenario(ABC):
    name: str = "?"
    title: str = ""
    paper: str = ""
    # The artifact the attacks target, and the array of it that holds per-user features.
    attacked_artifact: str = ""
    attacked_field: str = ""
    # Artifact kinds written to intercepted/ as files (None = all); per-step training traffic
    # is still counted in each eavesdropper's index.
    intercepted_kinds: tuple[str, ...] | None = None

    @abstractmethod
    def variants(self, quick: bool) -> list[Variant]: ...

    @abstractmethod
    def options(self, quick: bool) -> dict[str, Any]:
        """Hyperparameters shared by every variant (merged under the variant's options)."""

    @abstractmethod
    def party_classes(self) -> dict[str, type]: ...

    @abstractmethod
    def drive(self, relay: Relay, variant: Variant) -> Outcome:
        """Run one variant through the relay; return the target's reported utility."""
