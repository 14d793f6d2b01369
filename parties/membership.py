"""The `membership` scenario's parties: a recommendation service (the attacked party) and a
requester that asks it for top-k lists and is the curious receiver.

The service holds its members' histories (its training data), under the fold-in policy the
histories of the non-members it serves (used at serving time only, never trained on), and,
as an evaluation instrument only, each served user's held-out next interaction (to score
HR@100). The requester holds the list of users it asks about (members and non-members of the
service, shuffled); it never learns who is a member, except by attacking the lists.

Flow (every arrow is one or more envelopes; see protocol/PROTOCOL.md §14):

| # | from -> to | type (`meta.op` / `kind`) | arrays | why |
|---|---|---|---|---|
| 1 | coordinator -> recommender | control (`train`) | - | the service trains its algorithm on its members |
| 2 | recommender -> coordinator | ack (`train`) | - | counts and training figures (no per-user data) |
| 3 | coordinator -> requester | control (`ask`) | - | ask the service about the requester's users |
| 4 | requester -> recommender | request (`recommend`) | `user_ids` int64 [n] | the users asked about, members and non-members shuffled |
| 5 | recommender -> requester | artifact (`recommendation_lists`) | `user_ids` int64 [n], `items` int64 [n, k] | each user's top-k list, best first (-1 pads a short list): the artifact attacked |
| 6 | requester -> coordinator | ack (`absorb`) | - | the lists are complete; the set-up's counts |
| 7 | coordinator -> recommender | control (`utility`) | - | score what was served |
| 8 | recommender -> coordinator | report (`utility`) | `users`, `HR@100` per user | HR@100 of members and of non-members (aggregates; no member flag) |

A wire eavesdropper sees all of it; on the secure suite only header fields and sizes, which
are the same for every user (fixed-length lists, one artifact).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from models.recommenders import ListService, hits
from protocol import Message

from .base import COORDINATOR, ArtifactAssembler, ChannelConfig, Party, PartyError, artifact_chunks
from .names import RECOMMENDATION_LISTS

RECOMMENDER = "recommender"
REQUESTER = "requester"
K = 100  # list length (paper 004)
UTILITY_MEMBERS = f"HR@{K} members"
UTILITY_NONMEMBERS = f"HR@{K} non-members"
UTILITY_ALL = f"HR@{K} all served"


class RecommenderParty(Party):
    """The attacked service: trains on its members, serves lists by its non-member policy."""

    def __init__(
        self,
        channel: ChannelConfig,
        *,
        n_items: int,
        members: Mapping[int, np.ndarray],
        nonmember_histories: Mapping[int, np.ndarray],
        held_out: Mapping[int, int],
        options: Mapping[str, Any],
        name: str = RECOMMENDER,
    ):
        super().__init__(name, channel)
        self.options = dict(options)
        self.n_items = int(n_items)
        self.members = {int(u): np.asarray(h, dtype=np.int64) for u, h in members.items()}
        self.nonmember_histories = {int(u): np.asarray(h, dtype=np.int64) for u, h in nonmember_histories.items()}
        self.held_out = {int(u): int(i) for u, i in held_out.items()}  # evaluation only
        self.service = ListService(
            str(self.options["target"]),
            str(self.options["policy"]),
            self.options,
            int(self.options.get("seed", 0)),
            k=K,
            ratio=float(self.options.get("pr_ratio", 0.1)),
        )
        self.trained = False
        self.served: tuple[np.ndarray, np.ndarray] | None = None

    def op_train(self, msg: Message) -> Iterable[Message]:
        info = self.service.train(self.members, self.n_items)
        self.trained = True
        return [self.reply(msg, policy=self.service.policy, **info)]

    def on_request(self, msg: Message) -> Iterable[Message]:
        if msg.meta.get("op") != "recommend":
            raise PartyError(self.name, str(msg.meta.get("op")), "the service answers request{op: recommend} only")
        if not self.trained:
            raise PartyError(self.name, "recommend", "asked for lists before training: send control{op: train} first")
        users = np.asarray(msg.arrays["user_ids"], dtype=np.int64).reshape(-1)
        lists = self.service.serve(users, self.nonmember_histories if self.service.policy == "fold-in" else None)
        self.served = (users, lists)
        return artifact_chunks(
            sender=self.name,
            receiver=msg.sender,
            name=RECOMMENDATION_LISTS,
            kind=RECOMMENDATION_LISTS,
            user_ids=users,
            arrays={"items": lists},
            meta={"k": K},
            round=msg.round,
        )

    def op_utility(self, msg: Message) -> Iterable[Message]:
        if self.served is None:
            raise PartyError(self.name, "utility", "nothing was served yet")
        users, lists = self.served
        held = np.array([self.held_out.get(int(u), -1) for u in users.tolist()], dtype=np.int64)
        hit = hits(lists, held)
        member = self.service.is_member(users)
        scored = held >= 0

        groups = {UTILITY_MEMBERS: member, UTILITY_NONMEMBERS: ~member, UTILITY_ALL: np.ones_like(member)}
        utility = {name: float(np.mean(hit[rows & scored])) for name, rows in groups.items() if (rows & scored).any()}
        report = Message(
            type="report",
            sender=self.name,
            receiver=COORDINATOR,
            # No per-user member flag: the evaluation knows the split, and on a plaintext channel
            # the wire would read the secret here (aggregates per group only, in meta).
            arrays={"users": users, f"HR@{K}": hit},
            meta={"op": "utility", "utility": utility, "served": {"members": int(member.sum()), "nonmembers": int((~member).sum())}},
            reply_to=msg.seq,
            round=msg.round,
        )
        return [report]


class RequesterParty(Party):
    """The requester: asks about its users, keeps the lists (the curious receiver)."""

    def __init__(self, channel: ChannelConfig, *, users: np.ndarray, setup: Mapping[str, Any], name: str = REQUESTER):
        super().__init__(name, channel)
        self.users = np.asarray(users, dtype=np.int64)
        self.setup = dict(setup)
        self.assembler = ArtifactAssembler()
        self.lists: np.ndarray | None = None

    def op_ask(self, msg: Message) -> Iterable[Message]:
        to = str(msg.meta.get("to", RECOMMENDER))
        return [
            Message(
                type="request", sender=self.name, receiver=to, arrays={"user_ids": self.users}, meta={"op": "recommend"}, round=msg.round
            )
        ]

    def on_artifact(self, msg: Message) -> Iterable[Message]:
        done = self.assembler.add(msg)
        if done is None:
            return []
        name, arrays, _ = done
        self.lists = arrays["items"]
        meta = {
            "op": "absorb",
            "artifact": name,
            "users": int(arrays["user_ids"].shape[0]),
            "k": int(arrays["items"].shape[1]),
            "setup": self.setup,
        }
        return [Message(type="ack", sender=self.name, receiver=COORDINATOR, meta=meta, round=msg.round)]
