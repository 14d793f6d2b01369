"""The scenario registry: `--scenario NAME` resolves here."""

from __future__ import annotations

from ..errors import ConfigError
from .base import Outcome, Scenario, Variant
from .embeddings import EmbeddingsScenario
from .privnet import PrivNetScenario

_SCENARIOS: dict[str, type[Scenario]] = {
    EmbeddingsScenario.name: EmbeddingsScenario,
    PrivNetScenario.name: PrivNetScenario,
}


class UnknownScenario(ConfigError):
    pass


def scenario_names() -> list[str]:
    return sorted(_SCENARIOS)


def get_scenario(name: str) -> Scenario:
    try:
        return _SCENARIOS[name]()
    except KeyError:
        raise UnknownScenario(
            f"unknown scenario {name!r}; valid scenarios: {', '.join(scenario_names())} (see `python -m sim.run --list`)"
        ) from None


__all__ = ["Outcome", "Scenario", "UnknownScenario", "Variant", "get_scenario", "scenario_names"]
