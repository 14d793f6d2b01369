"""The `adversarial-bpr` scenario's parties: a source that trains privacy-adversarial BPR-MF
user vectors (models/adversarial_bpr.py) and releases them, and a target that uses them
exactly as the `embeddings` target uses plain embeddings.

The source holds its domain and the public users' attributes only (label -1 for everyone
else): its readouts for gender and the 7 age brackets learn from public users, and the
gradient reversal pushes only their vectors. It reports its own utility, the paper's
accuracy@10 over the full catalogue, with the training acknowledgement; the target reports
HR/NDCG@10 with 99 sampled negatives, as in every scenario.

Flow (every row is one or more envelopes; PROTOCOL.md §14 style):

| # | from → to | type (`meta.op`/`kind`) | arrays | why |
|---|---|---|---|---|
| 1 | coordinator → source | control (`train`) | – | train BPR-MF with the reversed-gradient readouts (λ, size) |
| 2 | source → coordinator | ack (`train`) | – | validation figures, epochs, the source's test `accuracy@10` (full catalogue) and `HR@10` (99 negatives) |
| 3 | coordinator → source | control (`release`, `to`) | – | release the user vectors to the target |
| 4 | source → target | artifact (`adversarial_user_vectors`) | `user_ids` int64 [n], `embedding` float32 [n, size] | the transferred artifact (every user) |
| 5 | target → coordinator | ack (`absorb`) | – | the artifact is complete |
| 6 | source → coordinator | ack (`release`) | – | chunks sent |
| 7 | coordinator → target | control (`fit`, `mode`) | – | train the target's BPR-MF with the vectors as features (or target-only) |
| 8 | target → coordinator | report (`fit`) | per-user `HR@10`, `NDCG@10`, `MRR@10`, `AUC`, `users` | utility on the target's test users |

The target-only variant sends rows 7-8 only. Nothing else crosses: the readouts, the item
vectors and the attributes stay at the source.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from models.adversarial_bpr import AdversarialBPR, catalogue_hits, train_adversarial_bpr
from models.bprmf import train_bprmf
from models.data import UserAttributes
from models.metrics import ranking_metrics
from protocol import Message

from .base import artifact_chunks
from .names import ADVERSARIAL_USER_VECTORS
from .roles import SourceParty, TargetParty

ARTIFACT = ADVERSARIAL_USER_VECTORS
FIELD = "embedding"
HIDDEN = ("gender", "age_bracket")  # the paper's readouts: binary gender, 7 age brackets
FIT_MODES = ("transfer", "target-only")
SHARED_KEYS = ("epochs", "lr", "weight_decay", "batch_size", "patience")  # both parties' BPR-MF


class AdversarialBPRSource(SourceParty):
    model: AdversarialBPR | None = None

    def op_train(self, msg: Message) -> Iterable[Message]:
        known = self.attributes.as_dict()
        missing = [name for name in HIDDEN if name not in known]
        if missing:
            raise ValueError(f"the source holds no {', '.join(missing)} labels to train its readouts on")
        options = {k: self.config[k] for k in SHARED_KEYS if k in self.config}
        adv_lr = float(self.config.get("adv_lr", 0.0)) or None
        self.model, report = train_adversarial_bpr(
            self.data,
            {name: known[name] for name in HIDDEN},
            {name: UserAttributes.N_CLASSES[name] for name in HIDDEN},
            lam=float(self.config["lam"]),
            dim=int(self.config["dim"]),
            adv_lr=adv_lr,
            seed=self.seed,
            **options,
        )
        users, hits = catalogue_hits(self.model.recommender, self.data, "test", k=10)
        sampled = ranking_metrics(self.model.recommender.score(*self.data.candidates("test")), 10)
        return [
            self.reply(
                msg,
                valid=report.best_valid,
                epochs=report.epochs_run,
                best_epoch=report.best_epoch,
                readout_cross_entropy=report.readout_history[report.best_epoch - 1] if report.best_epoch else {},
                test={
                    "accuracy@10": float(hits.mean()),
                    "HR@10": sampled["HR@10"],
                    "NDCG@10": sampled["NDCG@10"],
                    "users": int(users.size),
                },
            )
        ]

    def op_release(self, msg: Message) -> Iterable[Message]:
        if self.model is None:
            raise RuntimeError("release before train: send control{op: train} first")
        vectors = self.model.user_vectors().astype(np.float32)
        chunks = artifact_chunks(
            sender=self.name,
            receiver=str(msg.meta.get("to", "target")),
            name=ARTIFACT,
            kind=ARTIFACT,
            user_ids=np.arange(self.data.n_users, dtype=np.int64),
            arrays={FIELD: vectors},
            meta={"defense": "privacy-adversarial"},
            round=msg.round,
        )
        return [*chunks, self.reply(msg, chunks=len(chunks))]


def target_options(config: dict[str, Any]) -> dict[str, Any]:
    """The target's BPR-MF hyperparameters: the `embeddings` target's, its size `target_dim`."""
    return {"dim": int(config["target_dim"]), **{k: config[k] for k in SHARED_KEYS if k in config}}


class AdversarialBPRTarget(TargetParty):
    def op_fit(self, msg: Message) -> Iterable[Message]:
        mode = str(msg.meta.get("mode", "transfer"))
        if mode not in FIT_MODES:
            raise ValueError(f"unknown fit mode {mode!r}; valid: {', '.join(FIT_MODES)}")
        features = self.per_user_artifact(ARTIFACT, FIELD) if mode == "transfer" else None
        model, report = train_bprmf(self.data, user_features=features, seed=self.seed, **target_options(self.config))
        users, candidates = self.data.candidates("test")
        scores = model.score(users, candidates)
        return [self.utility_report(msg, scores, {"mode": mode, "valid": report.best_valid, "epochs": report.epochs_run})]
