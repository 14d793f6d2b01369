"""The party factory every runtime calls where a party runs (`PARTY_FACTORY`)."""

from __future__ import annotations

from typing import Any

from parties.base import ChannelConfig, Party

from .scenarios import get_scenario
from .world import world

PARTY_FACTORY = "sim.party_factory:build_party"


def build_party(config: dict[str, Any]) -> Party:
    """Party factory (`sim.party_factory:build_party`), run wherever the party runs:
    config = {role, scenario, run, channel, options}. The party builds its own data from the
    run config and makes its own identity key; nothing secret arrives in `config`."""
    scenario = get_scenario(config["scenario"])
    name = config["role"]
    options = {**config.get("options", {}), "seed": int(config["run"]["seed"])}
    if name not in scenario.party_names(options):
        raise ValueError(f"scenario {scenario.name!r} has no party {name!r}; parties: {', '.join(scenario.party_names(options))}")
    return scenario.build_party(name, world(config["run"]), ChannelConfig.from_json(config["channel"]), options)
