"""codec.json, group 1: stateless encode/decode of plaintext envelopes (PROTOCOL.md §2-§5)."""

from __future__ import annotations

from typing import Any

import numpy as np
import safetensors.numpy as stn

from ..message import Message
from . import codec_rules
from .constructions import PREFIX, canonical, raw_cbor_map
from .forms import message_to_json
from .writer import (
    VectorFile,
    emb,
    frame_of,
    header_fields,
    manifest,
    msg_json,
    mutated,
    output,
    secure_header,
    set_header,
    with_meta_bytes,
)

PREFIX_LEN = PREFIX.size
FLAG_ENCRYPTED_BODY = 0x01
CODEC_HEADER = [
    "Stateless plaintext codec. op=encode: encode(message[, limits=Limits(**limits)]) must equal "
    "`wire` and decode(wire) must give `decoded`, or encode must raise `error_code` (a sender "
    "refuses what a receiver would refuse). op=decode: rebuild `input` from `construction`, then "
    "decode(input, limits=Limits(**limits)) must raise `error_code` (or give `decoded` when valid).",
]


def _codec_examples() -> dict[str, dict[str, Any]]:
    return {
        "control": dict(sender="coordinator", receiver="source", meta={"op": "fit", "epochs": 5, "lr": 0.01}, round=1),
        "artifact": dict(
            sender="source",
            receiver="target",
            arrays=emb(),
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
    vf = VectorFile("codec", CODEC_HEADER)
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
    g.add("encode", "empty message with an unbound (zero) session id", message=msg_json("bye", "coordinator", "source"))

    art = base["artifact"]
    wire = g.out(art)
    hl = PREFIX.unpack_from(wire, 0)[3]
    body_start = PREFIX_LEN + hl

    def neg(comment: str, code: str, construction: dict, **kw: Any) -> int:
        return g.add("decode", comment, expect=code, construction=construction, **kw)

    def mut(*mutations: dict) -> dict:
        return mutated(art, *mutations)

    def manifest_is(*entries: tuple[str, str, list[int]]) -> dict:
        return set_header(art, manifest=manifest(*entries))

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
    neg("body_length of 2^40 bytes", "OVERSIZED", set_header(art, body_length=2**40))
    neg("envelope larger than Limits.max_envelope_bytes=256", "OVERSIZED", output(art), limits={"max_envelope_bytes": 256})
    neg("header larger than Limits.max_header_bytes=64", "OVERSIZED", output(art), limits={"max_header_bytes": 64})
    neg("more arrays than Limits.max_arrays=1", "OVERSIZED", output(art), limits={"max_arrays": 1})
    # Header CBOR
    h_ok = header_fields()
    neg("header is a CBOR array", "MALFORMED_HEADER", frame_of(canonical([1, 2, 3])))
    neg("header is not CBOR (0xff)", "MALFORMED_HEADER", frame_of(b"\xff"))
    neg("header length 0", "MALFORMED_HEADER", frame_of(b""))
    neg("header CBOR followed by an extra byte", "MALFORMED_HEADER", frame_of(canonical(h_ok) + b"\x00"))
    neg("header map keys not in canonical order", "MALFORMED_HEADER", frame_of(raw_cbor_map(sorted(h_ok.items()))))
    long_seq = canonical(header_fields(seq=1)).replace(b"cseq\x01", b"cseq\x1a\x00\x00\x00\x01")
    neg("integer not in shortest form (seq as 0x1a00000001)", "MALFORMED_HEADER", frame_of(long_seq))
    neg("indefinite-length header map", "MALFORMED_HEADER", frame_of(b"\xbf" + canonical(h_ok)[1:] + b"\xff"))
    neg("CBOR tag (epoch timestamp) in meta", "MALFORMED_HEADER", with_meta_bytes(b"\xa1ate\xc1\x1a\x51\x4b\x67\xb0"))
    bad_utf8 = canonical(header_fields(sender="coordinatoX")).replace(b"coordinatoX", b"coordinato\xff")
    neg("invalid UTF-8 in a text string", "MALFORMED_HEADER", frame_of(bad_utf8))
    neg("required field 'epoch' missing", "MALFORMED_HEADER", frame_of({k: v for k, v in h_ok.items() if k != "epoch"}))
    neg("unexpected field 'priority'", "MALFORMED_HEADER", frame_of({**h_ok, "priority": 1}))
    neg("manifest and meta in a secure-suite header", "MALFORMED_HEADER", frame_of({**h_ok, "suite": "secure"}, flags=1))
    neg("'epoch' is text", "MALFORMED_HEADER", frame_of(header_fields(epoch="0")))
    neg("'round' is a boolean", "MALFORMED_HEADER", frame_of(header_fields(round=True)))
    neg("'seq' is negative", "MALFORMED_HEADER", frame_of(header_fields(seq=-1)))
    neg("'seq' is a float", "MALFORMED_HEADER", frame_of(header_fields(seq=1.0)))
    neg("'epoch' above 2^32-1", "MALFORMED_HEADER", frame_of(header_fields(epoch=2**32)))
    neg("'session_id' of 15 bytes", "MALFORMED_HEADER", frame_of(header_fields(session_id=bytes(15))))
    neg("empty sender", "MALFORMED_HEADER", frame_of(header_fields(sender="")))
    neg("header 'version' field says 2", "MALFORMED_HEADER", frame_of(header_fields(version=2)))
    neg("meta is an array", "MALFORMED_HEADER", frame_of(header_fields(meta=[1])))
    neg("meta map with an integer key", "MALFORMED_HEADER", with_meta_bytes(b"\xa1\x01\x02"))
    neg("handshake type in the plaintext suite", "MALFORMED_HEADER", frame_of(header_fields(type="hs_init")))
    neg("manifest entry with two elements", "MALFORMED_HEADER", frame_of(header_fields(manifest=[["x", "float32"]])))
    neg("manifest shape with a negative dimension", "MALFORMED_HEADER", frame_of(header_fields(manifest=manifest(("x", "float32", [-1])))))
    neg("array named __metadata__", "MALFORMED_HEADER", frame_of(header_fields(manifest=manifest(("__metadata__", "float32", [1])))))
    neg("duplicate top-level key 'type'", "DUPLICATE_KEY", frame_of(raw_cbor_map([("type", "control"), *h_ok.items()])))
    neg("duplicate key inside meta", "DUPLICATE_KEY", with_meta_bytes(b"\xa2aa\x01aa\x02"))
    neg("unknown message type 'exfiltrate'", "UNKNOWN_MESSAGE_TYPE", frame_of(header_fields(type="exfiltrate")))
    neg("unknown suite 'rot13'", "UNSUPPORTED_SUITE", frame_of(header_fields(suite="rot13")))
    neg(
        "secure application envelope given to decode()",
        "ENCRYPTED",
        frame_of(secure_header(type="artifact", body_length=20), body=bytes(20), flags=FLAG_ENCRYPTED_BODY),
    )
    neg(
        "secure handshake envelope given to decode()",
        "ENCRYPTED",
        frame_of(secure_header(type="hs_init", seq=0, body_length=1), body=b"\xa0"),
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
        frame_of(header_fields(manifest=manifest(("x", "float32", [1]), ("x", "float32", [1])))),
    )
    neg("manifest omits an array present in the body", "MANIFEST_MISMATCH", manifest_is(("user_ids", "int64", [3])))
    neg("empty manifest with a non-empty body", "MANIFEST_MISMATCH", manifest_is())
    x2 = manifest(("x", "float32", [2]))
    with_meta = stn.save({"x": np.zeros(2, dtype=np.float32)}, metadata={"a": "b"})
    neg(
        "safetensors body with __metadata__",
        "MANIFEST_MISMATCH",
        frame_of(header_fields(type="artifact", manifest=x2, body_length=len(with_meta)), body=with_meta),
    )
    plain_st = stn.save({"x": np.zeros(2, dtype=np.float32)})
    bad_offsets = plain_st.replace(b'"data_offsets":[0,8]', b'"data_offsets":[8,0]')
    neg(
        "safetensors header with swapped data offsets",
        "MANIFEST_MISMATCH",
        frame_of(header_fields(type="artifact", manifest=x2, body_length=len(bad_offsets)), body=bad_offsets),
    )
    # dtype allow-list
    for dt in ("complex64", "float128", "object", "bfloat16", "uint16"):
        header = header_fields(type="artifact", manifest=manifest(("x", dt, [2])), body_length=16)
        neg(f"dtype {dt} is not allowed", "DISALLOWED_DTYPE", frame_of(header, body=bytes(16)))
    codec_rules.add_groups(vf)
    return vf.finish()
