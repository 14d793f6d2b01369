"""Stateless codec: framing, canonical bytes, safetensors body, header validation."""

from __future__ import annotations

import struct

import cbor2
import numpy as np
import pytest
import safetensors.numpy as stn

from protocol import ErrorCode, Limits, Message, ProtocolError, decode, encode, peek_header
from protocol.codec import parse_frame
from protocol.wire import MAGIC, PREFIX_LEN

SID = bytes(range(16))


def _art(**kw) -> Message:
    base = dict(
        type="artifact",
        sender="source",
        receiver="target",
        arrays={"emb": np.arange(12, dtype=np.float32).reshape(4, 3), "user_ids": np.arange(4, dtype=np.int64)},
        meta={"kind": "emb", "chunk": 0},
        round=2,
        reply_to=5,
        session_id=SID,
        epoch=1,
        seq=9,
    )
    base.update(kw)
    return Message(**base)


def _code(fn, *args, **kw) -> ErrorCode:
    with pytest.raises(ProtocolError) as info:
        fn(*args, **kw)
    return info.value.code


def test_round_trip_preserves_every_field():
    m = _art()
    back = decode(encode(m))
    assert back == m
    assert back.suite == "plaintext"
    assert back.arrays["emb"].flags.writeable  # receivers may work on the arrays in place
    assert list(back.arrays) == ["user_ids", "emb"]  # body order: int64 ranks before float32


def test_encoding_is_deterministic_and_order_independent():
    a = _art()
    b = _art(
        arrays={"user_ids": np.arange(4, dtype=np.int64), "emb": np.arange(12, dtype=np.float32).reshape(4, 3)},
        meta={"chunk": 0, "kind": "emb"},
    )
    assert encode(a) == encode(b)
    assert encode(a) == encode(_art())


def test_body_is_exactly_what_safetensors_writes():
    arrays = {
        "z": np.ones(3, dtype=np.bool_),
        "a": np.arange(6, dtype=np.float64).reshape(2, 3),
        "m": np.arange(5, dtype=np.int16),
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.uint8),
    }
    frame = parse_frame(encode(_art(arrays=arrays)))
    assert bytes(frame.body) == stn.save(arrays)
    loaded = stn.load(bytes(frame.body))
    for k, v in arrays.items():
        assert loaded[k].dtype == v.dtype and loaded[k].shape == v.shape and np.array_equal(loaded[k], v)


def test_non_contiguous_and_big_endian_inputs_are_normalised():
    base = np.arange(20, dtype=np.float32).reshape(4, 5)
    m = _art(arrays={"t": base.T, "be": np.arange(3, dtype=">i4")})
    back = decode(encode(m))
    assert np.array_equal(back.arrays["t"], base.T)
    assert back.arrays["be"].dtype == np.dtype("<i4") and list(back.arrays["be"]) == [0, 1, 2]


def test_body_of_no_arrays_is_empty_not_what_safetensors_writes():
    assert stn.save({}) != b""  # safetensors writes 16 bytes for no tensors; §4 says empty
    env = encode(Message("ack", "source", "target"))
    assert bytes(parse_frame(env).body) == b""


def test_no_arrays_means_empty_body():
    m = Message("control", "coordinator", "source", meta={"op": "fit"})
    env = encode(m)
    h = peek_header(env)
    assert h["body_length"] == 0 and h["manifest"] == []
    assert decode(env).session_id == bytes(16)  # unbound message: zero session id


def test_framing_layout():
    env = encode(_art())
    assert env[:4] == MAGIC and env[4] == 1 and env[5] == 0
    (hl,) = struct.unpack(">I", env[6:10])
    header = cbor2.loads(env[PREFIX_LEN : PREFIX_LEN + hl])
    assert header["body_length"] == len(env) - PREFIX_LEN - hl
    assert cbor2.dumps(header, canonical=True) == env[PREFIX_LEN : PREFIX_LEN + hl]


def test_peek_header_shows_cleartext_fields():
    h = peek_header(encode(_art()))
    assert h["type"] == "artifact" and h["sender"] == "source" and h["seq"] == 9 and h["epoch"] == 1
    assert h["manifest"] == [["user_ids", "int64", [4]], ["emb", "float32", [4, 3]]]
    assert _code(peek_header, b"XXXX" + bytes(20)) is ErrorCode.BAD_MAGIC


def test_decode_accepts_memoryview_and_bytearray():
    env = encode(_art())
    assert decode(memoryview(env)) == _art()
    assert decode(bytearray(env)) == _art()


def test_meta_normalisation():
    m = _art(meta={"np_f": np.float64(0.5), "np_i": np.int64(3), "np_b": np.bool_(True), "t": (1, 2), "b": bytearray(b"x")})
    back = decode(encode(m))
    assert back.meta == {"np_f": 0.5, "np_i": 3, "np_b": True, "t": [1, 2], "b": b"x"}
    assert type(back.meta["np_i"]) is int


@pytest.mark.parametrize(
    "meta",
    [{"a": np.zeros(2)}, {1: "x"}, {"a": object()}, {"a": 2**64}, {"a": -(2**64) - 1}, {"a": "\ud800"}, {"a": {1, 2}}],
)
def test_encode_rejects_bad_meta(meta):
    assert _code(encode, _art(meta=meta)) is ErrorCode.MALFORMED_HEADER


def test_encode_rejects_bad_messages():
    assert _code(encode, _art(type="telepathy")) is ErrorCode.UNKNOWN_MESSAGE_TYPE
    assert _code(encode, _art(type="hs_init")) is ErrorCode.UNKNOWN_MESSAGE_TYPE
    assert _code(encode, _art(arrays={"c": np.zeros(2, dtype=np.complex64)})) is ErrorCode.DISALLOWED_DTYPE
    assert _code(encode, _art(arrays={"o": np.array([None], dtype=object)})) is ErrorCode.DISALLOWED_DTYPE
    assert _code(encode, _art(arrays={"u": np.zeros(2, dtype=np.uint16)})) is ErrorCode.DISALLOWED_DTYPE
    assert _code(encode, _art(arrays={"__metadata__": np.zeros(2)})) is ErrorCode.MALFORMED_HEADER
    assert _code(encode, _art(arrays={"": np.zeros(2)})) is ErrorCode.MALFORMED_HEADER
    assert _code(encode, _art(sender="")) is ErrorCode.MALFORMED_HEADER
    assert _code(encode, _art(round=-1)) is ErrorCode.MALFORMED_HEADER
    assert _code(encode, _art(epoch=2**32)) is ErrorCode.MALFORMED_HEADER
    assert _code(encode, _art(session_id=b"short")) is ErrorCode.MALFORMED_HEADER


def test_limits_are_checked_before_allocation():
    env = encode(_art())
    assert _code(decode, env, limits=Limits(max_envelope_bytes=len(env) - 1)) is ErrorCode.OVERSIZED
    assert decode(env, limits=Limits(max_envelope_bytes=len(env))) == _art()
    assert _code(decode, env, limits=Limits(max_arrays=1)) is ErrorCode.OVERSIZED
    (hl,) = struct.unpack(">I", env[6:10])
    assert _code(decode, env, limits=Limits(max_header_bytes=hl - 1)) is ErrorCode.OVERSIZED
    # A header announcing a 1 TB body is refused from the header alone.
    header = cbor2.loads(env[PREFIX_LEN : PREFIX_LEN + hl])
    header["body_length"] = 10**12
    raw = cbor2.dumps(header, canonical=True)
    forged = env[:6] + struct.pack(">I", len(raw)) + raw
    assert _code(decode, forged) is ErrorCode.OVERSIZED


def test_limits_validation():
    with pytest.raises(ValueError, match="max_arrays"):
        Limits(max_arrays=0)
    assert Limits(**{"max_envelope_bytes": 10, "max_header_bytes": 10, "max_arrays": 1, "max_rejections": 1})


def test_value_sharing_tags_are_rejected():
    # tag 28/29 could build cycles or exponential structures: never decoded
    from protocol import cbor as pcbor

    for raw in ("d81c81d81d00", "d81c01", "c11a514b67b0", "c249010000000000000000"):
        with pytest.raises(ProtocolError) as info:
            pcbor.loads(bytes.fromhex(raw))
        assert info.value.code is ErrorCode.MALFORMED_HEADER


def test_protocol_error_pickles_with_its_code():
    import pickle

    err = ProtocolError(ErrorCode.REPLAY, "seen", sender="x")
    back = pickle.loads(pickle.dumps(err))
    assert back.code is ErrorCode.REPLAY and back.detail == "seen" and back.sender == "x"
    assert str(back) == "REPLAY: seen"
