"""`pfcdr`: prototypes by model inversion, a prototype bridge and top-k matching for cold-start
users (PFCDR), against EMCDR's transfer of user embeddings and the target alone.

Data (sim.splits.cold_start): explicit ratings of two domains cut from one dataset by the
run's split (`--split genre`: source = Comedy, Romance, Drama, Musical, Children's, Animation;
target = Action, Adventure, Thriller, Crime, Sci-Fi, Horror, War, Western, Mystery, Film-Noir,
Fantasy; an item belongs to the group of its first listed genre in either). A fraction beta of
the overlapping users are cold-start test users (all their target ratings held out), a
validation share of the rest is held out the same way to choose the bridge epoch and k.

Variants: `pfcdr,beta=B` and `emcdr,beta=B` (the grid: method x beta), and `target-only,beta=B`
(item means of the target's ratings) for each beta, the reference each transfer at the same
beta is paired with. Message flow: parties/pfcdr.py.

Attacks on what the target receives (the curious receiver; the wire too on a plaintext
channel), on the overlapping users the world's population holds (users with a rating >= 4 in
both domains, all of them released; `features` checks it): attribute inference (gender, age
group) on the prototypes or the embeddings, and reconstruction of the source's MF user
embedding. The reconstruction attacker knows the source embeddings of the public users (an
insider or a past breach: an assumption, stated) and is scored on the private users;
`metrics.direct_cosine` is the cosine between the received vector and the true embedding
itself, the geometry Theorem 4.1 speaks about.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from parties.names import PFCDR_RELEASED, USER_EMBEDDINGS, USER_PROTOTYPES

from .base import AttributeAttack, Axis, Grid, Option, Outcome, RatingUtility, ReconstructionAttack, Scenario, Variant

if TYPE_CHECKING:
    from attacks.artifact import Artifact
    from parties.base import ChannelConfig, Party

    from ..coordinator import Relay
    from ..world import World

METHODS = ("pfcdr", "emcdr")
BETAS = (0.2, 0.5, 0.8)
QUICK_BETAS = (0.2,)
FIELD = "vector"
_SECRETS: OrderedDict[tuple[int, int], tuple[Any, np.ndarray]] = OrderedDict()


def released_vectors(artifact: Artifact, world: World) -> np.ndarray:
    """The release as a dense [n_users, d] matrix; every user of the attacked population must
    be in it (the population is users with a positive in both domains, a subset of the users
    with any rating in both, whose vectors are released)."""
    values = np.asarray(artifact.arrays[FIELD], dtype=np.float32)
    dense = np.zeros((world.dataset.n_users, values.shape[1]), dtype=np.float32)
    dense[artifact.user_ids] = values
    missing = np.setdiff1d(world.population, artifact.user_ids)
    if missing.size:
        raise ValueError(f"{missing.size} users of the attacked population were not released (e.g. {missing[:5].tolist()})")
    return dense


def source_user_embeddings(world: World, seed: int) -> np.ndarray:
    """The reconstruction attack's secret: the source MF's user embeddings [n_users, d],
    recomputed by the source's own code path with the run's seed, once per (world, seed)."""
    from parties.pfcdr import source_mf  # torch: only where the evaluation runs

    from ..splits.cold_start import domain_ratings_of, source_data

    key = (id(world), int(seed))
    hit = _SECRETS.get(key)
    if hit is not None and hit[0] is world:
        return hit[1]
    model, _ = source_mf(source_data(domain_ratings_of(world)), int(seed))
    vectors = model.user_vectors()
    _SECRETS[key] = (world, vectors)  # holds the world, so its id stays its own while cached
    while len(_SECRETS) > 4:
        _SECRETS.popitem(last=False)
    return vectors


def _variant(method: str, beta: float) -> Variant:
    return Variant(f"{method},beta={beta:g}", {"method": method, "beta": beta}, {"method": method, "beta": beta})


class PFCDRScenario(Scenario):
    name = "pfcdr"
    title = "PFCDR: inverted prototypes and top-k matching for cold-start users, against EMCDR"
    paper = "PFCDR (papers/002)"
    options = (
        Option(
            "method", "pfcdr", "what crosses: prototypes, user embeddings, or nothing", by_variant=True, choices=(*METHODS, "target-only")
        ),
        Option("beta", 0.2, "cold-start test users as a fraction of the overlapping users", by_variant=True),
        Option("k", 0.0, "top-k users as a fraction of the target's trained users (0: chosen on validation users from a grid)"),
        Option("valid_fraction", 0.2, "validation users as a fraction of the overlapping users that are not cold"),
        Option("iterations", 300, "model-inversion iterations per batch of users"),
        Option("inversion_lr", 1e-4, "Adam learning rate of the inversion (cosine schedule)"),
        Option("inversion_weight_decay", 1e-4, "Adam weight decay (L2) on the inverted item weights"),
        Option("warmup", 10, "linear warm-up iterations before the cosine decay (the public code's 10)"),
        Option("inversion_batch", 200, "users inverted together"),
        Option("target_rating", 5.0, "the rating the inversion conditions on (and top-k matches to)"),
        Option("bridge_epochs", 10, "bridge training epochs; the epoch used is chosen on validation users"),
        Option("bridge_lr", 5e-3, "Adam learning rate of the bridge"),
        Option("bridge_batch", 128, "users per bridge step"),
    )
    grid = Grid(axes=(Axis("method", "method", METHODS, parse=str), Axis("beta", "beta", BETAS)))
    reference = "target-only"  # at the same beta: see reference_of
    utility = RatingUtility(reference="target-only")
    attacks = (
        AttributeAttack(kinds=(USER_PROTOTYPES, USER_EMBEDDINGS), field=FIELD, final=PFCDR_RELEASED, features=released_vectors),
        ReconstructionAttack(
            kinds=(USER_PROTOTYPES, USER_EMBEDDINGS),
            field=FIELD,
            final=PFCDR_RELEASED,
            secret=source_user_embeddings,
            features=released_vectors,
        ),
    )

    def variants(self, quick: bool = False, grid: Mapping[str, Sequence[Any]] | None = None) -> list[Variant]:
        """method x beta, then target-only at each beta (named `<method>,beta=<beta>`)."""
        values = dict(grid or {})
        self.grid.variants(values)  # rejects unknown axes
        methods = [str(m) for m in values.get("method", METHODS)]
        unknown = sorted(set(methods) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown method(s) {', '.join(unknown)}; valid: {', '.join(METHODS)}")
        betas = [float(b) for b in values.get("beta", QUICK_BETAS if quick else BETAS)]
        bad = [b for b in betas if not 0.0 < b < 1.0]
        if bad:
            raise ValueError(f"beta must be in (0, 1), got {bad}")
        return [_variant(m, b) for b in betas for m in methods] + [_variant("target-only", b) for b in betas]

    def reference_of(self, variant: Variant) -> str | None:
        return f"target-only,beta={float(variant.options['beta']):g}"

    def build_party(self, name: str, world: World, channel: ChannelConfig, options: dict[str, Any]) -> Party:
        from parties.pfcdr import PFCDRSource, PFCDRTarget  # torch: only where a party runs

        from ..splits.cold_start import cold_start_of

        split = cold_start_of(
            world, seed=int(options["seed"]), beta=float(options["beta"]), valid_fraction=float(options["valid_fraction"])
        )
        if name == "source":
            return PFCDRSource(channel, split.source, split.overlap, options)
        return PFCDRTarget(channel, split.target, warm=split.warm, valid_users=split.valid, cold=split.cold, config=options)

    def drive(self, relay: Relay, variant: Variant) -> Outcome:
        method = variant.options["method"]
        details: dict[str, Any] = {}
        if method != "target-only":
            trained = relay.request_one("source", "train")
            details["source"] = {k: v for k, v in trained.meta.items() if k != "op"}
        target = relay.request_one("target", "train")
        details["target"] = {k: v for k, v in target.meta.items() if k != "op"}
        if method != "target-only":
            released = relay.request("source", "release", to="target")
            details["released_users"] = sum(int(m.meta.get("users", 0)) for m in released if m.meta.get("op") == "absorb")
            details["attacked_users"] = (
                "the world's population (users with a rating >= 4 in both domains), all of them among the released "
                "overlapping users (any rating in both domains); overlapping users without a positive in one domain are "
                "released but not attacked"
            )
        report = relay.request_one("target", "fit", type="report")
        return Outcome.from_report(report, **details)
