"""`embeddings`: plain user embeddings from a source BPR-MF, the undefended reference."""

from __future__ import annotations

from typing import Any

from parties.embeddings import ARTIFACT, EmbeddingsSource, EmbeddingsTarget

from ..runtimes.base import Relay
from .base import Outcome, Scenario, Variant


class EmbeddingsScenario(Scenario):
    name = "embeddings"
    title = "Plain user embeddings (EMCDR-style transfer, no defense)"
    paper = "reference"
    attacked_artifact = ARTIFACT
    attacked_field = "embedding"

    def variants(self, quick: bool) -> list[Variant]:
        return [
            Variant("transfer", {"mode": "transfer"}, {"mode": "transfer"}),
            Variant("target-only", {"mode": "target-only"}, {"mode": "target-only"}),
            Variant("popularity", {"mode": "popularity"}, {"mode": "popularity"}),
        ]

    def options(self, quick: bool) -> dict[str, Any]:
        if quick:
            return {"dim": 32, "epochs": 15, "patience": 3}
        return {"dim": 64, "epochs": 40, "patience": 5}

    def party_classes(self) -> dict[str, type]:
        return {"source": EmbeddingsSource, "target": EmbeddingsTarget}

    def drive(self, relay: Relay, variant: Variant) -> Outcome:
        mode = variant.options["mode"]
        details: dict[str, Any] = {}
        if mode == "transfer":
            # Only the transfer variant releases anything: the others are the utility floors
            # an attacker sees nothing of.
            trained = relay.request_one("source", "train")
            details["source_valid"] = trained.meta.get("valid")
            relay.request("source", "release", to="target")
        report = relay.request_one("target", "fit", type="report", mode=mode)
        return Outcome.from_report(report, **details)
