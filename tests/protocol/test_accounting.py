"""Rejection accounting (PROTOCOL.md §10): forgeries cannot get an honest peer cut off."""

from __future__ import annotations

import pickle

import pytest
from protocol_helpers import established, msg, plaintext_endpoints, run, secure_endpoints

from protocol import Endpoint, ErrorCode, Limits, ProtocolError
from protocol.conformance import mutate
from protocol.conformance.constructions import canonical, frame, inner_plaintext, seal

LIMIT = Limits().max_rejections  # 16


def _forgeries(eps: dict[str, Endpoint], suite: str, n: int) -> list[bytes]:
    """`n` envelopes claiming to come from source that target must refuse, of many kinds."""
    genuine = eps["source"].send(msg(meta={"genuine": True}))[0]
    eps["target"].receive(genuine, link="party:source")  # so that copies of it are replays
    header = {"version": 1, "suite": suite, "type": "ack", "sender": "source", "receiver": "target", "epoch": "bad"}
    kinds = [
        genuine,  # replay
        mutate(genuine, {"op": "flip", "offset": len(genuine) - 1, "bit": 3}),  # tampered body / tag
        mutate(genuine, {"op": "header", "set": {"session_id": {"$bytes": "ab" * 16}}}),  # another session
        mutate(genuine, {"op": "header", "set": {"epoch": 77}}),  # impossible epoch
        mutate(genuine, {"op": "header", "set": {"seq": 0}}),  # seq 0
        frame(canonical(header)),  # readable sender, header fails its schema
        b"CDRS\x01\x00\x00\x00\x00\x05garbage",  # unparseable
        b"\x00" * 40,  # not an envelope at all
    ]
    return [kinds[i % len(kinds)] for i in range(n)]


@pytest.mark.parametrize("suite", ["secure", "plaintext"])
def test_forged_envelopes_cannot_cut_off_an_honest_peer(suite):
    eps = secure_endpoints() if suite == "secure" else plaintext_endpoints()
    if suite == "secure":
        established(eps)
    target = eps["target"]
    codes = []
    for env in _forgeries(eps, suite, 100):
        with pytest.raises(ProtocolError) as info:
            target.receive(env, link="inject")
        codes.append(info.value.code)
        assert info.value.charged_to == "link:inject"
    assert ErrorCode.PEER_CUT_OFF not in codes[:LIMIT] and set(codes[LIMIT:]) == {ErrorCode.PEER_CUT_OFF}
    assert {who for who, _ in target.rejections} == {"link:inject"}
    assert target.cut_off() == ["link:inject"]
    # The honest source, over its own link, is heard throughout.
    for i in range(20):
        (got,), _ = target.receive(eps["source"].send(msg(meta={"i": i}))[0], link="party:source")
        assert got.meta == {"i": i}
    assert "source" not in target.cut_off()


def test_a_link_that_sends_garbage_is_cut_off_and_only_that_link():
    eps = secure_endpoints()
    established(eps)
    target = eps["target"]
    for i in range(LIMIT):
        with pytest.raises(ProtocolError) as info:
            target.receive(b"garbage %d" % i, link="party:coordinator")
        assert info.value.code is ErrorCode.BAD_MAGIC
    genuine = eps["coordinator"].send(msg("coordinator", "target", type="bye", arrays={}))
    with pytest.raises(ProtocolError) as info:
        target.receive(genuine[0], link="party:coordinator")
    assert info.value.code is ErrorCode.PEER_CUT_OFF and info.value.charged_to == "link:party:coordinator"
    assert target.rejections[-1] == ("link:party:coordinator", ErrorCode.PEER_CUT_OFF)
    assert len(target.rejections) == LIMIT + 1  # PEER_CUT_OFF is logged, not charged again
    run(eps, genuine, link="coordinator-2")  # the same sender over another link completes its handshake
    assert target.established("coordinator")
    run(eps, eps["source"].send(msg()))  # other links are unaffected


def test_authenticated_failures_are_charged_to_the_sender():
    eps = secure_endpoints(limits=Limits(max_rejections=4))
    established(eps)
    st = eps["source"].state_snapshot()["target"]
    bad = inner_plaintext(b"", [["x", "complex64", [1]]])
    header = {
        "version": 1,
        "suite": "secure",
        "type": "artifact",
        "session_id": st.session_id,
        "sender": "source",
        "receiver": "target",
        "epoch": st.send.epoch,
        "seq": st.send.seq + 1,
        "round": 0,
        "reply_to": None,
        "body_length": len(bad) + 16,
    }
    sealed = seal(header, bad, st.send.key, st.send.iv)
    for _ in range(4):
        with pytest.raises(ProtocolError) as info:
            eps["target"].receive(sealed, link="party:source")
        assert info.value.code is ErrorCode.DISALLOWED_DTYPE and info.value.charged_to == "source"
    fresh = eps["source"].send(msg())[0]
    for link in ("party:source", "elsewhere"):  # a sender cut off is refused over any link
        with pytest.raises(ProtocolError) as info:
            eps["target"].receive(fresh, link=link)
        assert info.value.code is ErrorCode.PEER_CUT_OFF and info.value.charged_to == "source"
    assert eps["target"].cut_off() == ["source"]


def test_plaintext_failures_are_never_charged_to_the_claimed_sender():
    eps = plaintext_endpoints(limits=Limits(max_rejections=2))
    env = eps["source"].send(msg())[0]
    bad = mutate(env, {"op": "header", "set": {"manifest": [["x", "complex64", [1]]]}})
    for _ in range(2):
        with pytest.raises(ProtocolError) as info:
            eps["target"].receive(bad, link="party:source")
        assert info.value.charged_to == "link:party:source"
    assert eps["target"].cut_off() == ["link:party:source"]
    assert eps["target"].receive(env, link="party:source-2")[0][0].sender == "source"


def test_charged_to_survives_pickling_and_link_must_be_text():
    err = ProtocolError(ErrorCode.REPLAY, "seen", sender="x", charged_to="link:inject")
    back = pickle.loads(pickle.dumps(err))
    assert back.charged_to == "link:inject" and back.sender == "x" and back.code is ErrorCode.REPLAY
    eps = plaintext_endpoints()
    with pytest.raises(TypeError, match="link"):
        eps["target"].receive(b"", link=None)
