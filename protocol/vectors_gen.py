"""Generate (and check) the golden conformance vectors under protocol/vectors/.

    python -m protocol.vectors_gen            # rewrite protocol/vectors/*.json
    python -m protocol.vectors_gen --check    # fail if the files differ from a fresh generation

Vectors are Wycheproof-style JSON: each test has a `tcId`, a `comment`, its inputs, the
expected wire bytes (hex), `result` ("valid"/"invalid") and, for invalid cases, the
`error_code`. Three files:

- codec.json: stateless `encode`/`decode` of plaintext envelopes.
- endpoint_plaintext.json and endpoint_secure.json: scripted conversations between Endpoints
  with fixed Ed25519 keys and a fixed rng (`seeded_rng`); every step records the envelopes
  it put on the wire, and negative steps record the error a receiver must raise.

Every input envelope also carries a `construction` saying how it was made (an earlier
output, a mutation of one, a hand-built frame, or a body sealed with the published traffic
keys), so a test can rebuild every byte. `replay()` below is that test's engine.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import struct
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import cbor2
import numpy as np
import safetensors.numpy as stn

from . import cbor
from .codec import decode, encode
from .endpoint import Endpoint
from .errors import ProtocolError
from .keys import Identity, Registry, seeded_rng
from .message import Message
from .schema import schema_hash
from .secure import seal_frame
from .wire import (
    FLAG_ENCRYPTED_BODY,
    INNER_TRAILER,
    MAGIC,
    PREFIX,
    PREFIX_LEN,
    REPLAY_WINDOW,
    WIRE_VERSION,
    Limits,
)

VECTOR_DIR = Path(__file__).with_name("vectors")
GENERATOR = "python -m protocol.vectors_gen"
PARTY_KEYS = {  # fixed Ed25519 private keys of the vector parties (public test keys; never use them)
    "coordinator": bytes(range(0, 32)),
    "source": bytes(range(32, 64)),
    "target": bytes(range(64, 96)),
}
LOW_ORDER_POINT = bytes(32)  # u = 0 is of small order on Curve25519


# --------------------------------------------------------------------------- JSON forms


def value_to_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bytes": value.hex()}
    if isinstance(value, dict):
        return {k: value_to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [value_to_json(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return {"$float": repr(value)}
    return value


def value_from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$bytes"}:
            return bytes.fromhex(value["$bytes"])
        if set(value) == {"$float"}:
            return float(value["$float"])
        return {k: value_from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [value_from_json(v) for v in value]
    return value


def message_to_json(msg: Message, *, full: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": msg.type,
        "sender": msg.sender,
        "receiver": msg.receiver,
        "round": msg.round,
        "reply_to": msg.reply_to,
        "meta": value_to_json(dict(msg.meta)),
        "arrays": {
            name: {
                "dtype": str(np.asarray(a).dtype) if np.asarray(a).dtype != np.bool_ else "bool",
                "shape": list(np.shape(a)),
                "data": np.ascontiguousarray(a).astype(np.asarray(a).dtype.newbyteorder("<")).tobytes().hex(),
            }
            for name, a in msg.arrays.items()
        },
    }
    if full or msg.session_id or msg.epoch or msg.seq:
        out.update(session_id=msg.session_id.hex(), epoch=msg.epoch, seq=msg.seq, suite=msg.suite)
    return out


def message_from_json(obj: dict[str, Any]) -> Message:
    arrays = {}
    for name, spec in obj.get("arrays", {}).items():
        dtype = np.dtype(spec["dtype"]).newbyteorder("<") if spec["dtype"] != "bool" else np.dtype("?")
        arrays[name] = np.frombuffer(bytes.fromhex(spec["data"]), dtype=dtype).reshape(spec["shape"]).copy()
    extra = {}
    if "session_id" in obj:
        extra = dict(session_id=bytes.fromhex(obj["session_id"]), epoch=obj["epoch"], seq=obj["seq"], suite=obj["suite"])
    return Message(
        type=obj["type"],
        sender=obj["sender"],
        receiver=obj["receiver"],
        arrays=arrays,
        meta=value_from_json(obj.get("meta", {})),
        round=obj.get("round", 0),
        reply_to=obj.get("reply_to"),
        **extra,
    )


# --------------------------------------------------------------------------- constructions


def raw_cbor_map(pairs: list[tuple[Any, Any]]) -> bytes:
    """A CBOR map with the pairs in the given order (duplicates allowed): for negative vectors."""
    n = len(pairs)
    head = bytes([0xA0 | n]) if n < 24 else bytes([0xB8, n])
    return head + b"".join(cbor.dumps(k) + cbor.dumps(v) for k, v in pairs)


def build_frame(spec: dict[str, Any]) -> bytes:
    header = bytes.fromhex(spec["header_cbor"])
    length = spec.get("header_length", len(header))
    return (
        bytes.fromhex(spec.get("magic", MAGIC.hex()))
        + struct.pack(">BBI", spec.get("version", WIRE_VERSION), spec.get("flags", 0), length)
        + header
        + bytes.fromhex(spec.get("body", ""))
    )


def split_frame(data: bytes) -> tuple[int, int, dict[str, Any], bytes]:
    _, version, flags, hl = PREFIX.unpack_from(data, 0)
    header = cbor2.loads(data[PREFIX_LEN : PREFIX_LEN + hl])
    return version, flags, header, data[PREFIX_LEN + hl :]


def mutate(data: bytes, mutation: dict[str, Any]) -> bytes:
    op = mutation["op"]
    buf = bytearray(data)
    if op == "flip":
        buf[mutation["offset"]] ^= 1 << mutation["bit"]
    elif op == "set_bytes":
        value = bytes.fromhex(mutation["hex"])
        buf[mutation["offset"] : mutation["offset"] + len(value)] = value
    elif op == "truncate":
        del buf[mutation["length"] :]
    elif op == "append":
        buf += bytes.fromhex(mutation["hex"])
    elif op == "header":
        # Replace header fields, re-encode the header canonically, keep flags and body.
        version, flags, header, body = split_frame(data)
        header.update(value_from_json(mutation["set"]))
        for key in mutation.get("delete", []):
            header.pop(key, None)
        raw = cbor.dumps(header)
        return PREFIX.pack(MAGIC, version, flags, len(raw)) + raw + body
    elif op == "payload":
        # Replace fields of a handshake payload (unsigned hs_init); fix body_length.
        version, flags, header, body = split_frame(data)
        payload = cbor2.loads(body)
        payload.update(value_from_json(mutation["set"]))
        body = cbor.dumps(payload)
        header["body_length"] = len(body)
        raw = cbor.dumps(header)
        return PREFIX.pack(MAGIC, version, flags, len(raw)) + raw + body
    else:
        raise ValueError(f"unknown mutation {op!r}")
    return bytes(buf)


def build_input(construction: dict[str, Any], outputs: dict[int, list[bytes]]) -> bytes:
    kind = construction["kind"]
    if kind == "output":
        return outputs[construction["tcId"]][construction.get("index", 0)]
    if kind == "mutate":
        data = outputs[construction["tcId"]][construction.get("index", 0)]
        for m in construction["mutations"]:
            data = mutate(data, m)
        return data
    if kind == "frame":
        return build_frame(construction)
    if kind == "plaintext":
        return encode(message_from_json(construction["message"]))
    if kind == "seal":
        header = value_from_json(construction["header"])
        inner = bytes.fromhex(construction["inner"])
        return seal_frame(
            header,
            [memoryview(inner)],
            len(inner),
            key=bytes.fromhex(construction["key"]),
            iv=bytes.fromhex(construction["iv"]),
        )
    raise ValueError(f"unknown construction {kind!r}")


def inner_plaintext(st_body: bytes, manifest: list, meta: dict | None = None) -> bytes:
    raw = cbor.dumps({"manifest": manifest, "meta": meta or {}})
    return st_body + raw + INNER_TRAILER.pack(len(raw))


# --------------------------------------------------------------------------- executing steps


class Executor:
    """Runs vector steps against real Endpoints (or the stateless codec) and reports results."""

    def __init__(self, group: dict[str, Any]):
        self.group = group
        self.outputs: dict[int, list[bytes]] = {}
        self.endpoints: dict[str, Endpoint] = {}
        if group["type"] == "EndpointConversation":
            registry = Registry({n: bytes.fromhex(h) for n, h in group["registry"].items()})
            for name, spec in group["parties"].items():
                identity = Identity.from_private_bytes(bytes.fromhex(spec["identity_private"]), name=name)
                self.endpoints[name] = Endpoint(
                    name,
                    suite=group["suite"],
                    identity=identity if group["suite"] == "secure" else None,
                    registry=registry,
                    limits=Limits(**spec.get("limits", {})),
                    session_seed=bytes.fromhex(spec.get("session_seed", "")),
                    rng=seeded_rng(spec["rng_seed"]),
                    rekey_every=spec.get("rekey_every"),
                )

    def run(self, test: dict[str, Any]) -> dict[str, Any]:
        op = test["op"]
        tc = test["tcId"]
        observed: dict[str, Any] = {}
        try:
            if op == "encode":
                wire = encode(message_from_json(test["message"]))
                self.outputs[tc] = [wire]
                observed["wire"] = wire.hex()
                back = decode(wire)
                observed["decoded"] = message_to_json(back, full=True)
            elif op == "decode":
                wire = build_input(test["construction"], self.outputs)
                observed["input"] = wire.hex()
                self.outputs[tc] = [wire]
                observed["decoded"] = message_to_json(decode(wire, limits=Limits(**test.get("limits", {}))), full=True)
            elif op == "send":
                out = self.endpoints[test["party"]].send(message_from_json(test["message"]))
                self.outputs[tc] = out
                observed["output"] = [e.hex() for e in out]
            elif op == "rekey":
                out = self.endpoints[test["party"]].rekey(test["peer"])
                self.outputs[tc] = out
                observed["output"] = [e.hex() for e in out]
            elif op == "receive":
                wire = build_input(test["construction"], self.outputs)
                observed["input"] = wire.hex()
                ep = self.endpoints[test["party"]]
                before = ep.state_snapshot()
                try:
                    delivered, out = ep.receive(wire)
                except ProtocolError:
                    if ep.state_snapshot() != before:
                        raise AssertionError(f"tcId {tc}: a rejected envelope changed the endpoint state") from None
                    raise
                self.outputs[tc] = out
                observed["delivered"] = [message_to_json(m, full=True) for m in delivered]
                observed["output"] = [e.hex() for e in out]
            elif op == "bulk":
                sender, receiver = self.endpoints[test["party"]], self.endpoints[test["peer"]]
                template = message_from_json(test["message"])
                digest = hashlib.sha256()
                envelopes = []
                for i in range(test["count"]):
                    out = sender.send(replace(template, meta={**template.meta, "i": i}))
                    if len(out) != 1:
                        raise AssertionError(f"tcId {tc}: bulk sends need an established session")
                    delivered, _ = receiver.receive(out[0])
                    if len(delivered) != 1:
                        raise AssertionError(f"tcId {tc}: bulk message {i} was not delivered")
                    digest.update(len(out[0]).to_bytes(4, "big") + out[0])
                    envelopes.append(out[0])
                self.outputs[tc] = envelopes
                observed["sha256"] = digest.hexdigest()
            elif op == "keys":
                state = self.endpoints[test["party"]].state_snapshot()[test["peer"]]
                observed.update(
                    session_id=state.session_id.hex(),
                    epoch=state.send.epoch,
                    send_key=state.send.key.hex(),
                    send_iv=state.send.iv.hex(),
                    recv_key=state.recv.key.hex(),
                    recv_iv=state.recv.iv.hex(),
                )
            else:
                raise ValueError(f"unknown op {op!r}")
            observed["result"] = "valid"
        except ProtocolError as exc:
            observed["result"] = "invalid"
            observed["error_code"] = exc.code.value
        return observed


def replay(document: dict[str, Any]) -> int:
    """Re-run every test of a vector file; raise AssertionError at the first difference."""
    count = 0
    for group in document["testGroups"]:
        ex = Executor(group)
        for test in group["tests"]:
            observed = ex.run(test)
            for key, value in observed.items():
                if test.get(key) != value:
                    raise AssertionError(
                        f"tcId {test['tcId']} ({test['comment']}): {key} differs: expected "
                        f"{str(test.get(key))[:200]}, got {str(value)[:200]}"
                    )
            if test.get("result") == "valid" and "error_code" in test:
                raise AssertionError(f"tcId {test['tcId']}: a valid case records an error code")
            count += 1
    return count


# --------------------------------------------------------------------------- writing groups


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

    def finish(self) -> dict[str, Any]:
        self.doc["numberOfTests"] = self._id
        return self.doc


def _m(type: str, sender: str, receiver: str, *, arrays: dict | None = None, meta: dict | None = None, **kw: Any) -> dict:
    return message_to_json(Message(type=type, sender=sender, receiver=receiver, arrays=arrays or {}, meta=meta or {}, **kw))


def _emb(n: int = 3, d: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "user_ids": np.arange(n, dtype=np.int64),
        "emb": rng.standard_normal((n, d)).astype(np.float32),
    }


# --------------------------------------------------------------------------- helpers for cases


def _header_fields(**overrides: Any) -> dict[str, Any]:
    """A plaintext control header; secure headers drop manifest and meta (see _secure_header)."""
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


def _secure_header(**overrides: Any) -> dict[str, Any]:
    fields = _header_fields(suite="secure", **overrides)
    return {k: v for k, v in fields.items() if k not in ("manifest", "meta")}


def _frame(header: dict[str, Any] | bytes, *, body: bytes = b"", **kw: Any) -> dict[str, Any]:
    raw = header if isinstance(header, bytes) else cbor.dumps(header)
    return {"kind": "frame", "header_cbor": raw.hex(), "body": body.hex(), **kw}


def _with_meta_bytes(raw_meta: bytes, **overrides: Any) -> dict[str, Any]:
    """A frame whose (otherwise canonical) header has hand-written CBOR bytes as its meta value."""
    raw = cbor.dumps(_header_fields(meta={}, **overrides)).replace(b"dmeta\xa0", b"dmeta" + raw_meta)
    return _frame(raw)


def _mutate(tc: int, *mutations: dict[str, Any], index: int = 0) -> dict[str, Any]:
    return {"kind": "mutate", "tcId": tc, "index": index, "mutations": list(mutations)}


def _set_header(tc: int, index: int = 0, **fields: Any) -> dict[str, Any]:
    return _mutate(tc, {"op": "header", "set": value_to_json(fields)}, index=index)


def _output(tc: int, index: int = 0) -> dict[str, Any]:
    return {"kind": "output", "tcId": tc, "index": index}


def _manifest(*entries: tuple[str, str, list[int]]) -> list[list[Any]]:
    return [[name, dtype, list(shape)] for name, dtype, shape in entries]


# The artifact of _emb() has these two arrays (int64 first in body order).
EMB_MANIFEST = _manifest(("user_ids", "int64", [3]), ("emb", "float32", [3, 4]))


# --------------------------------------------------------------------------- codec.json


def _codec_examples() -> dict[str, dict[str, Any]]:
    return {
        "control": dict(sender="coordinator", receiver="source", meta={"op": "fit", "epochs": 5, "lr": 0.01}, round=1),
        "artifact": dict(
            sender="source",
            receiver="target",
            arrays=_emb(),
            meta={"artifact": "user_emb", "kind": "embeddings", "chunk": 0, "chunks": 1},
            round=1,
        ),
        "request": dict(sender="target", receiver="source", meta={"op": "scores", "users": [1, 2, 3]}, round=2),
        "gradient": dict(
            sender="target",
            receiver="source",
            arrays={"grad": np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)},
            round=2,
            reply_to=3,
        ),
        "report": dict(
            sender="target",
            receiver="coordinator",
            arrays={"users": np.arange(3, dtype=np.int64), "hr": np.array([1.0, 0.0, 1.0])},
            meta={"op": "evaluate", "utility": {"HR@10": 0.6667, "NDCG@10": 0.41}},
            reply_to=1,
        ),
        "ack": dict(sender="source", receiver="coordinator", meta={"op": "fit"}, reply_to=1),
        "error": dict(sender="source", receiver="coordinator", meta={"step": "fit", "party": "source", "detail": "no data"}),
        "bye": dict(sender="coordinator", receiver="target"),
    }


def codec_vectors() -> dict[str, Any]:
    vf = VectorFile(
        "codec",
        [
            "Stateless plaintext codec. op=encode: encode(message) must equal wire and decode(wire) "
            "must give `decoded`. op=decode: rebuild `input` from `construction`, then decode(input, "
            "limits=Limits(**limits)) must raise `error_code` (or give `decoded` when valid).",
        ],
    )
    g = vf.group(type="PlaintextCodec", comment="encode/decode of plaintext envelopes")
    sid = bytes.fromhex("00112233445566778899aabbccddeeff")
    base = {}
    for mtype, kw in sorted(_codec_examples().items()):
        message = Message(type=mtype, session_id=sid, epoch=0, seq=7, **kw)
        base[mtype] = g.add("encode", f"plaintext {mtype} message", message=message_to_json(message))
    all_dtypes = {
        "f64": np.array([1.5, -2.25], dtype=np.float64),
        "f32": np.array([[0.5]], dtype=np.float32),
        "f16": np.array([1.0, 65504.0], dtype=np.float16),
        "i64": np.array([-(2**63), 2**63 - 1], dtype=np.int64),
        "i32": np.array([-7], dtype=np.int32),
        "i16": np.array([300, -300], dtype=np.int16),
        "i8": np.array([-128, 127], dtype=np.int8),
        "u8": np.array([0, 255], dtype=np.uint8),
        "b": np.array([True, False, True]),
    }
    g.add(
        "encode",
        "every allowed dtype (body ordered by dtype rank, then name)",
        message=message_to_json(Message("artifact", "source", "target", arrays=all_dtypes, session_id=sid, seq=1)),
    )
    edge_arrays = {
        "scalar": np.array(3.0, dtype=np.float32),
        "empty": np.zeros((0, 5), dtype=np.float32),
        "größe": np.arange(2, dtype=np.int32),
    }
    g.add(
        "encode",
        "0-d array, zero-size array and a non-ASCII array name",
        message=message_to_json(Message("artifact", "source", "target", arrays=edge_arrays, session_id=sid, seq=2)),
    )
    every_meta = {
        "neg": -(2**63),
        "big": 2**64 - 1,
        "f": -0.1,
        "half": 1.5,
        "nan": float("nan"),
        "inf": float("-inf"),
        "b": b"\x00\xff",
        "none": None,
        "t": True,
        "nested": {"l": [1, [2, {"x": "y"}]]},
        "ü": "✓",
    }
    g.add(
        "encode",
        "meta with every value type (negative ints, floats, bytes, null, bool, nested maps and lists)",
        message=message_to_json(
            Message(
                "report",
                "target",
                "coordinator",
                meta=every_meta,
                session_id=sid,
                epoch=3,
                seq=2**64 - 1,
                round=2**32,
                reply_to=0,
            )
        ),
    )
    g.add("encode", "empty message with an unbound (zero) session id", message=_m("bye", "coordinator", "source"))

    art = base["artifact"]
    wire = g.out(art)
    hl = PREFIX.unpack_from(wire, 0)[3]
    body_start = PREFIX_LEN + hl

    def neg(comment: str, code: str, construction: dict, **kw: Any) -> int:
        return g.add("decode", comment, expect=code, construction=construction, **kw)

    def mut(*mutations: dict) -> dict:
        return _mutate(art, *mutations)

    def manifest_is(*entries: tuple[str, str, list[int]]) -> dict:
        return _set_header(art, manifest=_manifest(*entries))

    # Framing
    neg("bit flip in the magic", "BAD_MAGIC", mut({"op": "flip", "offset": 0, "bit": 0}))
    neg("wrong magic in a 3-byte input", "BAD_MAGIC", mut({"op": "truncate", "length": 3}, {"op": "set_bytes", "offset": 2, "hex": "00"}))
    neg("empty input", "TRUNCATED", mut({"op": "truncate", "length": 0}))
    neg("only the magic", "TRUNCATED", mut({"op": "truncate", "length": 4}))
    neg("prefix cut before the header length", "TRUNCATED", mut({"op": "truncate", "length": 9}))
    neg("cut inside the header", "TRUNCATED", mut({"op": "truncate", "length": PREFIX_LEN + hl // 2}))
    neg("cut inside the body (last byte missing)", "TRUNCATED", mut({"op": "truncate", "length": len(wire) - 1}))
    neg("cut at the end of the header (no body)", "TRUNCATED", mut({"op": "truncate", "length": body_start}))
    neg("wire version 2", "UNSUPPORTED_VERSION", mut({"op": "set_bytes", "offset": 4, "hex": "02"}))
    neg("wire version 0", "UNSUPPORTED_VERSION", mut({"op": "set_bytes", "offset": 4, "hex": "00"}))
    neg("wire version 255", "UNSUPPORTED_VERSION", mut({"op": "set_bytes", "offset": 4, "hex": "ff"}))
    neg("unknown flag bit 0x02", "MALFORMED_HEADER", mut({"op": "set_bytes", "offset": 5, "hex": "02"}))
    neg("encrypted-body flag on a plaintext envelope", "MALFORMED_HEADER", mut({"op": "set_bytes", "offset": 5, "hex": "01"}))
    neg("one byte after the body", "MALFORMED_HEADER", mut({"op": "append", "hex": "00"}))
    neg("header length 0xffffffff", "OVERSIZED", mut({"op": "set_bytes", "offset": 6, "hex": "ffffffff"}))
    neg("header length of 64 KiB + 1", "OVERSIZED", mut({"op": "set_bytes", "offset": 6, "hex": "00010001"}))
    neg("body_length of 2^40 bytes", "OVERSIZED", _set_header(art, body_length=2**40))
    neg("envelope larger than Limits.max_envelope_bytes=256", "OVERSIZED", _output(art), limits={"max_envelope_bytes": 256})
    neg("header larger than Limits.max_header_bytes=64", "OVERSIZED", _output(art), limits={"max_header_bytes": 64})
    neg("more arrays than Limits.max_arrays=1", "OVERSIZED", _output(art), limits={"max_arrays": 1})
    # Header CBOR
    h_ok = _header_fields()
    neg("header is a CBOR array", "MALFORMED_HEADER", _frame(cbor.dumps([1, 2, 3])))
    neg("header is not CBOR (0xff)", "MALFORMED_HEADER", _frame(b"\xff"))
    neg("header length 0", "MALFORMED_HEADER", _frame(b""))
    neg("header CBOR followed by an extra byte", "MALFORMED_HEADER", _frame(cbor.dumps(h_ok) + b"\x00"))
    neg("header map keys not in canonical order", "MALFORMED_HEADER", _frame(raw_cbor_map(sorted(h_ok.items()))))
    long_seq = cbor.dumps(_header_fields(seq=1)).replace(b"cseq\x01", b"cseq\x1a\x00\x00\x00\x01")
    neg("integer not in shortest form (seq as 0x1a00000001)", "MALFORMED_HEADER", _frame(long_seq))
    neg("indefinite-length header map", "MALFORMED_HEADER", _frame(b"\xbf" + cbor.dumps(h_ok)[1:] + b"\xff"))
    neg("CBOR tag (epoch timestamp) in meta", "MALFORMED_HEADER", _with_meta_bytes(b"\xa1ate\xc1\x1a\x51\x4b\x67\xb0"))
    bad_utf8 = cbor.dumps(_header_fields(sender="coordinatoX")).replace(b"coordinatoX", b"coordinato\xff")
    neg("invalid UTF-8 in a text string", "MALFORMED_HEADER", _frame(bad_utf8))
    neg("required field 'epoch' missing", "MALFORMED_HEADER", _frame({k: v for k, v in h_ok.items() if k != "epoch"}))
    neg("unexpected field 'priority'", "MALFORMED_HEADER", _frame({**h_ok, "priority": 1}))
    neg("manifest and meta in a secure-suite header", "MALFORMED_HEADER", _frame({**h_ok, "suite": "secure"}, flags=1))
    neg("'epoch' is text", "MALFORMED_HEADER", _frame(_header_fields(epoch="0")))
    neg("'round' is a boolean", "MALFORMED_HEADER", _frame(_header_fields(round=True)))
    neg("'seq' is negative", "MALFORMED_HEADER", _frame(_header_fields(seq=-1)))
    neg("'seq' is a float", "MALFORMED_HEADER", _frame(_header_fields(seq=1.0)))
    neg("'epoch' above 2^32-1", "MALFORMED_HEADER", _frame(_header_fields(epoch=2**32)))
    neg("'session_id' of 15 bytes", "MALFORMED_HEADER", _frame(_header_fields(session_id=bytes(15))))
    neg("empty sender", "MALFORMED_HEADER", _frame(_header_fields(sender="")))
    neg("header 'version' field says 2", "MALFORMED_HEADER", _frame(_header_fields(version=2)))
    neg("meta is an array", "MALFORMED_HEADER", _frame(_header_fields(meta=[1])))
    neg("meta map with an integer key", "MALFORMED_HEADER", _with_meta_bytes(b"\xa1\x01\x02"))
    neg("handshake type in the plaintext suite", "MALFORMED_HEADER", _frame(_header_fields(type="hs_init")))
    neg("manifest entry with two elements", "MALFORMED_HEADER", _frame(_header_fields(manifest=[["x", "float32"]])))
    neg("manifest shape with a negative dimension", "MALFORMED_HEADER", _frame(_header_fields(manifest=_manifest(("x", "float32", [-1])))))
    neg("array named __metadata__", "MALFORMED_HEADER", _frame(_header_fields(manifest=_manifest(("__metadata__", "float32", [1])))))
    neg("duplicate top-level key 'type'", "DUPLICATE_KEY", _frame(raw_cbor_map([("type", "control"), *h_ok.items()])))
    neg("duplicate key inside meta", "DUPLICATE_KEY", _with_meta_bytes(b"\xa2aa\x01aa\x02"))
    neg("unknown message type 'exfiltrate'", "UNKNOWN_MESSAGE_TYPE", _frame(_header_fields(type="exfiltrate")))
    neg("unknown suite 'rot13'", "UNSUPPORTED_SUITE", _frame(_header_fields(suite="rot13")))
    neg(
        "secure application envelope given to decode()",
        "ENCRYPTED",
        _frame(_secure_header(type="artifact", body_length=20), body=bytes(20), flags=FLAG_ENCRYPTED_BODY),
    )
    neg(
        "secure handshake envelope given to decode()",
        "ENCRYPTED",
        _frame(_secure_header(type="hs_init", seq=0, body_length=1), body=b"\xa0"),
    )
    # Manifest vs body
    neg("manifest shape larger than the body", "MANIFEST_MISMATCH", manifest_is(("user_ids", "int64", [3]), ("emb", "float32", [4, 4])))
    neg(
        "manifest dtype int32 where the body holds float32 (same size)",
        "MANIFEST_MISMATCH",
        manifest_is(("user_ids", "int64", [3]), ("emb", "int32", [3, 4])),
    )
    neg("manifest renames an array", "MANIFEST_MISMATCH", manifest_is(("user_ids", "int64", [3]), ("embx", "float32", [3, 4])))
    neg("manifest entries out of body order", "MANIFEST_MISMATCH", manifest_is(("emb", "float32", [3, 4]), ("user_ids", "int64", [3])))
    neg(
        "manifest lists the same array twice",
        "MANIFEST_MISMATCH",
        _frame(_header_fields(manifest=_manifest(("x", "float32", [1]), ("x", "float32", [1])))),
    )
    neg("manifest omits an array present in the body", "MANIFEST_MISMATCH", manifest_is(("user_ids", "int64", [3])))
    neg("empty manifest with a non-empty body", "MANIFEST_MISMATCH", manifest_is())
    x2 = _manifest(("x", "float32", [2]))
    with_meta = stn.save({"x": np.zeros(2, dtype=np.float32)}, metadata={"a": "b"})
    neg(
        "safetensors body with __metadata__",
        "MANIFEST_MISMATCH",
        _frame(_header_fields(type="artifact", manifest=x2, body_length=len(with_meta)), body=with_meta),
    )
    plain_st = stn.save({"x": np.zeros(2, dtype=np.float32)})
    bad_offsets = plain_st.replace(b'"data_offsets":[0,8]', b'"data_offsets":[8,0]')
    neg(
        "safetensors header with swapped data offsets",
        "MANIFEST_MISMATCH",
        _frame(_header_fields(type="artifact", manifest=x2, body_length=len(bad_offsets)), body=bad_offsets),
    )
    # dtype allow-list
    for dt in ("complex64", "float128", "object", "bfloat16", "uint16"):
        header = _header_fields(type="artifact", manifest=_manifest(("x", dt, [2])), body_length=16)
        neg(f"dtype {dt} is not allowed", "DISALLOWED_DTYPE", _frame(header, body=bytes(16)))
    return vf.finish()


# --------------------------------------------------------------------------- endpoint files


def _parties(limits: dict[str, dict] | None = None, seed: str = "") -> tuple[dict, dict]:
    parties, registry = {}, {}
    for name, key in PARTY_KEYS.items():
        identity = Identity.from_private_bytes(key, name=name)
        registry[name] = identity.public_bytes().hex()
        parties[name] = {
            "identity_private": key.hex(),
            "rng_seed": f"cdrsim/v1 vectors/{seed}{name}",
            "session_seed": b"cdrsim vectors".hex(),
            "limits": (limits or {}).get(name, {"max_rejections": 10_000}),
        }
    return parties, registry


def _conversation(vf: VectorFile, suite: str, comment: str, limits: dict | None = None, seed: str = "") -> GroupWriter:
    parties, registry = _parties(limits, seed)
    return vf.group(type="EndpointConversation", suite=suite, comment=comment, parties=parties, registry=registry)


def _endpoint_header(suite: str) -> list[str]:
    return [
        f"Scripted {suite}-suite conversations. Build one Endpoint per party from the group setup "
        "(identity_private, registry, limits, session_seed, rng = seeded_rng(rng_seed)), then run the "
        "tests in order: send/rekey must output `output`; receive must rebuild `input` from "
        "`construction` and deliver `delivered` and output `output`, or raise `error_code` leaving "
        "the endpoint's state unchanged; bulk sends `count` copies of `message` (meta.i = index) "
        "and delivers each, `sha256` covering u32be(len)||envelope of each; keys exposes the "
        "traffic keys an endpoint holds for a peer.",
    ]


def _deliver(g: GroupWriter, tc: int, party: str, comment: str, index: int = 0, expect: str | None = "valid") -> int:
    return g.add("receive", comment, expect=expect, party=party, construction=_output(tc, index))


def _neg(g: GroupWriter, party: str, comment: str, code: str | None, construction: dict) -> int:
    return g.add("receive", comment, expect=code or "invalid", party=party, construction=construction)


def _send(g: GroupWriter, comment: str, mtype: str, sender: str, receiver: str, **kw: Any) -> int:
    return g.add("send", comment, party=sender, message=_m(mtype, sender, receiver, **kw))


def plaintext_vectors() -> dict[str, Any]:
    vf = VectorFile("endpoint", _endpoint_header("plaintext"))
    g = _conversation(vf, "plaintext", "coordinator, source and target over the plaintext suite (ablation)")
    c = _send(g, "coordinator -> source control", "control", "coordinator", "source", meta={"op": "fit"}, round=1)
    _deliver(g, c, "source", "source accepts the control message")
    sends = {}
    for mtype, (a, b) in {
        "artifact": ("source", "target"),
        "request": ("target", "source"),
        "gradient": ("target", "source"),
        "report": ("target", "coordinator"),
        "ack": ("source", "coordinator"),
        "error": ("target", "coordinator"),
        "bye": ("coordinator", "target"),
    }.items():
        arrays = _emb() if mtype in ("artifact", "gradient", "report") else {}
        sends[mtype] = _send(g, f"{a} -> {b} {mtype}", mtype, a, b, arrays=arrays, meta={"n": 1})
        _deliver(g, sends[mtype], b, f"{b} accepts the {mtype}")
    art = sends["artifact"]
    _neg(g, "target", "replayed artifact", "REPLAY", _output(art))
    _neg(g, "coordinator", "artifact for target delivered to coordinator", "WRONG_RECEIVER", _output(art))
    _neg(g, "target", "session id of another seed", "WRONG_SESSION", _set_header(art, session_id=b"\xaa" * 16, seq=50))
    _neg(g, "target", "epoch 5 while epoch 0 is current", "WRONG_EPOCH", _set_header(art, epoch=5, seq=50))
    _neg(g, "target", "sender not in the registry", "UNKNOWN_PEER", _set_header(art, sender="mallory", seq=50))
    _neg(g, "target", "sender claims to be the receiver itself", "UNKNOWN_PEER", _set_header(art, sender="target", seq=50))
    secure = _secure_header(type="artifact", sender="source", receiver="target", body_length=20)
    _neg(
        g,
        "target",
        "secure envelope to a plaintext endpoint",
        "UNSUPPORTED_SUITE",
        _frame(secure, body=bytes(20), flags=FLAG_ENCRYPTED_BODY),
    )
    bigger = _manifest(("user_ids", "int64", [3]), ("emb", "float32", [4, 4]))
    _neg(
        g,
        "target",
        "manifest altered in transit (no integrity in plaintext: caught only as a mismatch)",
        "MANIFEST_MISMATCH",
        _set_header(art, seq=50, manifest=bigger),
    )
    complex_ = _manifest(("user_ids", "int64", [3]), ("emb", "complex64", [3, 2]))
    _neg(g, "target", "disallowed dtype", "DISALLOWED_DTYPE", _set_header(art, seq=50, manifest=complex_))
    g.add(
        "receive",
        "plaintext has no integrity: a flipped body bit (and a fresh seq) goes unnoticed",
        party="target",
        construction=_mutate(art, {"op": "flip", "offset": len(g.out(art)) - 1, "bit": 0}, {"op": "header", "set": {"seq": 50}}),
    )
    # Reordering within the window.
    m1 = _send(g, "source -> target artifact #1", "artifact", "source", "target", arrays=_emb(seed=1))
    m2 = _send(g, "source -> target artifact #2", "artifact", "source", "target", arrays=_emb(seed=2))
    _deliver(g, m2, "target", "#2 arrives first")
    _deliver(g, m1, "target", "#1 arrives late but inside the window")
    held = _send(g, "source -> target, held back for later", "ack", "source", "target", meta={"held": True})
    g.add("rekey", "source moves to epoch 1 (plaintext: no handshake, nothing on the wire)", party="source", peer="target")
    e1 = _send(g, "first epoch-1 message", "ack", "source", "target")
    _deliver(g, e1, "target", "target follows to epoch 1")
    _deliver(g, held, "target", "a late epoch-0 message is still accepted (previous epoch)")
    g.add("rekey", "source moves to epoch 2", party="source", peer="target")
    e2 = _send(g, "first epoch-2 message", "ack", "source", "target")
    _deliver(g, e2, "target", "target follows to epoch 2")
    _neg(g, "target", "epoch 0 is no longer accepted", "WRONG_EPOCH", _set_header(held, seq=99))
    old = _send(g, "source -> target, held back past the window", "ack", "source", "target", meta={"old": True})
    g.add(
        "bulk",
        f"{REPLAY_WINDOW + 6} messages move the window on",
        party="source",
        peer="target",
        count=REPLAY_WINDOW + 6,
        message=_m("ack", "source", "target"),
    )
    _deliver(g, old, "target", "older than the replay window", expect="STALE")
    z = _send(g, "coordinator -> target bye", "bye", "coordinator", "target")
    _neg(g, "target", "sequence number 0 is never valid", "STALE", _set_header(z, seq=0))
    _deliver(g, z, "target", "the genuine bye")
    return vf.finish()


def _seal_case(state: Any, header: dict[str, Any], inner: bytes) -> dict[str, Any]:
    """An envelope sealed with the sender's real traffic keys (published by a `keys` step)."""
    header = dict(header, body_length=len(inner) + 16)
    return {"kind": "seal", "key": state.send.key.hex(), "iv": state.send.iv.hex(), "inner": inner.hex(), "header": value_to_json(header)}


def secure_vectors() -> dict[str, Any]:
    vf = VectorFile("endpoint", _endpoint_header("secure"))
    g = _conversation(vf, "secure", "handshakes, every message type, tampering, replay, rekeying")
    # Handshake coordinator -> source, carrying a control message.
    c = _send(
        g,
        "coordinator -> source control: no session yet, so an hs_init goes out and the control waits",
        "control",
        "coordinator",
        "source",
        meta={"op": "fit"},
        round=1,
    )
    r = _deliver(g, c, "source", "source answers hs_init with a signed hs_resp")
    f = _deliver(g, r, "coordinator", "coordinator verifies hs_resp, sends hs_finish and the queued control")
    _deliver(g, f, "source", "source verifies hs_finish: session established", index=0)
    _deliver(g, f, "source", "source opens the control message", index=1)
    g.add("keys", "traffic keys of coordinator towards source (epoch 0)", party="coordinator", peer="source")
    g.add("keys", "traffic keys of source towards coordinator (epoch 0)", party="source", peer="coordinator")

    # Handshake source -> target, with handshake negatives along the way.
    a = _send(g, "source -> target artifact: hs_init goes out", "artifact", "source", "target", arrays=_emb(), meta={"kind": "embeddings"})
    init = g.out(a)
    empty_inner = inner_plaintext(b"", [])
    no_session = _secure_header(
        type="artifact",
        sender="source",
        receiver="target",
        session_id=split_frame(init)[2]["session_id"],
        body_length=len(empty_inner) + 16,
    )
    _neg(
        g,
        "target",
        "app message before any session exists",
        "NOT_ESTABLISHED",
        {"kind": "seal", "key": "00" * 32, "iv": "00" * 12, "inner": empty_inner.hex(), "header": value_to_json(no_session)},
    )
    _neg(
        g,
        "target",
        "hs_init with a low-order ephemeral key (u=0)",
        "HANDSHAKE_FAILED",
        _mutate(a, {"op": "set_bytes", "offset": _find_eph(init), "hex": LOW_ORDER_POINT.hex()}),
    )
    _neg(
        g,
        "target",
        "hs_init offering only the plaintext suite",
        "DOWNGRADE",
        _mutate(a, {"op": "payload", "set": {"suites": ["plaintext"]}}),
    )
    _neg(g, "target", "hs_init offering only version 2", "UNSUPPORTED_VERSION", _mutate(a, {"op": "payload", "set": {"versions": [2]}}))
    _neg(g, "target", "hs_init from a sender that is not in the registry", "UNKNOWN_PEER", _set_header(a, sender="mallory"))
    _neg(g, "target", "hs_init for epoch 3 without a session", "WRONG_EPOCH", _set_header(a, epoch=3))
    _neg(g, "target", "hs_init with seq 1", "HANDSHAKE_FAILED", _set_header(a, seq=1))
    _neg(
        g,
        "target",
        "plaintext envelope to a secure endpoint (downgrade)",
        "DOWNGRADE",
        {"kind": "plaintext", "message": _m("artifact", "source", "target", arrays=_emb())},
    )
    mitm = g.add(
        "receive",
        "an attacker rewrote the offered suites to ['secure', 'plaintext']; target (unaware) answers",
        party="target",
        construction=_mutate(a, {"op": "payload", "set": {"suites": ["secure", "plaintext"]}}),
    )
    _neg(g, "source", "hs_resp signed over the rewritten transcript: source detects the mismatch", "HANDSHAKE_FAILED", _output(mitm))
    resp = _deliver(g, a, "target", "target answers the genuine hs_init (replacing the tampered attempt)")
    resp_env = g.out(resp)
    _neg(
        g,
        "source",
        "hs_resp with one signature bit flipped",
        "HANDSHAKE_FAILED",
        _mutate(resp, {"op": "flip", "offset": len(resp_env) - 1, "bit": 7}),
    )
    _neg(
        g,
        "source",
        "hs_resp with a flipped bit in the responder's ephemeral key",
        "HANDSHAKE_FAILED",
        _mutate(resp, {"op": "flip", "offset": _find_eph(resp_env), "bit": 0}),
    )
    chosen = resp_env.rindex(b"fsecure") + 1  # the payload's chosen suite (the header's comes first)
    _neg(
        g,
        "source",
        "hs_resp choosing the plaintext suite (re-signed by nobody: signature fails first)",
        "HANDSHAKE_FAILED",
        _mutate(resp, {"op": "set_bytes", "offset": chosen, "hex": b"plain!".hex()}),
    )
    _neg(g, "coordinator", "hs_resp delivered to a party that never started a handshake with target", "WRONG_RECEIVER", _output(resp))
    fin = _deliver(g, resp, "source", "source verifies hs_resp; hs_finish and the queued artifact go out")
    fin_env = g.out(fin)
    _neg(
        g,
        "target",
        "hs_finish with a flipped signature bit",
        "HANDSHAKE_FAILED",
        _mutate(fin, {"op": "flip", "offset": len(fin_env) - 10, "bit": 2}),
    )
    _neg(g, "target", "queued artifact before hs_finish: no session yet", "NOT_ESTABLISHED", _output(fin, 1))
    _deliver(g, fin, "target", "target verifies hs_finish", index=0)
    _neg(g, "target", "hs_finish replayed", "HANDSHAKE_FAILED", _output(fin, 0))
    _deliver(g, fin, "target", "target opens the artifact", index=1)
    g.add("keys", "traffic keys of source towards target (epoch 0)", party="source", peer="target")
    g.add("keys", "traffic keys of target towards source (epoch 0)", party="target", peer="source")

    # Every application type over the secure suite.
    for mtype, (x, y) in {
        "request": ("target", "source"),
        "gradient": ("target", "source"),
        "artifact": ("source", "target"),
        "ack": ("source", "coordinator"),
        "error": ("source", "coordinator"),
        "bye": ("coordinator", "source"),
        "control": ("coordinator", "source"),
    }.items():
        arrays = _emb(seed=3) if mtype in ("artifact", "gradient") else {}
        sent = _send(g, f"{x} -> {y} {mtype}", mtype, x, y, arrays=arrays, meta={"op": mtype}, round=2)
        _deliver(g, sent, y, f"{y} opens the {mtype}")
    report_arrays = {"users": np.arange(3, dtype=np.int64), "hr": np.array([1.0, 0.0, 1.0])}
    rep = _send(
        g,
        "target -> coordinator report: a third handshake starts",
        "report",
        "target",
        "coordinator",
        arrays=report_arrays,
        meta={"op": "evaluate", "utility": {"HR@10": 0.6667}},
    )
    r2 = _deliver(g, rep, "coordinator", "coordinator answers target's hs_init")
    f2 = _deliver(g, r2, "target", "target finishes and sends the report")
    _deliver(g, f2, "coordinator", "coordinator verifies hs_finish", index=0)
    _deliver(g, f2, "coordinator", "coordinator opens the report", index=1)

    # Tampering with an established-session envelope.
    e = _send(
        g,
        "source -> target artifact used for the tampering cases",
        "artifact",
        "source",
        "target",
        arrays=_emb(seed=4),
        meta={"kind": "embeddings"},
    )
    env = g.out(e)
    hl = PREFIX.unpack_from(env, 0)[3]
    body = PREFIX_LEN + hl

    def mut(*ms: dict) -> dict:
        return _mutate(e, *ms)

    _neg(g, "target", "bit flip in the magic", "BAD_MAGIC", mut({"op": "flip", "offset": 1, "bit": 3}))
    _neg(g, "target", "wire version 2", "UNSUPPORTED_VERSION", mut({"op": "set_bytes", "offset": 4, "hex": "02"}))
    _neg(g, "target", "encrypted-body flag cleared", "MALFORMED_HEADER", mut({"op": "flip", "offset": 5, "bit": 0}))
    _neg(g, "target", "top bit of the header length set", "OVERSIZED", mut({"op": "flip", "offset": 6, "bit": 7}))
    for i in range(PREFIX_LEN, body):
        _neg(g, "target", f"bit flip in header byte {i - PREFIX_LEN}", None, mut({"op": "flip", "offset": i, "bit": (i * 5) % 8}))
    _neg(g, "target", "bit flip in the first ciphertext byte", "AUTH_FAILED", mut({"op": "flip", "offset": body, "bit": 0}))
    _neg(
        g,
        "target",
        "bit flip in the middle of the ciphertext",
        "AUTH_FAILED",
        mut({"op": "flip", "offset": (body + len(env)) // 2, "bit": 6}),
    )
    _neg(g, "target", "bit flip in the tag", "AUTH_FAILED", mut({"op": "flip", "offset": len(env) - 1, "bit": 1}))
    _neg(
        g,
        "target",
        "tag removed (body_length fixed up)",
        "AUTH_FAILED",
        mut({"op": "truncate", "length": len(env) - 16}, {"op": "header", "set": {"body_length": len(env) - 16 - body}}),
    )
    _neg(g, "target", "last byte missing", "TRUNCATED", mut({"op": "truncate", "length": len(env) - 1}))
    _neg(g, "target", "cut inside the header", "TRUNCATED", mut({"op": "truncate", "length": PREFIX_LEN + 5}))
    _neg(g, "target", "one byte appended", "MALFORMED_HEADER", mut({"op": "append", "hex": "00"}))
    _neg(g, "target", "body_length of 2^40", "OVERSIZED", _set_header(e, body_length=2**40))
    dup = raw_cbor_map([("seq", 1), *split_frame(env)[2].items()])
    _neg(
        g,
        "target",
        "header with a duplicate key",
        "DUPLICATE_KEY",
        {"kind": "frame", "flags": FLAG_ENCRYPTED_BODY, "body": env[body:].hex(), "header_cbor": dup.hex()},
    )
    _neg(g, "target", "unknown message type", "UNKNOWN_MESSAGE_TYPE", _set_header(e, type="exfiltrate"))
    _neg(g, "target", "unknown suite", "UNSUPPORTED_SUITE", _set_header(e, suite="null-cipher"))
    _neg(g, "coordinator", "delivered to the wrong party", "WRONG_RECEIVER", _output(e))
    _neg(g, "target", "session id changed", "WRONG_SESSION", _set_header(e, session_id=b"\xaa" * 16))
    _neg(g, "target", "epoch changed to 7", "WRONG_EPOCH", _set_header(e, epoch=7))
    _neg(g, "target", "round changed (every header byte is associated data)", "AUTH_FAILED", _set_header(e, round=9))
    _neg(g, "target", "seq changed (nonce and associated data)", "AUTH_FAILED", _set_header(e, seq=1000))
    _neg(g, "target", "reply_to added", "AUTH_FAILED", _set_header(e, reply_to=1))
    coordinator_sid = g.state("coordinator", "target").session_id
    _neg(
        g,
        "target",
        "sender changed to coordinator (no session with that sender's keys)",
        "AUTH_FAILED",
        _set_header(e, sender="coordinator", session_id=coordinator_sid),
    )
    _deliver(g, e, "target", "the genuine envelope is still accepted after all rejections")
    _neg(g, "target", "replayed", "REPLAY", _output(e))

    # Authentic envelopes (sealed with the sender's real keys) whose inner manifest is bad.
    st = g.state("source", "target")
    header = _secure_header(
        type="artifact", sender="source", receiver="target", session_id=st.session_id, epoch=st.send.epoch, seq=st.send.seq + 1
    )
    body4 = stn.save({"x": np.arange(4, dtype=np.float32)})
    dup_inner = raw_cbor_map([("meta", {}), ("meta", {}), ("manifest", _manifest(("x", "float32", [4])))])
    for comment, code, inner in [
        (
            "authentic envelope whose manifest names dtype complex64",
            "DISALLOWED_DTYPE",
            inner_plaintext(bytes(16), _manifest(("x", "complex64", [2]))),
        ),
        (
            "authentic envelope whose manifest says 3 floats, body holds 4",
            "MANIFEST_MISMATCH",
            inner_plaintext(body4, _manifest(("x", "float32", [3]))),
        ),
        (
            "authentic envelope whose manifest says int32, body holds float32",
            "MANIFEST_MISMATCH",
            inner_plaintext(body4, _manifest(("x", "int32", [4]))),
        ),
        (
            "authentic envelope with a duplicate key in the inner header",
            "DUPLICATE_KEY",
            body4 + dup_inner + INNER_TRAILER.pack(len(dup_inner)),
        ),
    ]:
        _neg(g, "target", comment, code, _seal_case(st, header, inner))

    # Reordering, then stale.
    m1 = _send(g, "artifact #1", "artifact", "source", "target", arrays=_emb(seed=5))
    m2 = _send(g, "artifact #2", "artifact", "source", "target", arrays=_emb(seed=6))
    _deliver(g, m2, "target", "#2 first")
    _deliver(g, m1, "target", "#1 late, inside the window")
    old = _send(g, "ack held back past the window", "ack", "source", "target", meta={"old": True})
    g.add(
        "bulk",
        f"{REPLAY_WINDOW + 6} messages move the window on",
        party="source",
        peer="target",
        count=REPLAY_WINDOW + 6,
        message=_m("ack", "source", "target"),
    )
    _deliver(g, old, "target", "older than the replay window", expect="STALE")

    # Rekeying.
    held = _send(g, "epoch-0 ack held back across the rekey", "ack", "source", "target", meta={"held": True})
    rk = g.add("rekey", "source starts epoch 1", party="source", peer="target")
    _send(g, "sent during the rekey: queued until epoch 1 is established", "gradient", "source", "target", arrays=_emb(seed=7))
    rr = _deliver(g, rk, "target", "target answers the epoch-1 hs_init")
    rf = _deliver(g, rr, "source", "source completes epoch 1 and flushes the queued gradient")
    _deliver(g, rf, "target", "target completes epoch 1", index=0)
    _deliver(g, rf, "target", "target opens the epoch-1 gradient", index=1)
    g.add("keys", "traffic keys of source towards target (epoch 1)", party="source", peer="target")
    _deliver(g, held, "target", "late epoch-0 ack: the previous epoch is still accepted")
    _neg(g, "target", "old epoch-0 hs_init replayed after the rekey", "WRONG_EPOCH", _output(a))
    rk2 = g.add("rekey", "target starts epoch 2", party="target", peer="source")
    rr2 = _deliver(g, rk2, "source", "source answers")
    rf2 = _deliver(g, rr2, "target", "target completes epoch 2")
    _deliver(g, rf2, "source", "source completes epoch 2", index=0)
    _neg(g, "target", "an epoch-0 envelope after two rekeys", "WRONG_EPOCH", _output(fin, 1))
    z = _send(g, "source -> target in epoch 2", "bye", "source", "target")
    _deliver(g, z, "target", "target opens it")
    _neg(
        g,
        "target",
        "seq 0 (sequence numbers start at 1) - authentic envelope",
        "STALE",
        _seal_case(g.state("source", "target"), dict(header, epoch=2, seq=0), inner_plaintext(b"", [])),
    )

    # Simultaneous initiation.
    g2 = _conversation(vf, "secure", "simultaneous handshake initiation resolves deterministically", seed="simultaneous/")
    s1 = _send(g2, "source -> target, hs_init", "artifact", "source", "target", arrays=_emb())
    t1 = _send(g2, "target -> source at the same time, hs_init", "request", "target", "source", meta={"op": "scores"})
    _deliver(g2, t1, "source", "source ('source' < 'target') ignores target's hs_init: its own wins")
    r = _deliver(g2, s1, "target", "target drops its own attempt and answers source's hs_init")
    f = _deliver(g2, r, "source", "source finishes and sends its queued artifact")
    fo = _deliver(g2, f, "target", "target finishes and flushes its queued request", index=0)
    _deliver(g2, f, "target", "target opens the artifact", index=1)
    _deliver(g2, fo, "source", "source opens the request")

    # Cut-off after max_rejections.
    g3 = _conversation(
        vf,
        "secure",
        "a peer is cut off after Limits.max_rejections rejected envelopes",
        limits={"target": {"max_rejections": 3}},
        seed="cutoff/",
    )
    s = _send(g3, "source -> target", "ack", "source", "target")
    r = _deliver(g3, s, "target", "handshake")
    f = _deliver(g3, r, "source", "handshake")
    _deliver(g3, f, "target", "handshake", index=0)
    _deliver(g3, f, "target", "ack delivered", index=1)
    for i in range(3):
        _neg(g3, "target", f"rejection {i + 1} of 3 from source (replay)", "REPLAY", _output(f, 1))
    s2 = _send(g3, "a genuine message from source", "ack", "source", "target")
    _deliver(g3, s2, "target", "source is cut off: even a genuine envelope is refused", expect="PEER_CUT_OFF")
    c = _send(g3, "coordinator -> target", "bye", "coordinator", "target")
    _deliver(g3, c, "target", "other peers are unaffected (handshake)")
    return vf.finish()


def _find_eph(envelope: bytes) -> int:
    """Offset of the 32-byte 'eph' value in a handshake envelope."""
    marker = cbor.dumps("eph") + b"\x58\x20"
    return envelope.index(marker) + len(marker)


# --------------------------------------------------------------------------- main


def build_all() -> dict[str, dict[str, Any]]:
    return {
        "codec.json": codec_vectors(),
        "endpoint_plaintext.json": plaintext_vectors(),
        "endpoint_secure.json": secure_vectors(),
    }


def dump(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=GENERATOR, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the files instead of writing them")
    parser.add_argument("--out", type=Path, default=VECTOR_DIR, help="directory (default: protocol/vectors)")
    args = parser.parse_args(argv)
    documents = build_all()
    stale = []
    for name, document in documents.items():
        n = replay(copy.deepcopy(document))  # self-check: the files must replay
        path = args.out / name
        text = dump(document)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        print(f"{name}: {n} tests{' (stale)' if name in stale else ''}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run {GENERATOR}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
