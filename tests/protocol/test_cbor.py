"""The strict CBOR decoder: data model, check order (§3.1), depth counted in levels."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol_helpers import FuzzStats, fuzz_examples

from protocol import ErrorCode, ProtocolError
from protocol import cbor as pcbor
from protocol.wire import CBOR_MAX_DEPTH, MAX_META_DEPTH

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)
values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.floats() | text | st.binary(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=12,
)


def _code(raw: bytes) -> ErrorCode:
    with pytest.raises(ProtocolError) as info:
        pcbor.loads(raw)
    return info.value.code


def _same(a, b) -> bool:
    return pcbor.dumps(a) == pcbor.dumps(b)  # NaN-safe equality


@settings(max_examples=300, deadline=None)
@given(values)
def test_canonical_encodings_round_trip(value):
    raw = pcbor.dumps(value)
    assert _same(pcbor.loads(raw), value)


CBOR_FUZZ = FuzzStats("CBOR items with 1-3 bytes overwritten x strict decoder (checked against cbor2)")


@settings(max_examples=fuzz_examples(400), deadline=None)
@given(values, st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=3))
def test_accepts_only_what_cbor2_reads_the_same_way(value, edits):
    """Differential: whatever we accept, cbor2 (strict) decodes to the same value."""
    raw = bytearray(pcbor.dumps(value))
    for pos, byte in edits:
        if raw:
            raw[pos % len(raw)] = byte
    ours = CBOR_FUZZ.attempt(pcbor.loads, bytes(raw))
    if isinstance(ours, ProtocolError):
        assert ours.code in (ErrorCode.MALFORMED_HEADER, ErrorCode.DUPLICATE_KEY)
        return
    theirs = cbor2.loads(bytes(raw), allow_duplicate_keys=False, allow_indefinite=False)
    assert _same(ours, theirs) and pcbor.dumps(ours) == bytes(raw)


@pytest.mark.parametrize(
    "raw, code",
    [
        ("a26161016161c101", ErrorCode.MALFORMED_HEADER),  # duplicate whose value is a tag
        ("a2616101616161ff", ErrorCode.MALFORMED_HEADER),  # ... invalid UTF-8
        ("a261610161619fff", ErrorCode.MALFORMED_HEADER),  # ... indefinite length
        ("a26161016161f7", ErrorCode.MALFORMED_HEADER),  # ... undefined
        ("a26161016161fb3ff0000000000000", ErrorCode.DUPLICATE_KEY),  # ... non-shortest float
        ("a2616101616118 01".replace(" ", ""), ErrorCode.DUPLICATE_KEY),  # ... non-shortest int
        ("a3616101616102 6162c101".replace(" ", ""), ErrorCode.MALFORMED_HEADER),  # a tag after the duplicate
        ("a2616101780161 02".replace(" ", ""), ErrorCode.DUPLICATE_KEY),  # same key text, longer encoding
        ("a1780161 01".replace(" ", ""), ErrorCode.MALFORMED_HEADER),  # non-shortest key, not repeated
        ("a10102", ErrorCode.MALFORMED_HEADER),  # integer key
        ("", ErrorCode.MALFORMED_HEADER),
        ("a0a0", ErrorCode.MALFORMED_HEADER),  # trailing item
        ("9b8000000000000000", ErrorCode.MALFORMED_HEADER),  # claims 2^63 elements
        ("f97e01", ErrorCode.MALFORMED_HEADER),  # NaN with a payload
        ("eda080", ErrorCode.MALFORMED_HEADER),  # not an item (reserved info on major 7)
        ("63eda080", ErrorCode.MALFORMED_HEADER),  # an encoded surrogate is not UTF-8
        ("1c", ErrorCode.MALFORMED_HEADER),  # reserved additional information
    ],
)
def test_check_order_and_data_model(raw, code):
    assert _code(bytes.fromhex(raw)) is code


def _nest(levels: int):
    value = 0
    for _ in range(levels):
        value = [value]
    return value


def test_depth_is_counted_in_levels_and_matches_the_sender():
    assert CBOR_MAX_DEPTH == MAX_META_DEPTH + 1 == 17
    assert pcbor.loads(pcbor.dumps(_nest(17))) == _nest(17)  # the leaf sits at level 17
    assert _code(pcbor.dumps(_nest(18))) is ErrorCode.MALFORMED_HEADER
    # meta sits at level 1 of a header: what normalize_meta lets a sender write, a receiver reads
    header = {"meta": pcbor.normalize_meta({"d": _nest(15)})}
    assert pcbor.loads(pcbor.dumps(header)) == header
    with pytest.raises(ProtocolError):
        pcbor.normalize_meta({"d": _nest(16)})
    assert _code(pcbor.dumps({"meta": {"d": _nest(16)}})) is ErrorCode.MALFORMED_HEADER
