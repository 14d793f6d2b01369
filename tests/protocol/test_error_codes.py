"""Every ErrorCode has a crafted bad envelope; rejections never change Endpoint state."""

from __future__ import annotations

from collections.abc import Callable

import cbor2
import numpy as np
import pytest
from protocol_helpers import established, msg, plaintext_endpoints, run, secure_endpoints

from protocol import Endpoint, ErrorCode, Limits, ProtocolError, decode, encode
from protocol.conformance import mutate, raw_cbor_map, split_frame
from protocol.wire import MAGIC, PREFIX


def _frame(header: dict | bytes, body: bytes = b"", flags: int = 0, version: int = 1) -> bytes:
    raw = header if isinstance(header, bytes) else cbor2.dumps(header, canonical=True)
    return PREFIX.pack(MAGIC, version, flags, len(raw)) + raw + body


def _secure_pair():
    eps = secure_endpoints()
    established(eps)
    env = eps["source"].send(msg())[0]
    return eps, env


def _header(env: bytes, **changes) -> bytes:
    return mutate(env, {"op": "header", "set": changes})


# Each case returns (endpoint or None for decode(), envelope).
Case = Callable[[], tuple[Endpoint | None, bytes]]


def _bad_magic():
    eps, env = _secure_pair()
    return eps["target"], b"CDRX" + env[4:]


def _unsupported_version():
    eps, env = _secure_pair()
    return eps["target"], env[:4] + b"\x07" + env[5:]


def _truncated():
    eps, env = _secure_pair()
    return eps["target"], env[:-3]


def _oversized_real():
    eps = secure_endpoints()
    established(eps)
    env = eps["source"].send(msg(n=50))[0]
    small = Endpoint(
        "target",
        identity=eps["target"].identity,
        registry=eps["target"].registry,
        limits=Limits(max_envelope_bytes=len(env) - 1),
    )
    return small, env


def _malformed_header():
    eps, env = _secure_pair()
    return eps["target"], _frame(cbor2.dumps([1, 2, 3]))


def _duplicate_key():
    eps, env = _secure_pair()
    _, flags, header, body = split_frame(env)
    return eps["target"], _frame(raw_cbor_map([("seq", 1), *header.items()]), body, flags)


def _unknown_type():
    eps, env = _secure_pair()
    return eps["target"], _header(env, type="exfiltrate")


def _unsupported_suite():
    eps = plaintext_endpoints()
    sec = secure_endpoints()
    return eps["target"], established(sec)[0]


def _encrypted():
    _, env = _secure_pair()
    return None, env


def _peer_cut_off():
    eps = secure_endpoints(limits=Limits(max_rejections=1))
    established(eps)
    env = eps["source"].send(msg())[0]
    eps["target"].receive(env)
    with pytest.raises(ProtocolError):
        eps["target"].receive(env)  # 1 rejection: the limit
    return eps["target"], eps["source"].send(msg())[0]


def _wrong_receiver():
    eps, env = _secure_pair()
    return eps["coordinator"], env


def _unknown_peer():
    eps, env = _secure_pair()
    return eps["target"], _header(env, sender="eve")


def _wrong_session():
    eps, env = _secure_pair()
    return eps["target"], _header(env, session_id=b"\xaa" * 16)


def _wrong_epoch():
    eps, env = _secure_pair()
    return eps["target"], _header(env, epoch=3)


def _not_established():
    eps, env = _secure_pair()
    fresh = secure_endpoints()
    return fresh["target"], env


def _auth_failed():
    eps, env = _secure_pair()
    return eps["target"], env[:-1] + bytes([env[-1] ^ 0x80])


def _handshake_failed():
    eps = secure_endpoints()
    init = eps["source"].send(msg())[0]
    resp = eps["target"].receive(init)[1][0]
    return eps["source"], resp[:-1] + bytes([resp[-1] ^ 1])


def _downgrade():
    eps, _ = _secure_pair()
    return eps["target"], encode(msg())


def _replay():
    eps, env = _secure_pair()
    eps["target"].receive(env)
    return eps["target"], env


def _stale():
    eps = plaintext_endpoints()
    envs = [eps["source"].send(msg(arrays={}))[0] for _ in range(1100)]
    for env in envs[1:]:
        eps["target"].receive(env)
    return eps["target"], envs[0]


def _manifest_mismatch():
    eps = plaintext_endpoints()
    env = eps["source"].send(msg())[0]
    return eps["target"], _header(env, manifest=[["user_ids", "int64", [4]], ["emb", "float32", [4, 4]]])


def _disallowed_dtype():
    eps = plaintext_endpoints()
    env = eps["source"].send(msg())[0]
    return eps["target"], _header(env, manifest=[["user_ids", "int64", [4]], ["emb", "complex64", [4, 3]]])


CASES: dict[ErrorCode, Case] = {
    ErrorCode.BAD_MAGIC: _bad_magic,
    ErrorCode.UNSUPPORTED_VERSION: _unsupported_version,
    ErrorCode.TRUNCATED: _truncated,
    ErrorCode.OVERSIZED: _oversized_real,
    ErrorCode.MALFORMED_HEADER: _malformed_header,
    ErrorCode.DUPLICATE_KEY: _duplicate_key,
    ErrorCode.UNKNOWN_MESSAGE_TYPE: _unknown_type,
    ErrorCode.UNSUPPORTED_SUITE: _unsupported_suite,
    ErrorCode.ENCRYPTED: _encrypted,
    ErrorCode.PEER_CUT_OFF: _peer_cut_off,
    ErrorCode.WRONG_RECEIVER: _wrong_receiver,
    ErrorCode.UNKNOWN_PEER: _unknown_peer,
    ErrorCode.DOWNGRADE: _downgrade,
    ErrorCode.HANDSHAKE_FAILED: _handshake_failed,
    ErrorCode.NOT_ESTABLISHED: _not_established,
    ErrorCode.WRONG_SESSION: _wrong_session,
    ErrorCode.WRONG_EPOCH: _wrong_epoch,
    ErrorCode.AUTH_FAILED: _auth_failed,
    ErrorCode.REPLAY: _replay,
    ErrorCode.STALE: _stale,
    ErrorCode.MANIFEST_MISMATCH: _manifest_mismatch,
    ErrorCode.DISALLOWED_DTYPE: _disallowed_dtype,
}


def test_every_code_has_a_case():
    assert set(CASES) == set(ErrorCode)


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda c: c.value)
def test_crafted_envelope_raises_code_and_leaves_state_unchanged(code):
    endpoint, envelope = CASES[code]()
    if endpoint is None:
        with pytest.raises(ProtocolError) as info:
            decode(envelope)
    else:
        before = endpoint.state_snapshot()
        n_rejections = len(endpoint.rejections)
        with pytest.raises(ProtocolError) as info:
            endpoint.receive(envelope)
        assert endpoint.state_snapshot() == before
        assert len(endpoint.rejections) == n_rejections + 1 and endpoint.rejections[-1][1] is code
    assert info.value.code is code
    assert str(info.value).startswith(code.value + ": ") and len(info.value.detail) > 10


def test_rejection_in_the_middle_of_a_conversation_changes_nothing():
    """A rejected envelope between two good ones: the conversation continues exactly as without it."""
    a, b = secure_endpoints(seed="z"), secure_endpoints(seed="z")
    established(a)
    established(b)
    good1 = a["source"].send(msg(meta={"i": 1}))[0]
    assert good1 == b["source"].send(msg(meta={"i": 1}))[0]
    a["target"].receive(good1)
    b["target"].receive(good1)
    for bad in (good1, good1[:-1] + b"\x00", _header(good1, seq=99), b"junk"):
        with pytest.raises(ProtocolError):
            a["target"].receive(bad)
    assert a["target"].state_snapshot() == b["target"].state_snapshot()
    reply_a = a["target"].send(msg("target", "source", meta={"r": 1}))
    reply_b = b["target"].send(msg("target", "source", meta={"r": 1}))
    assert reply_a == reply_b
    assert run(a, reply_a)[0] == run(b, reply_b)[0]
    assert np.array_equal(run(a, a["source"].send(msg()))[0].arrays["emb"], msg().arrays["emb"])
