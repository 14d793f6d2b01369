"""codec.json, later groups: rules that a codec can break while passing group 1.

Each case pins one rule of PROTOCOL.md so that changing the rule fails at least one vector:
the order of the CBOR checks, the format limits counted exactly, JSON escaping of names, the
empty body, and which error wins when two checks of §9 fail at once.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import safetensors.numpy as stn

from ..message import Message
from .constructions import canonical, raw_cbor_map
from .forms import message_to_json
from .writer import VectorFile, frame_of, header_fields, manifest, mutated, nest, with_meta_bytes

SID = bytes.fromhex("00112233445566778899aabbccddeeff")
ESCAPED_NAME = 'a"\\\b\f\n\r\t\x01\x1f\x7f\u2028é/'  # every escaping rule of §4 in one name


def _encode(g, comment: str, expect: str = "valid", limits: dict | None = None, **kw: Any) -> int:
    message = Message(**{"type": "artifact", "sender": "source", "receiver": "target", "session_id": SID, "seq": 1, **kw})
    extra = {"limits": limits} if limits else {}
    return g.add("encode", comment, expect=expect, message=message_to_json(message), **extra)


def _decode(g, comment: str, expect: str, construction: dict, **kw: Any) -> int:
    return g.add("decode", comment, expect=expect, construction=construction, **kw)


def _artifact_frame(name: str, body: bytes, dtype: str = "uint8", shape: list[int] | None = None) -> dict:
    header = header_fields(type="artifact", manifest=manifest((name, dtype, shape or [1])), body_length=len(body), meta={})
    return frame_of(header, body=body)


def _safetensors(json_text: bytes, data: bytes) -> bytes:
    """A safetensors buffer with a hand-written JSON header (padded with spaces like §4)."""
    json_text += b" " * (-len(json_text) % 8)
    return struct.pack("<Q", len(json_text)) + json_text + data


def add_groups(vf: VectorFile) -> None:
    _cbor_order(vf)
    _format_limits(vf)
    _escaping_and_empty_body(vf)
    _check_order(vf)


def _cbor_order(vf: VectorFile) -> None:
    g = vf.group(
        type="PlaintextCodec",
        comment="§3.1 check order: the whole item must be well-formed CBOR of the data model "
        "(MALFORMED_HEADER), then keys unique (DUPLICATE_KEY), then canonical (MALFORMED_HEADER)",
    )
    dup = b"\xa2\x61a\x01\x61a"  # meta {"a": 1, "a": <value>} - the value follows
    for comment, value, code in [
        ("duplicate key whose value is a tag", b"\xc1\x01", "MALFORMED_HEADER"),
        ("duplicate key whose value is invalid UTF-8", b"\x61\xff", "MALFORMED_HEADER"),
        ("duplicate key whose value has indefinite length", b"\x9f\xff", "MALFORMED_HEADER"),
        ("duplicate key whose value is undefined", b"\xf7", "MALFORMED_HEADER"),
        ("duplicate key whose value is simple value 16", b"\xf0", "MALFORMED_HEADER"),
        ("duplicate key whose value is a non-shortest float (1.0 as a double)", b"\xfb\x3f\xf0\x00\x00\x00\x00\x00\x00", "DUPLICATE_KEY"),
        ("duplicate key whose value is a non-shortest integer (1 as 0x1801)", b"\x18\x01", "DUPLICATE_KEY"),
        ("duplicate key whose value is an integer key map (not the data model)", b"\xa1\x01\x02", "MALFORMED_HEADER"),
    ]:
        _decode(g, comment, code, with_meta_bytes(dup + value))
    late = canonical(header_fields(meta={}, sender="coordinatoX")).replace(b"dmeta\xa0", b"dmeta" + dup + b"\x02")
    _decode(
        g,
        "duplicate key in meta, invalid UTF-8 later in the header",
        "MALFORMED_HEADER",
        frame_of(late.replace(b"coordinatoX", b"coordinato\xff")),
    )
    _decode(
        g, "duplicate key, then a tag later in the same map", "MALFORMED_HEADER", with_meta_bytes(b"\xa3\x61a\x01\x61a\x02\x61b\xc1\x01")
    )
    _decode(
        g, "duplicate key in a map whose keys are also out of order", "DUPLICATE_KEY", with_meta_bytes(b"\xa3\x61b\x01\x61a\x01\x61a\x02")
    )
    _decode(
        g,
        "the same key text once with a non-shortest length: keys compare by value",
        "DUPLICATE_KEY",
        with_meta_bytes(b"\xa2\x61a\x01\x78\x01a\x02"),
    )
    _decode(g, "text key in a non-shortest length, not repeated", "MALFORMED_HEADER", with_meta_bytes(b"\xa1\x78\x01a\x01"))
    _decode(g, "byte-string map key", "MALFORMED_HEADER", with_meta_bytes(b"\xa1\x41a\x01"))
    _decode(g, "reserved additional information 28", "MALFORMED_HEADER", with_meta_bytes(b"\xa1\x61a\x1c"))
    _decode(g, "a lone break byte", "MALFORMED_HEADER", with_meta_bytes(b"\xa1\x61a\xff"))
    _decode(g, "NaN with a payload (canonical NaN is f97e00)", "MALFORMED_HEADER", with_meta_bytes(b"\xa1\x61a\xf9\x7e\x01"))
    _decode(g, "1.5 as a single-precision float (half is exact)", "MALFORMED_HEADER", with_meta_bytes(b"\xa1\x61a\xfa\x3f\xc0\x00\x00"))
    _decode(g, "an array that claims 2^32 elements", "MALFORMED_HEADER", with_meta_bytes(b"\xa1\x61a\x9a\xff\xff\xff\xff"))
    _decode(
        g, "a byte string that claims 2^40 bytes", "MALFORMED_HEADER", with_meta_bytes(b"\xa1\x61a\x5b\x00\x00\x01\x00\x00\x00\x00\x00")
    )
    _decode(g, "-2^64, the smallest integer of the data model", "valid", frame_of(header_fields(meta={"a": -(2**64)})))
    _decode(g, "2^64-1, the largest integer of the data model", "valid", frame_of(header_fields(meta={"a": 2**64 - 1})))


def _format_limits(vf: VectorFile) -> None:
    g = vf.group(
        type="PlaintextCodec",
        comment="format limits, counted exactly: nesting levels (§3.1), names in code points, "
        "dimensions (§4); a sender refuses exactly what a receiver refuses (§10)",
    )
    _encode(g, "meta value 16 levels below meta (level 17 of the header): the deepest allowed", meta={"d": nest(15)})
    _encode(g, "meta value 17 levels below meta: the sender refuses it", "MALFORMED_HEADER", meta={"d": nest(16)})
    _decode(
        g, "meta value 17 levels below meta (level 18 of the header)", "MALFORMED_HEADER", frame_of(header_fields(meta={"d": nest(16)}))
    )
    _decode(g, "empty array 16 levels below meta", "valid", frame_of(header_fields(meta={"d": nest(15, [])})))
    long_name, too_long = "é" * 256, "é" * 257  # 512 and 514 UTF-8 bytes
    _encode(g, "sender name of 256 code points (512 UTF-8 bytes)", sender=long_name, type="bye")
    _encode(g, "sender name of 257 code points: the sender refuses it", "MALFORMED_HEADER", sender=too_long, type="bye")
    _decode(g, "receiver name of 257 code points", "MALFORMED_HEADER", frame_of(header_fields(receiver=too_long)))
    _decode(g, "sender name of 256 code points", "valid", frame_of(header_fields(sender=long_name)))
    _encode(g, "array name of 256 code points", arrays={long_name: np.zeros(1, dtype=np.uint8)})
    _encode(g, "array name of 257 code points: the sender refuses it", "MALFORMED_HEADER", arrays={too_long: np.zeros(1, dtype=np.uint8)})
    _decode(
        g,
        "manifest array name of 257 code points",
        "MALFORMED_HEADER",
        _artifact_frame(too_long, stn.save({too_long: np.zeros(1, dtype=np.uint8)})),
    )
    _encode(g, "array with 32 dimensions", arrays={"x": np.zeros([1] * 32, dtype=np.int8)})
    _encode(g, "array with 33 dimensions: the sender refuses it", "MALFORMED_HEADER", arrays={"x": np.zeros([1] * 33, dtype=np.int8)})
    _decode(g, "manifest shape with 33 dimensions", "MALFORMED_HEADER", _artifact_frame("x", bytes(1), "int8", [1] * 33))
    _encode(g, "largest epoch, seq, round and reply_to", epoch=2**32 - 1, seq=2**64 - 1, round=2**64 - 1, reply_to=2**64 - 1, type="ack")
    _encode(g, "header over the sender's own Limits.max_header_bytes=64", "OVERSIZED", limits={"max_header_bytes": 64}, type="ack")
    _encode(
        g,
        "more arrays than the sender's own Limits.max_arrays=1",
        "OVERSIZED",
        limits={"max_arrays": 1},
        arrays={"a": np.zeros(1), "b": np.zeros(1)},
    )


def _escaping_and_empty_body(vf: VectorFile) -> None:
    g = vf.group(type="PlaintextCodec", comment="§4: JSON escaping of array names as safetensors writes it, and the empty body")
    _encode(
        g,
        "array name with a quote, a backslash, JSON short escapes, U+0001, U+001F, DEL, U+2028, é and /",
        arrays={ESCAPED_NAME: np.arange(3, dtype=np.uint8)},
    )
    entry = b':{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}'
    _decode(
        g, "name 'x<DEL>' written raw, as safetensors does", "valid", _artifact_frame("x\x7f", _safetensors(b'{"x\x7f"' + entry, b"\x01"))
    )
    for raw_name, escaped, how in [
        ("x\x7f", b'{"x\\u007f"', "DEL escaped as \\u007f"),
        ("xé", b'{"x\\u00e9"', "é escaped as \\u00e9"),
        ("x/", b'{"x\\/"', "solidus escaped as \\/"),
    ]:
        _decode(g, f"name {raw_name!r} with {how}", "MANIFEST_MISMATCH", _artifact_frame(raw_name, _safetensors(escaped + entry, b"\x01")))
    _decode(
        g,
        "U+001F escaped in upper-case hex (\\u001F)",
        "MANIFEST_MISMATCH",
        _artifact_frame("x\x1f", _safetensors(b'{"x\\u001F"' + entry, b"\x01")),
    )
    _decode(
        g,
        "U+0001 escaped in lower-case hex, as safetensors does",
        "valid",
        _artifact_frame("x\x01", _safetensors(b'{"x\\u0001"' + entry, b"\x01")),
    )
    empty = stn.save({})  # 16 bytes: what safetensors writes for no tensors
    _decode(
        g,
        "no arrays but a body of safetensors.save({}) (the body must be empty)",
        "MANIFEST_MISMATCH",
        frame_of(header_fields(body_length=len(empty)), body=empty),
    )
    _encode(g, "no arrays: empty body", type="ack", meta={"op": "fit"})


def _check_order(vf: VectorFile) -> None:
    g = vf.group(type="PlaintextCodec", comment="§9 order: when two checks fail, the earlier one decides")
    base = _encode(g, "base envelope for the order cases", type="ack", meta={"op": "fit"})
    wire = g.out(base)

    def mut(*ms: dict) -> dict:
        return mutated(base, *ms)

    version2 = {"op": "set_bytes", "offset": 4, "hex": "02"}
    flag2 = {"op": "set_bytes", "offset": 5, "hex": "02"}
    _decode(
        g,
        "9 bytes with version byte 2: TRUNCATED (step 2) before UNSUPPORTED_VERSION (3)",
        "TRUNCATED",
        mut(version2, {"op": "truncate", "length": 9}),
    )
    _decode(
        g,
        "version byte 2 in an envelope over max_envelope_bytes: step 3 before 4",
        "UNSUPPORTED_VERSION",
        mut(version2),
        limits={"max_envelope_bytes": 32},
    )
    _decode(
        g,
        "reserved flag in an envelope over max_envelope_bytes: step 4 before 5",
        "OVERSIZED",
        mut(flag2),
        limits={"max_envelope_bytes": 32},
    )
    _decode(
        g,
        "reserved flag and a header over max_header_bytes: step 5 before 6",
        "MALFORMED_HEADER",
        mut(flag2),
        limits={"max_header_bytes": 16},
    )
    too_long = {"op": "set_bytes", "offset": 6, "hex": (len(wire) + 100).to_bytes(4, "big").hex()}
    _decode(
        g,
        "header_length over max_header_bytes and past the end: step 6 before 7",
        "OVERSIZED",
        mut(too_long),
        limits={"max_header_bytes": len(wire)},
    )
    no_epoch = [(k, v) for k, v in header_fields().items() if k != "epoch"]
    _decode(
        g,
        "duplicate key in a header that also lacks 'epoch': step 8 before 9",
        "DUPLICATE_KEY",
        frame_of(raw_cbor_map([("type", "control"), *no_epoch])),
    )
    for comment, fields, code in [
        ("header 'version' 2 and unknown suite: version field first", {"version": 2, "suite": "rot13"}, "MALFORMED_HEADER"),
        ("unknown suite and unknown type: suite first", {"suite": "rot13", "type": "exfiltrate"}, "UNSUPPORTED_SUITE"),
        ("unknown type and a field of the wrong type: type first", {"type": "exfiltrate", "epoch": "0"}, "UNKNOWN_MESSAGE_TYPE"),
        ("'suite' not text and unknown type: suite first", {"suite": 1, "type": "exfiltrate"}, "MALFORMED_HEADER"),
    ]:
        _decode(g, comment, code, frame_of(header_fields(**fields)))
    two_bad = [["x", "float32"], ["y"]]
    _decode(
        g,
        "more manifest entries than max_arrays, all malformed: OVERSIZED first",
        "OVERSIZED",
        frame_of(header_fields(manifest=two_bad)),
        limits={"max_arrays": 1},
    )
    body_cut = mutated(base, {"op": "header", "set": {"body_length": 2**40}})
    _decode(g, "announced envelope over the limit and too short: step 10 before 11", "OVERSIZED", body_cut)
    dup_bad = manifest(("x", "complex64", [1]), ("x", "complex64", [1]))
    _decode(
        g,
        "disallowed dtype and a repeated name: DISALLOWED_DTYPE first",
        "DISALLOWED_DTYPE",
        frame_of(header_fields(manifest=dup_bad, body_length=16), body=bytes(16)),
    )
