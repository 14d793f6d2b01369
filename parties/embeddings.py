"""The `embeddings` scenario: the undefended reference transfer (EMCDR-style).

Flow (every arrow is an envelope):
  coordinator -> source  control{op: train}        source trains BPR-MF on its domain
  source -> coordinator  ack{op: train, valid: ...}
  coordinator -> source  control{op: release}      source streams its user embeddings
  source -> target       artifact{kind: user_embeddings} x chunks
  target -> coordinator  ack{op: absorb}
  coordinator -> target  control{op: fit, mode}    target trains with/without the features
  target -> coordinator  report{utility, per-user metrics}
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from models.bprmf import train_bprmf
from models.metrics import popularity_scores
from protocol import Message

from .base import artifact_chunks
from .names import USER_EMBEDDINGS
from .roles import SourceParty, TargetParty

ARTIFACT = USER_EMBEDDINGS
FIT_MODES = ("transfer", "target-only", "popularity")


def bpr_options(config: dict) -> dict:
    """The BPR-MF hyperparameters a party takes from its config (same for both roles)."""
    keys = ("dim", "epochs", "lr", "weight_decay", "batch_size", "patience", "optimizer")
    return {k: config[k] for k in keys if k in config}


class EmbeddingsSource(SourceParty):
    model = None

    def op_train(self, msg: Message) -> Iterable[Message]:
        self.model, report = train_bprmf(self.data, seed=self.seed, **bpr_options(self.config))
        return [self.reply(msg, valid=report.best_valid, epochs=report.epochs_run)]

    def op_release(self, msg: Message) -> Iterable[Message]:
        if self.model is None:
            raise RuntimeError("release before train: send control{op: train} first")
        vectors = self.model.user_vectors().astype(np.float32)
        users = np.arange(self.data.n_users, dtype=np.int64)
        chunks = artifact_chunks(
            sender=self.name,
            receiver=str(msg.meta.get("to", "target")),
            name=ARTIFACT,
            kind=ARTIFACT,
            user_ids=users,
            arrays={"embedding": vectors},
            meta={"defense": "none"},
            round=msg.round,
        )
        return [*chunks, self.reply(msg, chunks=len(chunks))]


class EmbeddingsTarget(TargetParty):
    def op_fit(self, msg: Message) -> Iterable[Message]:
        mode = str(msg.meta.get("mode", "transfer"))
        if mode not in FIT_MODES:
            raise ValueError(f"unknown fit mode {mode!r}; valid: {', '.join(FIT_MODES)}")
        users, candidates = self.data.candidates("test")
        if mode == "popularity":
            scores = popularity_scores(self.data.item_popularity, candidates)
            return [self.utility_report(msg, scores, {"mode": mode})]
        features = self.per_user_artifact(ARTIFACT, "embedding") if mode == "transfer" else None
        model, report = train_bprmf(self.data, user_features=features, seed=self.seed, **bpr_options(self.config))
        scores = model.score(users, candidates)
        return [self.utility_report(msg, scores, {"mode": mode, "valid": report.best_valid, "epochs": report.epochs_run})]
