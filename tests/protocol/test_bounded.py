"""Every input is handled in O(1) memory beyond the declared limits, with only ProtocolError."""

from __future__ import annotations

import struct
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol_helpers import established, msg, plaintext_endpoints, secure_endpoints

from protocol import ErrorCode, ProtocolError, decode, encode
from protocol.conformance import mutate
from protocol.conformance.constructions import canonical, frame, inner_plaintext, seal
from protocol.session import ReplayWindow
from protocol.wire import REPLAY_WINDOW

PEAK = 512 * 1024  # bytes traced while handling one small envelope, whatever its numbers say


def _peak(fn):
    tracemalloc.start()
    try:
        result = fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result, peak


def _ahead(suite: str):
    """(endpoints, a function making an envelope from source with a chosen seq, current top)."""
    if suite == "plaintext":
        eps = plaintext_endpoints()
        base = eps["source"].send(msg(arrays={}, meta={"n": 1}))[0]
        eps["target"].receive(base)

        def make(seq: int) -> bytes:
            return mutate(base, {"op": "header", "set": {"seq": seq}})

        return eps, make, 1
    eps = secure_endpoints()
    established(eps)
    s = eps["source"].state_snapshot()["target"]
    inner = inner_plaintext(b"", [])

    def make(seq: int) -> bytes:  # authentic: sealed with source's real traffic keys
        header = {
            "version": 1,
            "suite": "secure",
            "type": "ack",
            "session_id": s.session_id,
            "sender": "source",
            "receiver": "target",
            "epoch": s.send.epoch,
            "seq": seq,
            "round": 0,
            "reply_to": None,
            "body_length": len(inner) + 16,
        }
        return seal(header, inner, s.send.key, s.send.iv)

    return eps, make, s.send.seq


@pytest.mark.parametrize("suite", ["plaintext", "secure"])
@pytest.mark.parametrize("jump", [2**40, 2**63 - 1], ids=["2^40", "2^63-1"])
def test_sequence_numbers_far_ahead_use_bounded_memory(suite, jump):
    eps, make, top = _ahead(suite)
    target = eps["target"]
    far = top + jump
    (got, _), peak = _peak(lambda: target.receive(make(far)))
    assert [m.seq for m in got] == [far] and peak < PEAK, peak
    window = target.state_snapshot()["source"].recv.window
    assert window.top == far and window.bits.bit_length() <= REPLAY_WINDOW
    for seq, want in [(far, ErrorCode.REPLAY), (far - REPLAY_WINDOW, ErrorCode.STALE), (top, ErrorCode.STALE)]:
        with pytest.raises(ProtocolError) as info:
            _, peak = _peak(lambda seq=seq: target.receive(make(seq)))
        assert info.value.code is want
    (got, _), peak = _peak(lambda: target.receive(make(far - 1)))  # never seen, inside the window
    assert [m.seq for m in got] == [far - 1] and peak < PEAK


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1) | st.integers(0, 3 * REPLAY_WINDOW), max_size=40))
def test_replay_window_matches_the_specification(seqs):
    """§8 stated as a set: STALE at 0 or <= top - W, REPLAY if accepted before, else accepted."""
    window, accepted = ReplayWindow(), set()
    for seq in seqs:
        top = max(accepted, default=0)
        want = ErrorCode.STALE if seq == 0 or seq <= top - REPLAY_WINDOW else ErrorCode.REPLAY if seq in accepted else None
        assert window.check(seq) is want
        if want is None:
            window = window.accept(seq)
            accepted.add(seq)
        assert window.top == max(accepted, default=0) and window.bits.bit_length() <= REPLAY_WINDOW


def test_handshake_payloads_are_bounded_before_parsing():
    eps = secure_endpoints()
    init = eps["source"].send(msg())[0]
    big = mutate(init, {"op": "body", "hex": (b"\x9a\x00\x01\x00\x00" + b"\x00" * 65536).hex()})  # a 65536-element array
    with pytest.raises(ProtocolError) as info:
        eps["target"].receive(big)
    assert info.value.code is ErrorCode.OVERSIZED


def test_claimed_lengths_never_allocate():
    env = encode(msg(arrays={"x": np.zeros(4, dtype=np.float32)}))
    for raw in (b"\x9b" + (2**63).to_bytes(8, "big"), b"\x5b" + (2**62).to_bytes(8, "big"), b"\xbb" + (2**40).to_bytes(8, "big")):
        forged = frame(canonical({"a": 1})[:-1] + raw)
        with pytest.raises(ProtocolError) as info:
            _, peak = _peak(lambda forged=forged: decode(forged))
        assert info.value.code is ErrorCode.MALFORMED_HEADER
    # A body whose safetensors header claims an enormous JSON length: explained without reading it.
    header_len = struct.unpack(">I", env[6:10])[0]
    start = 10 + header_len
    forged = env[:start] + struct.pack("<Q", 2**62) + env[start + 8 :]
    with pytest.raises(ProtocolError) as info:
        decode(forged)
    assert info.value.code is ErrorCode.MANIFEST_MISMATCH and "claims" in info.value.detail


def test_odd_buffers_raise_protocol_error():
    env = encode(msg())
    with pytest.raises(ProtocolError):
        decode(memoryview(env)[::2])  # not contiguous
    assert decode(memoryview(env)).seq == 0
    with pytest.raises(ProtocolError):
        decode("CDRS")  # not bytes
