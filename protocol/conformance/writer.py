"""Writing vector files: each step is executed as it is added, and its observations recorded."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..keys import Identity
from ..message import Message
from ..schema import schema_hash
from ..wire import WIRE_VERSION
from .constructions import canonical, manifest_of, safetensors_body
from .forms import message_to_json, value_to_json
from .runner import Executor

GENERATOR = "python -m protocol.conformance"
PARTY_KEYS = {  # fixed Ed25519 private keys of the vector parties (public test keys; never use them)
    "coordinator": bytes(range(0, 32)),
    "source": bytes(range(32, 64)),
    "target": bytes(range(64, 96)),
}
LOW_ORDER_POINT = bytes(32)  # u = 0 is of small order on Curve25519
W = 1024  # §8 replay window, restated: vectors must not follow a change of the implementation's constant


def endpoint_header(suite: str) -> list[str]:
    return [
        f"Scripted {suite}-suite conversations. Build one Endpoint per party from the group setup "
        "(identity_private, registry, limits, session_seed, rekey_every, rng = seeded_rng(rng_seed)), "
        "then run the tests in order: send/rekey must output `output`; receive must rebuild `input` "
        "from `construction`, pass it with receive(input, link=link) and deliver `delivered` and "
        "output `output`, or raise `error_code` leaving the endpoint's state unchanged; bulk sends "
        "`count` copies of `message` (meta.i = index from 0) and delivers each, `sha256` covering "
        "u32be(len)||envelope of each; keys exposes the traffic keys an endpoint holds for a peer; "
        "rejections exposes the endpoint's (charged_to, code) log and what is cut off. See "
        "PROTOCOL.md §12.1 for every field.",
    ]


class GroupWriter:
    """Builds one test group step by step, executing each step as it is added."""

    def __init__(self, document: VectorFile, group: dict[str, Any]):
        self.document = document
        self.group = group
        group["tests"] = []
        self.ex = Executor(group)

    def add(self, op: str, comment: str, expect: str | None = "valid", **fields: Any) -> int:
        tc = self.document.next_id()
        test = {"tcId": tc, "comment": comment, "op": op, **fields}
        observed = self.ex.run(test)
        if expect == "valid" and observed["result"] != "valid":
            raise AssertionError(f"tcId {tc} ({comment}): expected valid, got {observed.get('error_code')}")
        if expect == "invalid" and observed["result"] != "invalid":
            raise AssertionError(f"tcId {tc} ({comment}): expected a rejection, got valid")
        if expect not in (None, "valid", "invalid") and observed.get("error_code") != expect:
            raise AssertionError(f"tcId {tc} ({comment}): expected {expect}, got {observed.get('error_code', 'valid')}")
        test.update(observed)
        self.group["tests"].append(test)
        return tc

    def out(self, tc: int, index: int = 0) -> bytes:
        return self.ex.outputs[tc][index]

    def state(self, party: str, peer: str):
        return self.ex.endpoints[party].state_snapshot()[peer]

    # Shorthands for conversation steps.
    def send(self, comment: str, mtype: str, sender: str, receiver: str, **kw: Any) -> int:
        return self.add("send", comment, party=sender, message=msg_json(mtype, sender, receiver, **kw))

    def deliver(self, tc: int, party: str, comment: str, index: int = 0, expect: str | None = "valid", link: str | None = None) -> int:
        return self.reject(party, comment, expect, output(tc, index), link=link)

    def reject(self, party: str, comment: str, code: str | None, construction: dict, link: str | None = None) -> int:
        fields: dict[str, Any] = {"party": party, "construction": construction}
        if link is not None:
            fields["link"] = link
        return self.add("receive", comment, expect=code or "invalid", **fields)


class VectorFile:
    def __init__(self, schema: str, description: list[str]):
        self.doc: dict[str, Any] = {
            "algorithm": "cdrsim-wire",
            "schema": schema,
            "wireVersion": WIRE_VERSION,
            "schemaHash": schema_hash(),
            "generatedBy": GENERATOR,
            "header": description,
            "numberOfTests": 0,
            "testGroups": [],
        }
        self._id = 0

    def next_id(self) -> int:
        self._id += 1
        return self._id

    def group(self, **fields: Any) -> GroupWriter:
        group = dict(fields)
        self.doc["testGroups"].append(group)
        return GroupWriter(self, group)

    def conversation(
        self, suite: str, comment: str, *, limits: dict | None = None, seed: str = "", rekey_every: dict | None = None
    ) -> GroupWriter:
        parties, registry = {}, {}
        for name, key in PARTY_KEYS.items():
            registry[name] = Identity.from_private_bytes(key, name=name).public_bytes().hex()
            parties[name] = {
                "identity_private": key.hex(),
                "rng_seed": f"cdrsim/v1 vectors/{seed}{name}",
                "session_seed": b"cdrsim vectors".hex(),
                "limits": (limits or {}).get(name, {"max_rejections": 10_000}),
            }
            if rekey_every and name in rekey_every:
                parties[name]["rekey_every"] = rekey_every[name]
        return self.group(type="EndpointConversation", suite=suite, comment=comment, parties=parties, registry=registry)

    def finish(self) -> dict[str, Any]:
        self.doc["numberOfTests"] = self._id
        return self.doc


# --------------------------------------------------------------------------- case helpers


def msg_json(type: str, sender: str, receiver: str, *, arrays: dict | None = None, meta: dict | None = None, **kw: Any) -> dict:
    return message_to_json(Message(type=type, sender=sender, receiver=receiver, arrays=arrays or {}, meta=meta or {}, **kw))


def emb(n: int = 3, d: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"user_ids": np.arange(n, dtype=np.int64), "emb": rng.standard_normal((n, d)).astype(np.float32)}


def header_fields(**overrides: Any) -> dict[str, Any]:
    """A plaintext control header; secure headers drop manifest and meta (see secure_header)."""
    base = {
        "version": 1,
        "suite": "plaintext",
        "type": "control",
        "session_id": bytes(16),
        "sender": "coordinator",
        "receiver": "source",
        "epoch": 0,
        "seq": 1,
        "round": 0,
        "reply_to": None,
        "body_length": 0,
        "manifest": [],
        "meta": {"op": "fit"},
    }
    base.update(overrides)
    return base


def secure_header(**overrides: Any) -> dict[str, Any]:
    fields = header_fields(suite="secure", **overrides)
    return {k: v for k, v in fields.items() if k not in ("manifest", "meta")}


def plaintext_frame(type: str, sender: str, receiver: str, *, arrays: dict | None = None, meta: dict | None = None, **fields: Any) -> dict:
    """A plaintext envelope built from the specification alone (not with the codec under test)."""
    arrays = arrays or {}
    body = safetensors_body(arrays)
    header = header_fields(
        type=type, sender=sender, receiver=receiver, manifest=manifest_of(arrays), meta=meta or {}, body_length=len(body), **fields
    )
    return frame_of(header, body=body)


def frame_of(header: dict[str, Any] | bytes, *, body: bytes = b"", **kw: Any) -> dict[str, Any]:
    raw = header if isinstance(header, bytes) else canonical(header)
    return {"kind": "frame", "header_cbor": raw.hex(), "body": body.hex(), **kw}


def with_meta_bytes(raw_meta: bytes, **overrides: Any) -> dict[str, Any]:
    """A frame whose (otherwise canonical) header has hand-written CBOR bytes as its meta value."""
    raw = canonical(header_fields(meta={}, **overrides)).replace(b"dmeta\xa0", b"dmeta" + raw_meta)
    return frame_of(raw)


def mutated(tc: int, *mutations: dict[str, Any], index: int = 0) -> dict[str, Any]:
    return {"kind": "mutate", "tcId": tc, "index": index, "mutations": list(mutations)}


def set_header(tc: int, index: int = 0, **fields: Any) -> dict[str, Any]:
    return mutated(tc, {"op": "header", "set": value_to_json(fields)}, index=index)


def output(tc: int, index: int = 0) -> dict[str, Any]:
    return {"kind": "output", "tcId": tc, "index": index}


def manifest(*entries: tuple[str, str, list[int]]) -> list[list[Any]]:
    return [[name, dtype, list(shape)] for name, dtype, shape in entries]


def seal_case(state: Any, header: dict[str, Any], inner: bytes, **kw: Any) -> dict[str, Any]:
    """An envelope sealed with the sender's real traffic keys (published by a `keys` step)."""
    header = dict(header, body_length=len(inner) + 16)
    return {
        "kind": "seal",
        "key": state.send.key.hex(),
        "iv": state.send.iv.hex(),
        "inner": inner.hex(),
        "header": value_to_json(header),
        **kw,
    }


def nest(depth: int, leaf: Any = 0) -> Any:
    """`leaf` wrapped in `depth` one-element arrays."""
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def find_eph(envelope: bytes) -> int:
    """Offset of the 32-byte 'eph' value in a handshake envelope."""
    marker = canonical("eph") + b"\x58\x20"
    return envelope.index(marker) + len(marker)


def exact_window(g: GroupWriter, sender: str = "source", receiver: str = "target") -> None:
    """Two held messages W and W-1 behind the top: the first is STALE, the second accepted once."""
    h0 = g.send("held back: will end exactly W = 1024 behind the top", "ack", sender, receiver, meta={"held": 0})
    h1 = g.send("held back: will end W - 1 = 1023 behind the top", "ack", sender, receiver, meta={"held": 1})
    g.add("bulk", f"{W - 1} messages move the top on", party=sender, peer=receiver, count=W - 1, message=msg_json("ack", sender, receiver))
    g.deliver(h1, receiver, "1023 behind the top: inside the window, accepted")
    g.deliver(h1, receiver, "1023 behind the top, again: the window remembers it", expect="REPLAY")
    g.deliver(h0, receiver, "1024 behind the top: outside the window", expect="STALE")


def establish(g: GroupWriter, initiator: str, responder: str, *, to_responder: str | None = None, to_initiator: str | None = None) -> int:
    """A full secure handshake carrying one ack; `to_*` name the links each side hears on."""
    s = g.send(f"{initiator} -> {responder} ack: hs_init goes out, the ack waits", "ack", initiator, responder)
    r = g.deliver(s, responder, f"{responder} answers with hs_resp", link=to_responder)
    f = g.deliver(r, initiator, f"{initiator} sends hs_finish and the queued ack", link=to_initiator)
    g.deliver(f, responder, f"{responder}: session established", index=0, link=to_responder)
    g.deliver(f, responder, f"{responder} opens the ack", index=1, link=to_responder)
    return s
