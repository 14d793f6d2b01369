"""What the coordinator (ServerApp) and a party's node (ClientApp) say to each other.

Flower records are only the carrier: every protocol envelope travels as one `bytes` value, the
exact bytes the in-process runtime hands to a party. Four message types, all `query.*` so that
they route to `@app.query(...)` handlers:

- `query.hello`: role handshake. The node answers with the role its node config names (if
  any), its partition id (simulation) and its pid; with `warm`, it also starts its party host
  (so that the host's imports overlap with the coordinator's own start-up).
- `query.start`: build a fresh party on the node from its JSON-able spec (one per task). The
  reply carries the party's identity PUBLIC key (empty on the plaintext suite).
- `query.deliver`: a batch of envelopes for one party, in wire order, each with the name of the
  link it came over, and (with a party's first batch) the registry of pinned public keys. The
  reply carries, per envelope, what the party put on the wire or the protocol's rejection, and
  the plaintext receiver-view envelopes the party accepted since its last reply
  (instrumentation for the curious-receiver threat model, piggybacked to save a round trip).
- `query.close`: the run is over; the node's party host ends.

Nothing secret is in any of them: specs carry no key material (a party's key is made or loaded
where it runs), and the registry holds public keys only.

This module is imported by every ClientApp process, so it stays light (no torch, no sklearn).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ConfigRecord, RecordDict

WIRE = "cdrsim-flower/2"  # version of this carrier format, checked on both sides
HELLO = "query.hello"
START = "query.start"
DELIVER = "query.deliver"
CLOSE = "query.close"
REQUEST_KEY = "cdrsim.request"
REPLY_KEY = "cdrsim.reply"
ROLE_KEY = "role"  # node config key that pins a SuperNode to a party
KEY_FILE_KEY = "key-file"  # node config key naming the node's own identity key file
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


def _content(key: str, values: dict[str, Any]) -> RecordDict:
    return RecordDict({key: ConfigRecord({"wire": WIRE, **values})})


# ----------------------------------------------------------------------------- hello
@dataclass(frozen=True)
class HelloRequest:
    warm: bool = True  # start the node's party host now (False: a bare round trip, for pings)
    idle_timeout: float = 1800.0  # seconds the party host waits for a request before it ends

    def to_content(self) -> RecordDict:
        return _content(REQUEST_KEY, {"warm": bool(self.warm), "idle_timeout": float(self.idle_timeout)})

    @classmethod
    def from_content(cls, content: RecordDict) -> HelloRequest:
        r = _record(content, REQUEST_KEY)
        return cls(warm=bool(r["warm"]), idle_timeout=float(r["idle_timeout"]))


@dataclass(frozen=True)
class Hello:
    role: str  # "" when the node config does not pin a role
    partition: int  # -1 when the node config has no partition id
    pid: int  # the ClientApp process that answered
    host_pid: int = 0  # the node's party host (0: not started by this hello)

    def to_content(self) -> RecordDict:
        return _content(REPLY_KEY, {"role": self.role, "partition": self.partition, "pid": self.pid, "host_pid": self.host_pid})

    @classmethod
    def from_content(cls, content: RecordDict) -> Hello:
        r = _record(content, REPLY_KEY)
        return cls(role=str(r["role"]), partition=int(r["partition"]), pid=int(r["pid"]), host_pid=int(r["host_pid"]))


# ----------------------------------------------------------------------------- start
@dataclass(frozen=True)
class StartRequest:
    generation: str  # a fresh id per task (runtime.start): the node builds its party anew
    party: str
    factory: str
    config: dict[str, Any]
    torch_threads: int = 0  # 0 = leave the process default
    idle_timeout: float = 1800.0  # for a party host this request has to start

    def to_content(self) -> RecordDict:
        return _content(
            REQUEST_KEY,
            {
                "generation": self.generation,
                "party": self.party,
                "factory": self.factory,
                "config": json.dumps(self.config, sort_keys=True),
                "threads": int(self.torch_threads),
                "idle_timeout": float(self.idle_timeout),
            },
        )

    @classmethod
    def from_content(cls, content: RecordDict) -> StartRequest:
        r = _record(content, REQUEST_KEY)
        return cls(
            generation=str(r["generation"]),
            party=str(r["party"]),
            factory=str(r["factory"]),
            config=json.loads(str(r["config"])),
            torch_threads=int(r["threads"]),
            idle_timeout=float(r["idle_timeout"]),
        )


@dataclass(frozen=True)
class StartReply:
    generation: str
    public_key: bytes  # the party's identity public key; b"" on the plaintext suite
    host_pid: int
    seconds: float = 0.0  # time the host spent building the party

    def to_content(self) -> RecordDict:
        return _content(
            REPLY_KEY,
            {
                "generation": self.generation,
                "public_key": bytes(self.public_key),
                "host_pid": self.host_pid,
                "seconds": float(self.seconds),
            },
        )

    @classmethod
    def from_content(cls, content: RecordDict) -> StartReply:
        r = _record(content, REPLY_KEY)
        return cls(
            generation=str(r["generation"]), public_key=bytes(r["public_key"]), host_pid=int(r["host_pid"]), seconds=float(r["seconds"])
        )


# ----------------------------------------------------------------------------- deliver
@dataclass(frozen=True)
class DeliverRequest:
    generation: str
    envelopes: list[bytes]
    links: list[str]  # per envelope: the link it arrived over (`coordinator`, `party:<name>`, `inject`)
    registry: str = ""  # the registry of pinned public keys, with the party's first batch ("" = none)

    def to_content(self) -> RecordDict:
        return _content(
            REQUEST_KEY,
            {
                "generation": self.generation,
                "envelopes": [bytes(e) for e in self.envelopes],
                "links": [str(x) for x in self.links],
                "registry": self.registry,
            },
        )

    @classmethod
    def from_content(cls, content: RecordDict) -> DeliverRequest:
        r = _record(content, REQUEST_KEY)
        envelopes, links = list(r["envelopes"]), [str(x) for x in r["links"]]
        if len(envelopes) != len(links):
            raise CarrierError(f"a deliver request carries {len(envelopes)} envelopes but {len(links)} link names")
        return cls(generation=str(r["generation"]), envelopes=envelopes, links=links, registry=str(r["registry"]))


@dataclass
class EnvelopeOutcome:
    """What one envelope did: the envelopes the party put on the wire, or a rejection."""

    out: list[bytes] = field(default_factory=list)
    code: str = ""  # ProtocolError code; "" = accepted
    detail: str = ""
    sender: str = ""
    charged_to: str = ""  # whom the protocol charged the rejection to (a sender, or "link:<name>")


@dataclass
class DeliverReply:
    generation: str
    outcomes: list[EnvelopeOutcome]
    views: list[bytes]  # receiver-view envelopes accepted since the previous reply
    seconds: float = 0.0  # time the node's party host spent on this request

    def to_content(self) -> RecordDict:
        flat = [e for o in self.outcomes for e in o.out]
        return _content(
            REPLY_KEY,
            {
                "generation": self.generation,
                "out": flat,
                "counts": [len(o.out) for o in self.outcomes],
                "codes": [o.code for o in self.outcomes],
                "details": [o.detail for o in self.outcomes],
                "senders": [o.sender for o in self.outcomes],
                "charged": [o.charged_to for o in self.outcomes],
                "views": list(self.views),
                "seconds": float(self.seconds),
            },
        )

    @classmethod
    def from_content(cls, content: RecordDict) -> DeliverReply:
        r = _record(content, REPLY_KEY)
        flat, counts = list(r["out"]), [int(c) for c in r["counts"]]
        if sum(counts) != len(flat):
            raise CarrierError(f"reply lists {sum(counts)} envelopes but carries {len(flat)}")
        outcomes, pos = [], 0
        for n, code, detail, sender, charged in zip(counts, r["codes"], r["details"], r["senders"], r["charged"], strict=True):
            outcomes.append(
                EnvelopeOutcome(out=flat[pos : pos + n], code=str(code), detail=str(detail), sender=str(sender), charged_to=str(charged))
            )
            pos += n
        return cls(generation=str(r["generation"]), outcomes=outcomes, views=list(r["views"]), seconds=float(r["seconds"]))


# ----------------------------------------------------------------------------- close
def close_request() -> RecordDict:
    return _content(REQUEST_KEY, {})


def check_close_request(content: RecordDict) -> None:
    _record(content, REQUEST_KEY)  # only the carrier version to check


@dataclass(frozen=True)
class Closed:
    host_pid: int  # the party host that was asked to end (0: none was running)

    def to_content(self) -> RecordDict:
        return _content(REPLY_KEY, {"host_pid": self.host_pid})

    @classmethod
    def from_content(cls, content: RecordDict) -> Closed:
        return cls(host_pid=int(_record(content, REPLY_KEY)["host_pid"]))
