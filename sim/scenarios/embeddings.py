"""`embeddings`: plain user embeddings from a source BPR-MF, the undefended reference."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from parties.names import USER_EMBEDDINGS

from .base import AttributeAttack, Grid, Option, Outcome, Scenario, Variant

if TYPE_CHECKING:
    from parties.base import ChannelConfig, Party

    from ..coordinator import Relay
    from ..world import World


class EmbeddingsScenario(Scenario):
    name = "embeddings"
    title = "Plain user embeddings (EMCDR-style transfer, no defense)"
    paper = "reference"
    options = (
        Option("dim", 64, "embedding size of both parties' BPR-MF", quick=32),
        Option("epochs", 40, "maximum training epochs (early stopping on validation HR@10)", quick=15),
        Option("patience", 5, "epochs without improvement before stopping", quick=3),
        Option("lr", 5e-3, "Adam learning rate"),
        Option("weight_decay", 1e-2, "L2 coefficient on the embeddings and biases in a batch"),
        Option("batch_size", 1024, "training pairs per step"),
        Option(
            "optimizer",
            "adam",
            "adam: every parameter every step (quadratic in the users); lazy-adam: only the user rows "
            "a batch touches (linear; for 100k+ users; different figures)",
            choices=("adam", "lazy-adam"),  # models.bprmf.OPTIMIZERS (not imported: torch stays out of --list)
        ),
        Option("mode", "transfer", "what the target does", by_variant=True, choices=("transfer", "target-only", "popularity")),
    )
    # Only the transfer variant releases anything: the others are the utility floors an
    # attacker sees nothing of.
    grid = Grid(
        extras=(
            Variant("transfer", {"mode": "transfer"}, {"mode": "transfer"}),
            Variant("target-only", {"mode": "target-only"}, {"mode": "target-only"}),
            Variant("popularity", {"mode": "popularity"}, {"mode": "popularity"}),
        )
    )
    reference = "target-only"
    attacks = (AttributeAttack(kinds=(USER_EMBEDDINGS,), field="embedding", final=USER_EMBEDDINGS),)

    def build_party(self, name: str, world: World, channel: ChannelConfig, options: dict[str, Any]) -> Party:
        from parties.embeddings import EmbeddingsSource, EmbeddingsTarget  # torch: only where a party runs

        if name == "source":
            return EmbeddingsSource(channel, world.split.source, world.attributes.restricted_to(world.public), options)
        return EmbeddingsTarget(channel, world.split.target, options)

    def drive(self, relay: Relay, variant: Variant) -> Outcome:
        mode = variant.options["mode"]
        details: dict[str, Any] = {}
        if mode == "transfer":
            trained = relay.request_one("source", "train")
            details["source_valid"] = trained.meta.get("valid")
            relay.request("source", "release", to="target")
        report = relay.request_one("target", "fit", type="report", mode=mode)
        return Outcome.from_report(report, **details)
