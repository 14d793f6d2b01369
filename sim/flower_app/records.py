"""What the coordinator (ServerApp) and a party's node (ClientApp) say to each other.

Flower records are only the carrier: every protocol envelope travels as one `bytes` value, the
exact bytes the in-process runtime hands to a party. Three message types, all `query.*` so
that they route to `@app.query(...)` handlers:

- `query.hello`: role handshake. The node answers with the role its node config names (if
  any), its partition id (simulation) and its pid.
- `query.deliver`: a batch of envelopes for one party, in wire order, plus the JSON-able spec
  that builds the party and a generation id (one per variant run). The reply carries, per
  envelope, what the party put on the wire or the protocol's rejection, and the plaintext
  receiver-view envelopes the party accepted since its last reply (instrumentation for the
  curious-receiver threat model, piggybacked to save a round trip).

This module is imported by every ClientApp process, so it stays light (no torch, no sklearn).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ConfigRecord, RecordDict

WIRE = "cdrsim-flower/1"  # version of this carrier format, checked on both sides
HELLO = "query.hello"
DELIVER = "query.deliver"
REQUEST_KEY = "cdrsim.request"
REPLY_KEY = "cdrsim.reply"
ROLE_KEY = "role"  # node config key that pins a SuperNode to a party
PARTITION_KEY = "partition-id"  # node config key the simulation engine sets


class CarrierError(ValueError):
    """A Flower message did not carry what this format expects (wrong app or version)."""


def _record(content: RecordDict, key: str) -> ConfigRecord:
    try:
        record = content.config_records[key]
    except KeyError:
        raise CarrierError(
            f"the Flower message has no ConfigRecord {key!r} (records: {sorted(content.config_records)}); was it sent by another app?"
        ) from None
    if record.get("wire") != WIRE:
        raise CarrierError(f"carrier format {record.get('wire')!r} is not {WIRE!r}: coordinator and node run different cdrsim versions")
    return record


# ----------------------------------------------------------------------------- hello
def hello_request() -> RecordDict:
    return RecordDict({REQUEST_KEY: ConfigRecord({"wire": WIRE})})


@dataclass(frozen=True)
class Hello:
    role: str  # "" when the node config does not pin a role
    partition: int  # -1 when the node config has no partition id
    pid: int

    def to_content(self) -> RecordDict:
        return RecordDict({REPLY_KEY: ConfigRecord({"wire": WIRE, "role": self.role, "partition": self.partition, "pid": self.pid})})

    @classmethod
    def from_content(cls, content: RecordDict) -> Hello:
        r = _record(content, REPLY_KEY)
        return cls(role=str(r["role"]), partition=int(r["partition"]), pid=int(r["pid"]))


# ----------------------------------------------------------------------------- deliver
@dataclass(frozen=True)
class DeliverRequest:
    generation: str  # a fresh id per runtime.start(): the node starts the party anew
    party: str
    factory: str
    config: dict[str, Any]
    envelopes: list[bytes]
    torch_threads: int = 0  # 0 = leave the process default

    def to_content(self) -> RecordDict:
        return RecordDict(
            {
                REQUEST_KEY: ConfigRecord(
                    {
                        "wire": WIRE,
                        "generation": self.generation,
                        "party": self.party,
                        "factory": self.factory,
                        "config": json.dumps(self.config, sort_keys=True),
                        "threads": int(self.torch_threads),
                        "envelopes": [bytes(e) for e in self.envelopes],
                    }
                )
            }
        )

    @classmethod
    def from_content(cls, content: RecordDict) -> DeliverRequest:
        r = _record(content, REQUEST_KEY)
        return cls(
            generation=str(r["generation"]),
            party=str(r["party"]),
            factory=str(r["factory"]),
            config=json.loads(str(r["config"])),
            envelopes=list(r["envelopes"]),
            torch_threads=int(r["threads"]),
        )


@dataclass
class Outcome:
    """What one envelope did: the envelopes the party put on the wire, or a rejection."""

    out: list[bytes] = field(default_factory=list)
    code: str = ""  # ProtocolError code; "" = accepted
    detail: str = ""
    sender: str = ""


@dataclass
class DeliverReply:
    generation: str
    outcomes: list[Outcome]
    views: list[bytes]  # receiver-view envelopes accepted since the previous reply
    replayed: int = 0  # envelopes the node replayed to rebuild the party (0 = state was cached)
    seconds: float = 0.0  # time the node spent on this request

    def to_content(self) -> RecordDict:
        flat = [e for o in self.outcomes for e in o.out]
        return RecordDict(
            {
                REPLY_KEY: ConfigRecord(
                    {
                        "wire": WIRE,
                        "generation": self.generation,
                        "out": flat,
                        "counts": [len(o.out) for o in self.outcomes],
                        "codes": [o.code for o in self.outcomes],
                        "details": [o.detail for o in self.outcomes],
                        "senders": [o.sender for o in self.outcomes],
                        "views": list(self.views),
                        "replayed": int(self.replayed),
                        "seconds": float(self.seconds),
                    }
                )
            }
        )

    @classmethod
    def from_content(cls, content: RecordDict) -> DeliverReply:
        r = _record(content, REPLY_KEY)
        flat, counts = list(r["out"]), [int(c) for c in r["counts"]]
        if sum(counts) != len(flat):
            raise CarrierError(f"reply lists {sum(counts)} envelopes but carries {len(flat)}")
        outcomes, pos = [], 0
        for n, code, detail, sender in zip(counts, r["codes"], r["details"], r["senders"], strict=True):
            outcomes.append(Outcome(out=flat[pos : pos + n], code=str(code), detail=str(detail), sender=str(sender)))
            pos += n
        return cls(
            generation=str(r["generation"]),
            outcomes=outcomes,
            views=list(r["views"]),
            replayed=int(r["replayed"]),
            seconds=float(r["seconds"]),
        )
