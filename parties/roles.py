"""The source and target roles: each owns its domain's data; scenarios add behaviour."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from models.data import RankingData, UserAttributes
from models.metrics import per_user_ranking_metrics, ranking_metrics
from protocol import Message

from .base import COORDINATOR, ArtifactAssembler, ChannelConfig, Party, PartyError


class SourceParty(Party):
    """Owns the source domain and the attributes of the users who made them public.

    `attributes` must already be restricted to public users (label -1 elsewhere): the source
    never holds what the private users did not share.
    """

    def __init__(
        self,
        channel: ChannelConfig,
        data: RankingData,
        attributes: UserAttributes,
        config: dict[str, Any],
        name: str = "source",
    ):
        super().__init__(name, channel)
        self.data = data
        self.attributes = attributes
        self.config = dict(config)
        self.seed = int(self.config.get("seed", 0))


class TargetParty(Party):
    """Owns the target domain; absorbs artifacts and reports its utility to the coordinator."""

    def __init__(self, channel: ChannelConfig, data: RankingData, config: dict[str, Any], name: str = "target"):
        super().__init__(name, channel)
        self.data = data
        self.config = dict(config)
        self.seed = int(self.config.get("seed", 0))
        self.assembler = ArtifactAssembler()
        self.artifacts: dict[str, tuple[dict[str, np.ndarray], dict]] = {}

    def on_artifact(self, msg: Message) -> Iterable[Message]:
        done = self.assembler.add(msg)
        if done is None:
            return []
        name, arrays, meta = done
        self.artifacts[name] = (arrays, meta)
        return self.absorbed(name, arrays, meta, msg)

    def absorbed(self, name: str, arrays: dict[str, np.ndarray], meta: dict, last: Message) -> Iterable[Message]:
        """Called once an artifact is complete; by default tells the coordinator."""
        return [
            Message(
                type="ack",
                sender=self.name,
                receiver=COORDINATOR,
                meta={"op": "absorb", "artifact": name, "users": int(arrays["user_ids"].shape[0])},
                round=last.round,
            )
        ]

    def per_user_artifact(self, name: str, field: str) -> np.ndarray:
        """The artifact's `field` as a dense [n_users, ...] matrix (zeros for absent users)."""
        if name not in self.artifacts:
            raise PartyError(self.name, "fit", f"artifact {name!r} was never received; got {sorted(self.artifacts)}")
        arrays, _ = self.artifacts[name]
        values = arrays[field]
        dense = np.zeros((self.data.n_users, *values.shape[1:]), dtype=np.float32)
        dense[arrays["user_ids"]] = values
        return dense

    def utility_report(self, request: Message, scores: np.ndarray, extra: dict[str, Any] | None = None) -> Message:
        """A `report` with mean ranking metrics (meta) and per-user values (arrays, for CIs)."""
        users, _ = self.data.candidates("test")
        per_user = per_user_ranking_metrics(scores)
        arrays = {"users": users.astype(np.int64)}
        arrays.update({k: v.astype(np.float64) for k, v in per_user.items()})
        return Message(
            type="report",
            sender=self.name,
            receiver=COORDINATOR,
            arrays=arrays,
            meta={"op": request.meta.get("op"), "utility": ranking_metrics(scores), **(extra or {})},
            reply_to=request.seq,
            round=request.round,
        )
