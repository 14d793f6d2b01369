"""`adversarial-bpr`: privacy-adversarial BPR-MF user vectors (gradient reversal), λ × size.

The source trains BPR-MF while a linear readout per attribute (gender; the 7 MovieLens-1M age
brackets) learns to predict it from the user vector; the readouts' gradient reaches the user
vectors reversed and scaled by λ (paper 001, §3.1; models/adversarial_bpr.py). The readouts
learn from public users only. The source releases every user's vector to the target, which
uses them as the `embeddings` target uses plain embeddings, so the two scenarios compare.

Utility: the source's accuracy@10 (each user's last item ranked against every item of the
source domain the user never interacted with, ties against the model: the paper's Table 4) as
`source accuracy@10`, next to the target's HR/NDCG@10 with 99 sampled negatives. Each grid
point is compared with λ = 0 at the same size.

Attacks: the paper's own check (a readout of the training readout's form refitted post hoc),
its Table 1 battery (linear SVMs with C = 0.1, 1, 10, an RBF SVM, a decision tree, a random
forest, gradient boosting) and cdrsim's battery (lr, mlp, gb; the best of them by CV is
cdrsim's best-of attacker); the reported worst case is the best of all of them by CV on the
public users. Every attacker trains on public users and is scored on private users; per
family, `accuracy_argmax` is the paper's figure (read it next to the baseline's, the majority
class's share), with ROC-AUC and balanced accuracy beside it.

Message flow: parties/adversarial_bpr.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from parties.names import ADVERSARIAL_USER_VECTORS

from .base import AttributeAttack, Axis, Grid, Option, Outcome, RankingUtility, Scenario, Variant

if TYPE_CHECKING:
    from parties.base import ChannelConfig, Party

    from ..coordinator import Relay
    from ..world import World

LAMBDAS = (0.0, 0.01, 0.1, 1.0, 10.0)
SIZES = (10, 20, 50)
QUICK_GRID = {"lambda": (0.0, 1.0), "size": (10,)}
# attacks.attackers.PAPER_BATTERY then ATTACKERS, spelled out here so that reading this
# declaration imports no scikit-learn (a test checks they agree).
PAPER_BATTERY = ("readout", "svm-linear-C0.1", "svm-linear-C1", "svm-linear-C10", "svm-rbf", "tree", "forest", "gradient-boosting")
CDRSIM_BATTERY = ("lr", "mlp", "gb")
SOURCE_UTILITY = "source accuracy@10"


def point_name(lam: float, size: int) -> str:
    return f"lambda={lam:g},size={size}"


class AdversarialBPRScenario(Scenario):
    name = "adversarial-bpr"
    title = "Privacy-adversarial BPR: user vectors trained against attribute readouts (gradient reversal)"
    paper = "Privacy-adversarial user representations in recommender systems (papers/001)"
    options = (
        Option("epochs", 40, "maximum training epochs of both parties' BPR-MF (early stopping on validation HR@10)", quick=15),
        Option("patience", 5, "epochs without improvement before stopping", quick=3),
        Option("lr", 5e-3, "Adam learning rate of both parties' BPR-MF"),
        Option("adv_lr", 0.0, "Adam learning rate of the source's readouts (0: the same as lr)"),
        Option("weight_decay", 1e-2, "L2 coefficient on the embeddings and biases in a batch"),
        Option("batch_size", 1024, "training pairs per step"),
        Option("target_dim", 64, "embedding size of the target's BPR-MF (the embeddings scenario's)", quick=32),
        Option("dim", 10, "size of the source's user and item vectors", by_variant=True),
        Option("lam", 0.0, "adversarial weight lambda of the gradient reversal", by_variant=True),
        Option("mode", "transfer", "transfer, or the target alone", by_variant=True, choices=("transfer", "target-only")),
    )
    grid = Grid(
        axes=(Axis("lambda", "lam", LAMBDAS), Axis("size", "dim", SIZES, parse=int)),
        options={"mode": "transfer"},
        extras=(Variant("target-only", {}, {"mode": "target-only"}),),  # no λ, no size: outside the grid
    )
    reference = "lambda=0 at the same size"
    utility = RankingUtility(headline=SOURCE_UTILITY)
    attacks = (
        AttributeAttack(
            kinds=(ADVERSARIAL_USER_VECTORS,),
            field="embedding",
            final=ADVERSARIAL_USER_VECTORS,
            attributes=("gender", "age_bracket"),
            attackers=PAPER_BATTERY + CDRSIM_BATTERY,
        ),
    )

    def variants(self, quick: bool = False, grid: Mapping[str, Sequence[Any]] | None = None) -> list[Variant]:
        """The grid's points, each named by both axes (`lambda=0.1,size=20`) so that its
        reference is found by name, then target-only. --quick: λ ∈ {0, 1} at size 10."""
        values = {**(QUICK_GRID if quick else {}), **(grid or {})}
        out = []
        for v in self.grid.variants(values):
            if "lambda" in v.params:
                v = replace(v, name=point_name(v.params["lambda"], v.params["size"]))
            out.append(v)
        return out

    def reference_of(self, variant: Variant) -> str | None:
        if "lambda" not in variant.params:
            return None
        return point_name(0.0, variant.params["size"])

    def build_party(self, name: str, world: World, channel: ChannelConfig, options: dict[str, Any]) -> Party:
        from parties.adversarial_bpr import AdversarialBPRSource, AdversarialBPRTarget  # torch: only where a party runs

        if name == "source":
            return AdversarialBPRSource(channel, world.split.source, world.attributes.restricted_to(world.public), options)
        return AdversarialBPRTarget(channel, world.split.target, options)

    def drive(self, relay: Relay, variant: Variant) -> Outcome:
        mode = variant.options.get("mode", "transfer")
        source: dict[str, Any] = {}
        if mode == "transfer":
            trained = relay.request_one("source", "train")
            source = {k: trained.meta.get(k) for k in ("valid", "epochs", "best_epoch", "readout_cross_entropy", "test")}
            relay.request("source", "release", to="target")
        outcome = Outcome.from_report(relay.request_one("target", "fit", type="report", mode=mode), source=source)
        if source:
            outcome.utility[SOURCE_UTILITY] = float(source["test"]["accuracy@10"])
            outcome.utility["source HR@10"] = float(source["test"]["HR@10"])
        return outcome
