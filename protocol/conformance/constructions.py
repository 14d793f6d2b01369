"""How a vector's input envelope is rebuilt from its `construction` (PROTOCOL.md §12.1).

Written from the specification with cbor2, safetensors and cryptography only, never with the
codec under test, so that a change to the implementation cannot silently change its inputs.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import cbor2
import numpy as np
import safetensors.numpy as stn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .forms import message_from_json, value_from_json

MAGIC = b"CDRS"
PREFIX = struct.Struct(">4sBBI")
CHUNK = 2**24  # §7.5, restated here on purpose: the harness must not share the codec's constant
TAG = 16
# §4 layout order of dtypes (rank) and their safetensors codes.
DTYPE_ORDER = ("int64", "float64", "float32", "int32", "float16", "int16", "int8", "uint8", "bool")


def canonical(value: Any) -> bytes:
    return cbor2.dumps(value, canonical=True)


def raw_cbor_map(pairs: list[tuple[Any, Any]]) -> bytes:
    """A CBOR map with the pairs in the given order (duplicates allowed): for negative vectors."""
    n = len(pairs)
    head = bytes([0xA0 | n]) if n < 24 else bytes([0xB8, n])
    return head + b"".join(canonical(k) + canonical(v) for k, v in pairs)


def frame(
    header: bytes, body: bytes = b"", *, flags: int = 0, version: int = 1, magic: bytes = MAGIC, header_length: int | None = None
) -> bytes:
    length = len(header) if header_length is None else header_length
    return magic + struct.pack(">BBI", version, flags, length) + header + body


def split_frame(data: bytes) -> tuple[int, int, dict[str, Any], bytes]:
    _, version, flags, hl = PREFIX.unpack_from(data, 0)
    header = cbor2.loads(data[PREFIX.size : PREFIX.size + hl])
    return version, flags, header, data[PREFIX.size + hl :]


def safetensors_body(arrays: dict[str, np.ndarray]) -> bytes:
    return stn.save(arrays) if arrays else b""  # §4: no arrays, empty body


def manifest_of(arrays: dict[str, np.ndarray]) -> list[list[Any]]:
    def name_of(a: np.ndarray) -> str:
        return "bool" if a.dtype == np.bool_ else a.dtype.name

    order = sorted(arrays, key=lambda k: (DTYPE_ORDER.index(name_of(arrays[k])), k))
    return [[k, name_of(arrays[k]), list(arrays[k].shape)] for k in order]


def inner_plaintext(st_body: bytes, manifest: list, meta: dict | None = None) -> bytes:
    raw = canonical({"manifest": manifest, "meta": meta or {}})
    return st_body + raw + struct.pack(">I", len(raw))


def nonce(iv: bytes, seq: int, chunk: int) -> bytes:
    counter = seq.to_bytes(8, "big") + chunk.to_bytes(4, "big")
    return bytes(a ^ b for a, b in zip(iv, counter))


def seal(header: dict[str, Any], inner: bytes, key: bytes, iv: bytes, chunk_lengths: list[int] | None = None) -> bytes:
    """A secure application envelope; `chunk_lengths` forces a (possibly non-canonical) split."""
    if chunk_lengths is None:
        chunk_lengths = [min(CHUNK, len(inner) - i) for i in range(0, len(inner), CHUNK)] or [0]
    prefix = frame(canonical(header), flags=1)
    aead = ChaCha20Poly1305(key)
    parts, pos = [prefix], 0
    for i, n in enumerate(chunk_lengths):
        parts.append(aead.encrypt(nonce(iv, header["seq"], i), inner[pos : pos + n], prefix))
        pos += n
    return b"".join(parts)


def signed_handshake(header: dict[str, Any], payload: Any, key: bytes, context: bytes, transcript: bytes) -> bytes:
    """hs_resp / hs_finish signed with `key` over context || transcript || unsigned envelope (§7.3)."""
    raw = canonical(payload)
    unsigned = frame(canonical(dict(header, body_length=len(raw) + 64)), raw)
    return unsigned + Ed25519PrivateKey.from_private_bytes(key).sign(context + transcript + unsigned)


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
    elif op == "header":  # replace/delete header fields, re-encode canonically, keep flags and body
        version, flags, header, body = split_frame(data)
        header.update(value_from_json(mutation.get("set", {})))
        for key in mutation.get("delete", []):
            header.pop(key, None)
        return frame(canonical(header), body, flags=flags, version=version)
    elif op == "payload":  # replace fields of an unsigned handshake payload; fix body_length
        version, flags, header, body = split_frame(data)
        payload = cbor2.loads(body)
        payload.update(value_from_json(mutation["set"]))
        body = canonical(payload)
        return frame(canonical(dict(header, body_length=len(body))), body, flags=flags, version=version)
    elif op == "body":  # replace the whole body with raw bytes; fix body_length
        version, flags, header, _ = split_frame(data)
        body = bytes.fromhex(mutation["hex"])
        return frame(canonical(dict(header, body_length=len(body))), body, flags=flags, version=version)
    else:
        raise ValueError(f"unknown mutation {op!r}")
    return bytes(buf)


def _body(spec: dict[str, Any]) -> bytes:
    if "body_repeat" in spec:
        pattern, n = bytes.fromhex(spec["body_repeat"]["hex"]), spec["body_repeat"]["length"]
        return (pattern * (n // len(pattern) + 1))[:n]
    return bytes.fromhex(spec.get("body", ""))


def _inner(spec: dict[str, Any]) -> bytes:
    if "message" in spec:  # inner plaintext of a message, as §7.5 builds it
        msg = message_from_json(spec["message"])
        arrays = dict(msg.arrays)
        return inner_plaintext(safetensors_body(arrays), manifest_of(arrays), value_from_json(spec["message"].get("meta", {})))
    return bytes.fromhex(spec["inner"])


def build_input(construction: dict[str, Any], outputs: dict[int, list[bytes]]) -> bytes:
    """The envelope a construction describes; "mutations", if present, are applied last."""
    data = _build(construction, outputs)
    for m in construction.get("mutations", []):
        data = mutate(data, m)
    return data


def _build(construction: dict[str, Any], outputs: dict[int, list[bytes]]) -> bytes:
    kind = construction["kind"]
    if kind in ("output", "mutate"):  # an envelope an earlier step put on the wire
        return outputs[construction["tcId"]][construction.get("index", 0)]
    if kind == "frame":
        return frame(
            bytes.fromhex(construction["header_cbor"]),
            _body(construction),
            flags=construction.get("flags", 0),
            version=construction.get("version", 1),
            magic=bytes.fromhex(construction.get("magic", MAGIC.hex())),
            header_length=construction.get("header_length"),
        )
    if kind == "seal":
        header = value_from_json(construction["header"])
        key, iv = bytes.fromhex(construction["key"]), bytes.fromhex(construction["iv"])
        return seal(header, _inner(construction), key, iv, construction.get("chunk_lengths"))
    if kind == "signed_handshake":
        return signed_handshake(
            value_from_json(construction["header"]),
            value_from_json(construction["payload"]),
            bytes.fromhex(construction["signing_key"]),
            bytes.fromhex(construction["context"]),
            bytes.fromhex(construction["transcript"]),
        )
    raise ValueError(f"unknown construction {kind!r}")


def transcript_hash(*envelopes: bytes) -> bytes:
    """TH1 = SHA-256(hs_init); TH2 = SHA-256(TH1 || hs_resp) (§7.3)."""
    th = hashlib.sha256(envelopes[0]).digest()
    for env in envelopes[1:]:
        th = hashlib.sha256(th + env).digest()
    return th
