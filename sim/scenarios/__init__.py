"""The scenario registry: `--scenario NAME` resolves here.

Every module of this package (but `base`) declares one scenario, a `Scenario` subclass with a
`name`; the registry is whatever these modules declare, so adding a scenario is adding a file.
The modules hold declarations only (party code is imported where a party runs), so reading
them all is cheap.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from ..errors import ConfigError
from .base import Outcome, Scenario, Variant


class UnknownScenario(ConfigError):
    pass


@cache
def _registry() -> dict[str, type[Scenario]]:
    found: dict[str, type[Scenario]] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        declared = [c for c in vars(module).values() if isinstance(c, type) and issubclass(c, Scenario) and c.__module__ == module.__name__]
        if len(declared) != 1:
            raise TypeError(f"{module.__name__} must declare exactly one Scenario subclass, found {[c.__name__ for c in declared]}")
        (cls,) = declared
        if cls.name in found:
            raise TypeError(f"scenario name {cls.name!r} is declared twice ({found[cls.name].__module__}, {module.__name__})")
        found[cls.name] = cls
    return found


def scenario_names() -> list[str]:
    return sorted(_registry())


def get_scenario(name: str) -> Scenario:
    try:
        return _registry()[name]()
    except KeyError:
        raise UnknownScenario(
            f"unknown scenario {name!r}; valid scenarios: {', '.join(scenario_names())} (see `python -m sim.run --list`)"
        ) from None


__all__ = ["Outcome", "Scenario", "UnknownScenario", "Variant", "get_scenario", "scenario_names"]
