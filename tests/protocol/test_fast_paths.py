"""The fast paths of the codec give what the general code gives: canonical CBOR encoding,
strict decoding (fast acceptance only of what the strict decoder accepts), and sealing large
bodies straight into the envelope."""

from __future__ import annotations

import cbor2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import Endpoint, ErrorCode, Identity, Limits, Message, ProtocolError, Registry, buffers, secure
from protocol import cbor as pcbor

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)
values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.floats() | text | st.binary(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=4),
    max_leaves=16,
)


def _strict(raw: bytes):
    """The strict decoder alone (what loads did before its fast path)."""
    decoder = pcbor._Decoder(raw, "header")
    value = decoder.item(0)
    assert decoder.pos == len(raw) and decoder.duplicate is None and cbor2.dumps(value, canonical=True) == raw
    return value


@settings(max_examples=400, deadline=None)
@given(values)
def test_dumps_is_cbor2_canonical(value):
    assert pcbor.dumps(value) == cbor2.dumps(value, canonical=True)
    if isinstance(value, dict):
        ordered = pcbor.canonical_order(value)
        assert list(ordered) == list(cbor2.loads(cbor2.dumps(value, canonical=True)))


@settings(max_examples=400, deadline=None)
@given(values, st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=3))
def test_fast_loads_accepts_only_what_the_strict_decoder_accepts(value, edits):
    raw = bytearray(pcbor.dumps(value))
    for pos, byte in edits:
        if raw:
            raw[pos % len(raw)] = byte
    raw = bytes(raw)
    fast = pcbor._fast_loads(raw)
    try:
        strict = _strict(raw)
    except (ProtocolError, AssertionError):
        assert fast is pcbor._SLOW
        return
    if fast is not pcbor._SLOW:
        assert cbor2.dumps(fast, canonical=True) == cbor2.dumps(strict, canonical=True) == raw
        assert type(fast) is type(strict)


@pytest.mark.parametrize(
    "raw, code",
    [
        ("82d81c8101d81d00", ErrorCode.MALFORMED_HEADER),  # a shared array and a reference to it (tags 28/29)
        ("d81c80", ErrorCode.MALFORMED_HEADER),  # a shareable empty array
        ("a2616201616101", ErrorCode.MALFORMED_HEADER),  # keys out of canonical order
        ("a2616101616101", ErrorCode.DUPLICATE_KEY),
        ("c249010000000000000000", ErrorCode.MALFORMED_HEADER),  # bignum 2^64
        ("fb3ff0000000000000", ErrorCode.MALFORMED_HEADER),  # 1.0 as a double
        ("c074323031332d30332d32315432303a30343a30305a", ErrorCode.MALFORMED_HEADER),  # a datetime
    ],
)
def test_what_cbor2_decodes_but_v1_refuses_is_refused(raw, code):
    with pytest.raises(ProtocolError) as info:
        pcbor.loads(bytes.fromhex(raw))
    assert info.value.code is code


def _pair() -> tuple[Endpoint, Endpoint]:
    ids = {n: Identity.from_private_bytes(bytes([i + 1]) * 32, name=n) for i, n in enumerate(("source", "target"))}
    reg = Registry({n: i.public_bytes() for n, i in ids.items()})
    a = Endpoint("source", identity=ids["source"], registry=reg, limits=Limits(max_rejections=10**6), rng=lambda n: bytes(n))
    b = Endpoint("target", identity=ids["target"], registry=reg, limits=Limits(max_rejections=10**6), rng=lambda n: bytes([7]) * n)
    (init,) = a.send(Message("control", "source", "target"))
    _, (resp,) = b.receive(init)
    _, (finish, queued) = a.receive(resp)
    b.receive(finish)
    b.receive(queued)
    return a, b


@pytest.mark.parametrize("chunk", [4096, 5000, 1 << 24])
@pytest.mark.parametrize("sizes", [(1 << 16,), (70_000, 3), (1, 1 << 17, 9)])
def test_direct_seal_writes_the_bytes_the_join_writes(monkeypatch, chunk, sizes):
    """Large bodies are encrypted straight into the envelope (gathered through the scratch
    buffer where a chunk spans buffers); the envelope is byte for byte the one of the join."""
    monkeypatch.setattr(secure, "CHUNK_SIZE", chunk)
    rng = np.random.default_rng(0)
    msg = Message("artifact", "source", "target", arrays={f"a{i}": rng.standard_normal(n).astype(np.float32) for i, n in enumerate(sizes)})
    a, b = _pair()
    a2, _ = _pair()
    (direct,) = a.send(msg)
    monkeypatch.setattr(secure, "DIRECT_SEAL_BYTES", 1 << 40)  # everything through encrypt + join
    (joined,) = a2.send(msg)
    assert type(direct) is bytes and direct == joined
    (opened,), _ = b.receive(direct)
    assert opened == Message(**{**opened.__dict__, "arrays": msg.arrays})


def test_fresh_bytes_and_its_fallback():
    for factory in (buffers.fresh_bytes, buffers._fallback):
        obj, view = factory(1000)
        view[:] = bytes(range(250)) * 4
        view.release()
        assert buffers.finish(obj) == bytes(range(250)) * 4 and type(buffers.finish(obj)) is bytes
    assert len(buffers.scratch(10)) == 10 and len(buffers.scratch(3)) == 3
