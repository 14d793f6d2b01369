"""The fast paths of the codec give what the general code gives: canonical CBOR encoding,
strict decoding (fast acceptance only of what the strict decoder accepts), and sealing large
bodies straight into the envelope."""

from __future__ import annotations

import cbor2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import Endpoint, ErrorCode, Identity, Limits, Message, ProtocolError, Registry, buffers, peek_header, secure, tensors
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
    fast = pcbor.decode_fast(raw, pcbor._in_data_model)
    try:
        strict = _strict(raw)
    except (ProtocolError, AssertionError):
        assert fast is pcbor.SLOW
        return
    if fast is not pcbor.SLOW:
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


def _outcome(fn, *args):
    """What fn(*args) gives: ("ok", value) or ("error", code)."""
    try:
        return ("ok", fn(*args))
    except ProtocolError as exc:
        return ("error", exc.code)


def _both_paths(fn, *args):
    """fn(*args) with the fast paths, then with every fast path refused (the strict decoder and
    the general checks alone)."""
    fast = _outcome(fn, *args)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pcbor, "decode_fast", lambda raw, check: pcbor.SLOW)
        mp.setattr(secure, "_inner_fast", lambda raw, max_arrays: None)
        slow = _outcome(fn, *args)
    return fast, slow


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=3) | st.sampled_from(["a" * 256, "b" * 257])
u64 = st.integers(0, 2**64 - 1) | st.sampled_from([0, 23, 24, 255, 256, 2**32 - 1, 2**32, 2**64 - 1])


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["artifact", "control", "hs_init", "hs_finish"]),
    names,
    names,
    st.integers(0, 2**32 - 1),
    u64,
    u64,
    st.none() | u64,
    st.integers(0, 40),
    st.booleans(),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=2),
)
def test_the_secure_header_fast_path_decides_as_the_strict_path(mtype, sender, receiver, epoch, seq, rnd, reply_to, body, flag, edits):
    """Secure headers (with random fields, then random byte edits): parse_frame with the fast
    check of the secure header gives the same header, or the same error code, as the strict
    decoder and _check_header alone."""
    from protocol.codec import frame_prefix, make_header, parse_frame

    header = make_header(
        suite="secure", type=mtype, session_id=bytes(range(16)), sender=sender, receiver=receiver,
        epoch=epoch, seq=seq, round=rnd, reply_to=reply_to, body_length=body,
    )  # fmt: skip
    envelope = bytearray(frame_prefix(header, int(flag)) + bytes(body))
    for pos, byte in edits:
        envelope[10 + pos % max(1, len(envelope) - 10)] = byte
    fast, slow = _both_paths(parse_frame, bytes(envelope))
    assert fast[0] == slow[0]
    if fast[0] == "ok":
        assert fast[1].header == slow[1].header and fast[1].body_offset == slow[1].body_offset
    else:
        assert fast[1] is slow[1]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["artifact", "control", "report"]),
    names,
    u64,
    st.none() | u64,
    st.dictionaries(
        st.text(st.characters(codec="ascii"), max_size=6), st.none() | st.integers(-(2**64), 2**64 - 1) | st.floats() | text, max_size=3
    )
    | st.dictionaries(text, values, max_size=3),
    st.lists(st.sampled_from(["x", "y", "z"]), max_size=2, unique=True),
    st.integers(1, 3),
    st.lists(st.tuples(st.integers(0, 600), st.integers(0, 255)), max_size=2),
)
def test_the_plaintext_header_fast_path_decides_as_the_strict_path(mtype, sender, seq, reply_to, meta, array_names, max_arrays, edits):
    """Plaintext envelopes (random fields, meta and manifest, then random byte edits of the
    header): parse_frame gives the same header, or the same error code, with the fast check of
    the plaintext header as with the strict decoder and _check_header alone, under limits that
    may refuse the manifest."""
    from protocol import encode
    from protocol.codec import parse_frame

    arrays = {n: np.arange(3, dtype=np.float32) for n in array_names}
    try:
        raw = encode(Message(mtype, sender or "s", "target", arrays=arrays, meta=meta, seq=seq, reply_to=reply_to))
    except ProtocolError:
        return  # meta the sender refuses (checked by the encoding tests)
    envelope = bytearray(raw)
    header_length = int.from_bytes(raw[6:10], "big")
    for pos, byte in edits:
        envelope[10 + pos % max(1, header_length)] = byte
    fast, slow = _both_paths(parse_frame, bytes(envelope), Limits(max_arrays=max_arrays))
    assert fast[0] == slow[0]
    if fast[0] == "ok":
        assert cbor2.dumps(fast[1].header, canonical=True) == cbor2.dumps(slow[1].header, canonical=True)  # NaN != NaN
        assert fast[1].body_offset == slow[1].body_offset
    else:
        assert fast[1] is slow[1]


def _plaintext_envelope(meta: bytes, manifest: bytes = b"\x80", mtype: str = "control") -> bytes:
    """A plaintext envelope whose header carries `meta` and `manifest` as given (raw CBOR),
    every other field canonical; no arrays."""
    from protocol.codec import _PLAINTEXT_ORDER
    from protocol.wire import MAGIC, PREFIX, WIRE_VERSION

    fields = {
        "seq": 1, "type": mtype, "epoch": 0, "round": 0, "suite": "plaintext", "sender": "a", "version": WIRE_VERSION,
        "receiver": "b", "reply_to": None, "session_id": bytes(16), "body_length": 0,
    }  # fmt: skip
    header = bytes([0xA0 + len(_PLAINTEXT_ORDER)])
    for key in _PLAINTEXT_ORDER:
        value = {"meta": meta, "manifest": manifest}.get(key)
        header += cbor2.dumps(key) + (value if value is not None else cbor2.dumps(fields[key]))
    return PREFIX.pack(MAGIC, WIRE_VERSION, 0, len(header)) + header


@pytest.mark.parametrize(
    "meta, manifest, code",
    [
        (cbor2.dumps({"step": 3}), b"\x80", None),
        (bytes.fromhex("a16161f93800"), b"\x80", None),  # 0.5 in its shortest form
        (bytes.fromhex("a16161fb3fe0000000000000"), b"\x80", ErrorCode.MALFORMED_HEADER),  # 0.5 as a double
        (bytes.fromhex("a16161f97e01"), b"\x80", ErrorCode.MALFORMED_HEADER),  # NaN with a payload: same length as canonical
        (bytes.fromhex("a2616201616101"), b"\x80", ErrorCode.MALFORMED_HEADER),  # meta keys out of canonical order
        (bytes.fromhex("a2616101616101"), b"\x80", ErrorCode.DUPLICATE_KEY),  # a repeated meta key
        (bytes.fromhex("a16161f7"), b"\x80", ErrorCode.MALFORMED_HEADER),  # undefined
        (b"\xa0", cbor2.dumps([["x", "float32", [3]]]), ErrorCode.MALFORMED_HEADER),  # an array the body does not hold
        (b"\xa0", cbor2.dumps([["x", "float32", [3]]])[:-1], ErrorCode.MALFORMED_HEADER),  # truncated manifest
        (b"\xa0", b"\x9f\xff", ErrorCode.MALFORMED_HEADER),  # an indefinite-length manifest
        (b"\xa0", cbor2.dumps([["x", "float32", [3.0]]]), ErrorCode.MALFORMED_HEADER),  # a dimension as a float
        (b"\xa0", cbor2.dumps([["x", 7, [3]]]), ErrorCode.MALFORMED_HEADER),  # a dtype that is not text
    ],
)
def test_the_plaintext_header_fast_path_refuses_what_the_strict_path_refuses(meta, manifest, code):
    """Plaintext headers that cbor2 decodes but v1 refuses, or that the checks after decoding
    refuse (the body check included): the same outcome with and without the fast path."""
    from protocol import decode

    fast, slow = _both_paths(decode, _plaintext_envelope(meta, manifest))
    assert fast[0] == slow[0]
    if code is None:
        assert fast[0] == "ok"
    else:
        assert fast[0] == "error" and fast[1] is slow[1], (fast, slow)


def test_a_plaintext_manifest_obeys_this_receivers_max_arrays_on_the_fast_path():
    from protocol import encode
    from protocol.codec import parse_frame

    arrays = {"x": np.zeros(3, np.float32), "y": np.ones(3, np.float32)}
    envelope = encode(Message("artifact", "source", "target", arrays=arrays, meta={"lam": 0.5}))
    assert _both_paths(parse_frame, envelope, Limits(max_arrays=2))[0][0] == "ok"
    fast, slow = _both_paths(parse_frame, envelope, Limits(max_arrays=1))
    assert fast == slow == ("error", ErrorCode.OVERSIZED)


def test_both_header_shapes_take_the_fast_path():
    """The fast check really accepts what parties send (else every envelope would pay for the
    strict decoder, and the differential tests above would still pass)."""
    from protocol import encode
    from protocol.codec import _known_header, frame_prefix, make_header
    from protocol.wire import PREFIX

    plaintext = encode(Message("artifact", "source", "target", arrays={"x": np.zeros(3, np.float32)}, meta={"lam": 0.5, "step": 3}))
    secure_header = make_header(
        suite="secure", type="gradient", session_id=bytes(16), sender="target", receiver="source",
        epoch=0, seq=1, round=0, reply_to=None, body_length=16,
    )  # fmt: skip
    for envelope in (plaintext, frame_prefix(secure_header, 1)):
        header = envelope[PREFIX.size :][: int.from_bytes(envelope[6:10], "big")]
        assert pcbor.decode_fast(header, _known_header) is not pcbor.SLOW


def test_a_plaintext_handshake_header_is_refused_with_and_without_the_fast_path():
    from protocol import decode

    fast, slow = _both_paths(decode, _plaintext_envelope(b"\xa0", mtype="hs_init"))
    assert fast == slow == ("error", ErrorCode.MALFORMED_HEADER)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(text, values, max_size=3),
    st.lists(st.sampled_from(["x", "y", "z"]), max_size=2, unique=True),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=2),
)
def test_the_inner_header_fast_path_decides_as_the_strict_path(meta, array_names, edits):
    """Decrypted bodies (random meta and arrays, then random byte edits of the inner CBOR):
    parse_inner gives the same arrays and meta, or the same error code, with and without its
    fast path, whether the manifest is new to it or was checked before."""
    msg = Message("artifact", "source", "target", arrays={n: np.arange(3, dtype=np.float32) for n in array_names}, meta=meta)
    segments, _, lay = secure.prepare_inner(msg)
    plain = bytearray(b"".join(bytes(s) for s in segments))
    inner_length = len(plain) - 4 - lay.size
    for pos, byte in edits:
        plain[lay.size + pos % max(1, inner_length)] = byte
    tensors.forget_checked_manifests()
    for _ in range(2):  # the manifest unknown, then remembered (if it was accepted)
        fast, slow = _both_paths(secure.parse_inner, bytearray(plain), Limits())
        assert fast[0] == slow[0]
        if fast[0] == "ok":
            (_, f_arrays, f_meta), (_, s_arrays, s_meta) = fast[1], slow[1]
            assert cbor2.dumps(f_meta, canonical=True) == cbor2.dumps(s_meta, canonical=True)  # NaN != NaN
            assert f_arrays.keys() == s_arrays.keys()
            assert all(np.array_equal(f_arrays[k], s_arrays[k]) for k in f_arrays)
        else:
            assert fast[1] is slow[1]


@pytest.mark.parametrize(
    "meta_hex",
    [
        "a2616201616101",  # keys out of canonical order
        "a2616101616101",  # a repeated key
        "a16161c249010000000000000000",  # a bignum (2^64)
        "a16161fb3ff0000000000000",  # 1.0 as a double
        "a16161c074323031332d30332d32315432303a30343a30305a",  # a datetime
        "a1616182d81c8101d81d00",  # a shared array and a reference to it
        "a16161f7",  # undefined
    ],
)
def test_the_inner_header_fast_path_refuses_what_the_strict_decoder_refuses(meta_hex):
    """Meta that cbor2 decodes but v1 refuses, inside an otherwise valid inner header: the same
    error with and without the fast path."""
    inner = b"\xa2" + cbor2.dumps("meta") + bytes.fromhex(meta_hex) + cbor2.dumps("manifest") + b"\x80"
    plain = bytearray(inner + len(inner).to_bytes(4, "big"))
    fast, slow = _both_paths(secure.parse_inner, plain, Limits())
    assert fast[0] == slow[0] == "error" and fast[1] is slow[1]


def _body_with_inner(inner: bytes) -> bytearray:
    """A decrypted body: the arrays x and y (float32, 3 each), then `inner` and its trailer."""
    arrays = {"x": np.arange(3, dtype=np.float32), "y": np.ones(3, dtype=np.float32)}
    segments, _, lay = secure.prepare_inner(Message("artifact", "source", "target", arrays=arrays))
    body = b"".join(bytes(s) for s in segments)[: lay.size]
    return bytearray(body + inner + len(inner).to_bytes(4, "big"))


_META = cbor2.dumps({"step": 3})
_MANIFEST = cbor2.dumps([["x", "float32", [3]], ["y", "float32", [3]]])


@pytest.mark.parametrize(
    "meta, manifest, code",
    [
        (_META, _MANIFEST, None),
        (bytes.fromhex("a16161f97e01"), _MANIFEST, ErrorCode.MALFORMED_HEADER),  # NaN with a payload: same length as canonical
        (bytes.fromhex("a16161f9fe00"), _MANIFEST, ErrorCode.MALFORMED_HEADER),  # NaN with the sign bit set
        (_META, _MANIFEST.replace(b"\x81\x03", b"\x81\x18\x03", 1), ErrorCode.MALFORMED_HEADER),  # a dimension not in shortest form
        (_META, _MANIFEST.replace(b"\x81\x03", b"\x81\xf9\x42\x00", 1), ErrorCode.MALFORMED_HEADER),  # a dimension as the float 3.0
        (_META, _MANIFEST + b"\x00", ErrorCode.MALFORMED_HEADER),  # a byte after the inner map
        (_META, b"\x9f" + _MANIFEST[1:] + b"\xff", ErrorCode.MALFORMED_HEADER),  # an indefinite-length manifest
    ],
)
def test_the_inner_fast_path_proves_canonical_bytes_whether_or_not_the_manifest_is_known(meta, manifest, code):
    """Encodings that decode to a valid inner header but are not its canonical bytes: the same
    outcome with and without the fast path, with the manifest unknown and then known (a valid
    body with the same manifest accepted just before)."""
    plain = _body_with_inner(b"\xa2" + cbor2.dumps("meta") + meta + cbor2.dumps("manifest") + manifest)
    valid = _body_with_inner(b"\xa2" + cbor2.dumps("meta") + _META + cbor2.dumps("manifest") + _MANIFEST)
    for warm in (False, True):
        tensors.forget_checked_manifests()
        if warm:
            secure.parse_inner(bytearray(valid), Limits())
            assert tensors.checked_manifest(_MANIFEST) is not None
        fast, slow = _both_paths(secure.parse_inner, bytearray(plain), Limits())
        assert fast[0] == slow[0] == ("ok" if code is None else "error")
        if code is not None:
            assert fast[1] is slow[1] is code


def test_a_known_manifest_still_obeys_this_receivers_max_arrays():
    valid = _body_with_inner(b"\xa2" + cbor2.dumps("meta") + _META + cbor2.dumps("manifest") + _MANIFEST)
    tensors.forget_checked_manifests()
    secure.parse_inner(bytearray(valid), Limits())
    assert tensors.checked_manifest(_MANIFEST) is not None  # remembered under the default limits
    fast, slow = _both_paths(secure.parse_inner, bytearray(valid), Limits(max_arrays=1))
    assert fast == slow == ("error", ErrorCode.OVERSIZED)


# What parties mostly send, and encode_meta's one-walk path takes: ASCII keys, scalar values.
flat_meta = st.dictionaries(
    st.text(st.characters(codec="ascii"), max_size=6),
    st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.floats() | st.text(st.characters(codec="ascii"), max_size=6),
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(flat_meta | st.dictionaries(text, values, max_size=4))
def test_encode_meta_is_dumps_of_normalize_meta(meta):
    try:
        expected = pcbor.dumps(pcbor.normalize_meta(meta))
    except ProtocolError as exc:
        with pytest.raises(ProtocolError) as info:
            pcbor.encode_meta(meta)
        assert info.value.code is exc.code
        return
    assert pcbor.encode_meta(meta) == expected


def test_secure_headers_are_built_in_canonical_key_order():
    """frame_prefix writes secure headers with the plain encoder, which keeps the dict's order."""
    from protocol.codec import _SECURE_ORDER, make_header

    header = make_header(
        suite="secure", type="artifact", session_id=bytes(16), sender="a", receiver="b",
        epoch=0, seq=1, round=0, reply_to=None, body_length=0,
    )  # fmt: skip
    assert tuple(header) == _SECURE_ORDER
    assert cbor2.dumps(header) == cbor2.dumps(header, canonical=True)


def test_a_delivered_message_is_the_message_its_constructor_builds():
    """Endpoints build delivered messages (and frames) without running the dataclass __init__:
    every field is set, and the result equals what the constructor gives."""
    from dataclasses import fields

    a, b = _pair()
    sent = Message("artifact", "source", "target", arrays={"x": np.arange(4, dtype=np.int64)}, meta={"k": 1.5}, round=3, reply_to=7)
    envelopes = a.send(sent)
    delivered: list[Message] = []
    while envelopes:
        out = []
        for envelope in envelopes:
            msgs, replies = (b if peek_header(envelope)["receiver"] == "target" else a).receive(envelope)
            delivered += msgs
            out += replies
        envelopes = out
    (got,) = delivered
    assert set(vars(got)) == {f.name for f in fields(Message)}
    rebuilt = Message(**{f.name: getattr(got, f.name) for f in fields(Message)})
    assert got == rebuilt and got.suite == "secure" and got.seq >= 1 and (got.round, got.reply_to) == (3, 7)
