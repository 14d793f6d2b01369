"""`privnet`: adversarially trained transfer (PrivNet), against LDP, BlurMe and target-only.

Message flow and what crosses in which direction: see `parties/privnet.py` (and
protocol/PROTOCOL.md, "Scenario flows"). In short: per training step the source sends the
batch users' transferred representation x_u|trans and the target returns dL_T/dx_u|trans; per
epoch the source releases every user's x_u|trans for validation; at the end it releases the
best epoch's x_u|trans for the test. The curious receiver is attacked on every one of these
releases (the per-step batches folded per epoch), and reports the worst case and the final.

Paper settings (Table 2): embedding 80, MLP [80, 64], Adam 5e-4, batch 128, 1 negative, clip
5, up to 50 epochs with early stopping on validation. Patience 5: validation HR@10 on ML-100K
(933 users) plateaus for 3-4 epochs early on; patience 3 stopped one run in three before epoch
8 and cost it up to 0.15 HR@10 (3 seeds x 9 variants, measured).

The network. The paper can be read as one sigmoid hidden layer of 64 (x_u|trans of size 64) or
as an MLP [80, 64]; cdrsim's default is two ReLU layers of 80 and 64 (x_u|trans of size 80),
and `--set hidden=[64] --set activation=sigmoid` runs the other reading. Measured on ML-100K
(overlapping users, seeds 0-2, paper optimiser, strong adversary): with one sigmoid layer of 64
the target network barely learns at lr 5e-4 within early stopping, and transfer, defenses and
lambda change nothing in utility: HR@10 0.471 for lambda = 0, 1 and target-only alike; with
[80, 64] ReLU, HR@10 0.574 (lambda = 0), 0.559 (lambda = 1), 0.581 (target-only). Gender
leakage of the final release: 0.590 -> 0.498 (sigmoid [64], lambda 0 -> 1) and 0.637 -> 0.572
(ReLU [80, 64]). A representation the target cannot use measures no trade-off, hence the default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from parties.names import ADVERSARY_PRESETS, DEFENSES, PRIVNET_BATCH_KIND, PRIVNET_RELEASED, PRIVNET_REPRESENTATION_KIND, adversary_steps

from ..errors import RunError
from .base import AttributeAttack, Axis, Grid, Option, Outcome, Scenario, Variant

if TYPE_CHECKING:
    from parties.base import ChannelConfig, Party

    from ..coordinator import Relay
    from ..world import World


MAX_EPOCHS_GUARD = 10_000


class PrivNetScenario(Scenario):
    name = "privnet"
    title = "PrivNet: privacy-aware transfer with a simulated attacker (vs LDP, BlurMe)"
    paper = "PrivNet (papers/000)"
    options = (
        Option("dim", 80, "item embedding size", quick=16),
        Option("hidden", [80, 64], "MLP hidden layer sizes; x_u|trans has the first one's size (paper, one reading: [64])", quick=[8]),
        Option("activation", "relu", "hidden-layer activation (paper, one reading: sigmoid)", choices=("sigmoid", "relu")),
        Option("adv_hidden", [64], "hidden layers of the simulated attacker", quick=[16]),
        Option("epochs", 50, "maximum epochs (early stopping on validation HR@10)", quick=2),
        Option("patience", 5, "epochs without improvement before stopping", quick=1),
        Option("batch_size", 128, "examples per training step"),
        Option("lr", 5e-4, "Adam learning rate of both networks", quick=5e-3),
        Option("max_steps_per_epoch", 0, "cap on training steps per epoch (0: a full pass)", quick=15),
        Option(
            "exchange_interval",
            1,
            "training steps per exchange between the parties: the x_u|trans of K batches in one message, "
            "K gradients back, applied in order (1: Algorithm 1 step by step; K > 1 saves round trips)",
        ),
        Option("window", 10, "history items the attention encoder reads"),
        Option("clip", 5.0, "gradient-norm clip of each party's own parameters"),
        Option("adv_steps", 0, "simulated-attacker updates per recommender step (0: the adversary preset's)"),
        Option("adv_lr", 0.0, "simulated attacker's learning rate (0: the adversary preset's)"),
        Option("lam", 1.0, "adversarial weight lambda", by_variant=True),
        Option(
            "adversary",
            "strong",
            "simulated-attacker preset: " + "; ".join(f"{k}: {v}" for k, v in ADVERSARY_PRESETS.items()),
            by_variant=True,
            choices=tuple(ADVERSARY_PRESETS),
        ),
        Option("defense", "none", "what happens to the source data first (parties.defenses)", by_variant=True, choices=DEFENSES),
        Option("ldp_noise", 0.1, "LDP noise level", by_variant=True),
        Option("blurme_k", 5, "BlurMe dummy items per user", by_variant=True),
        Option("mode", "transfer", "transfer, or the target alone", by_variant=True, choices=("transfer", "target-only")),
    )
    grid = Grid(
        axes=(Axis("lambda", "lam", (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)), Axis("adversary", "adversary", ("strong",), parse=str)),
        params={"defense": "none"},
        options={"defense": "none"},
        extras=(
            Variant("ldp", {"lambda": 0.0, "defense": "ldp", "noise": 0.1}, {"lam": 0.0, "defense": "ldp", "ldp_noise": 0.1}),
            Variant(
                "ldp-items", {"lambda": 0.0, "defense": "ldp-items", "noise": 0.1}, {"lam": 0.0, "defense": "ldp-items", "ldp_noise": 0.1}
            ),
            Variant("blurme", {"lambda": 0.0, "defense": "blurme", "k": 5}, {"lam": 0.0, "defense": "blurme", "blurme_k": 5}),
            Variant(
                "blurme-server",
                {"lambda": 0.0, "defense": "blurme-server", "k": 5},
                {"lam": 0.0, "defense": "blurme-server", "blurme_k": 5},
            ),
            Variant("target-only", {"transfer": False}, {"mode": "target-only"}),
        ),
    )
    reference = "lambda=0"
    # Every release the receiver holds: each epoch's validation release, what each epoch's
    # training batches showed of each user, and the final release.
    attacks = (AttributeAttack(kinds=(PRIVNET_REPRESENTATION_KIND, PRIVNET_BATCH_KIND), field="x_trans", final=PRIVNET_RELEASED),)
    retained_kinds = (PRIVNET_REPRESENTATION_KIND,)
    folded_kinds = (PRIVNET_BATCH_KIND,)

    def relative_cost(self, options: Mapping[str, Any]) -> float:
        if options.get("mode") == "target-only":
            return 0.2  # the target's network alone: no transfer and no release to attack
        # Each simulated-attacker update (none at lambda = 0: models.privnet.steps.attacker_updates)
        # costs about 15% of a recommender step (measured on ML-100K: lambda=1 with the strong
        # preset's 5 updates takes ~1.8x as long as lambda=0).
        return 1.0 + 0.15 * adversary_steps(options) if float(options.get("lam", 0.0)) else 1.0

    def build_party(self, name: str, world: World, channel: ChannelConfig, options: dict[str, Any]) -> Party:
        from parties.defenses import apply_defense  # torch and scikit-learn: only where a party runs
        from parties.privnet import PrivNetSourceParty, PrivNetTargetParty

        if name == "target":
            return PrivNetTargetParty(channel, world.split.target, options)
        public = world.attributes.restricted_to(world.public)
        # User-side defenses run on the users' devices before their data reaches the source:
        # the source party is built with the defended data only (and never with private genders).
        data, info = apply_defense(
            options.get("defense", "none"),
            world.split.source,
            public=public,
            own_gender=world.attributes.gender,
            noise=float(options.get("ldp_noise", 0.1)),
            k=int(options.get("blurme_k", 5)),
            seed=int(options["seed"]),
        )
        return PrivNetSourceParty(channel, data, public, options, defense_info=info)

    def drive(self, relay: Relay, variant: Variant) -> Outcome:
        if variant.options.get("mode") == "target-only":
            return Outcome.from_report(relay.request_one("target", "fit_alone", type="report"))
        for epoch in range(1, MAX_EPOCHS_GUARD):
            replies = relay.request("target", "epoch", epoch=epoch, round=epoch)
            report = next((m for m in replies if m.type == "report" and m.meta.get("op") == "epoch"), None)
            if report is None:
                raise RunError(f"target sent no epoch report for epoch {epoch}")
            if report.meta["improved"]:
                relay.request_one("source", "checkpoint", round=epoch)
            if report.meta["stop"]:
                break
        restored = relay.request_one("source", "restore")
        final = relay.request_one("target", "test", type="report")
        return Outcome.from_report(final, source=dict(restored.meta))
