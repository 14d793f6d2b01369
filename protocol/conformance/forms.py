"""JSON forms of the values, messages and envelopes that vector files hold (PROTOCOL.md §12.1).

- A byte string is {"$bytes": hex}; a non-finite float is {"$float": "nan" | "inf" | "-inf"};
  every other JSON value stands for itself.
- An array is {"dtype", "shape", "data": hex of its little-endian C-order bytes}; as an input
  it may instead give "repeat": hex, a pattern repeated (and cut) to fill the shape; in an
  observed message an array of more than BIG bytes is {"dtype", "shape", "sha256"}.
- An envelope is its hex, or {"sha256", "length"} when longer than BIG bytes.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

from ..message import Message

BIG = 64 * 1024  # larger arrays and envelopes are recorded by digest, not by value


def value_to_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bytes": value.hex()}
    if isinstance(value, dict):
        return {k: value_to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [value_to_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
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


def envelope_to_json(data: bytes) -> Any:
    if len(data) > BIG:
        return {"sha256": hashlib.sha256(data).hexdigest(), "length": len(data)}
    return data.hex()


def _wire_dtype(name: str) -> np.dtype:
    return np.dtype("?") if name == "bool" else np.dtype(name).newbyteorder("<")


def array_to_json(arr: Any) -> dict[str, Any]:
    a = np.asarray(arr)
    name = "bool" if a.dtype == np.bool_ else a.dtype.name
    raw = np.ascontiguousarray(a).astype(_wire_dtype(name)).tobytes()
    out: dict[str, Any] = {"dtype": name, "shape": list(a.shape)}
    if len(raw) > BIG:
        out["sha256"] = hashlib.sha256(raw).hexdigest()
    else:
        out["data"] = raw.hex()
    return out


def array_from_json(spec: dict[str, Any]) -> np.ndarray:
    dtype = _wire_dtype(spec["dtype"])
    count = math.prod(spec["shape"])
    if "repeat" in spec:
        pattern = bytes.fromhex(spec["repeat"])
        n = count * dtype.itemsize
        raw = (pattern * (n // len(pattern) + 1))[:n]
    else:
        raw = bytes.fromhex(spec["data"])
    return np.frombuffer(raw, dtype=dtype).reshape(spec["shape"]).copy()


def message_to_json(msg: Message, *, full: bool = False) -> dict[str, Any]:
    """Defaults (round 0, reply_to null, meta {}, arrays {}) are written out; the binding
    fields (session_id, epoch, seq, suite) only when set or when `full`."""
    out: dict[str, Any] = {
        "type": msg.type,
        "sender": msg.sender,
        "receiver": msg.receiver,
        "round": msg.round,
        "reply_to": msg.reply_to,
        "meta": value_to_json(dict(msg.meta)),
        "arrays": {name: array_to_json(a) for name, a in msg.arrays.items()},
    }
    if full or msg.session_id or msg.epoch or msg.seq:
        out.update(session_id=msg.session_id.hex(), epoch=msg.epoch, seq=msg.seq, suite=msg.suite)
    return out


def message_from_json(obj: dict[str, Any]) -> Message:
    extra = {}
    if "session_id" in obj:
        extra = dict(session_id=bytes.fromhex(obj["session_id"]), epoch=obj["epoch"], seq=obj["seq"], suite=obj["suite"])
    return Message(
        type=obj["type"],
        sender=obj["sender"],
        receiver=obj["receiver"],
        arrays={name: array_from_json(spec) for name, spec in obj.get("arrays", {}).items()},
        meta=value_from_json(obj.get("meta", {})),
        round=obj.get("round", 0),
        reply_to=obj.get("reply_to"),
        **extra,
    )
