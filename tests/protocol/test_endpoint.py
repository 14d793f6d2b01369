"""Endpoint behaviour: handshakes, sessions, replay window, rekeying, downgrade, cut-off."""

from __future__ import annotations

import numpy as np
import pytest
from protocol_helpers import established, identities, msg, plaintext_endpoints, registry, run, secure_endpoints

from protocol import (
    Endpoint,
    ErrorCode,
    Identity,
    Limits,
    Message,
    ProtocolError,
    Registry,
    decode,
    peek_header,
    plaintext_session_id,
    seeded_rng,
)
from protocol.endpoint import ReplayWindow
from protocol.wire import REPLAY_WINDOW


def _reject(ep: Endpoint, env: bytes) -> ErrorCode:
    before = ep.state_snapshot()
    with pytest.raises(ProtocolError) as info:
        ep.receive(env)
    assert ep.state_snapshot() == before, "a rejected envelope changed the endpoint state"
    return info.value.code


def test_secure_handshake_then_message():
    eps = secure_endpoints()
    tap = established(eps)
    assert [peek_header(e)["type"] for e in tap] == ["hs_init", "hs_resp", "hs_finish", "control"]
    m = msg()
    out = eps["source"].send(m)
    assert len(out) == 1 and peek_header(out[0])["suite"] == "secure"
    (got,), replies = eps["target"].receive(out[0])
    assert replies == []
    assert got.arrays.keys() == m.arrays.keys() and np.array_equal(got.arrays["emb"], m.arrays["emb"])
    assert got.meta == m.meta and got.suite == "secure" and got.seq == 2 and got.epoch == 0
    assert got.arrays["emb"].flags.writeable


def test_secure_wire_hides_manifest_meta_and_content():
    eps = secure_endpoints()
    established(eps)
    secret = np.full((8, 4), 1234.5, dtype=np.float32)
    env = eps["source"].send(msg(arrays={"emb": secret}, meta={"kind": "very-private"}))[0]
    header = peek_header(env)
    assert "manifest" not in header and "meta" not in header
    assert b"very-private" not in env and b"emb" not in env and secret.tobytes()[:16] not in env
    with pytest.raises(ProtocolError) as info:
        decode(env)
    assert info.value.code is ErrorCode.ENCRYPTED


def test_same_seed_same_bytes_and_plaintext_is_deterministic():
    a, b = secure_endpoints(seed="x"), secure_endpoints(seed="x")
    assert established(a) == established(b)
    assert established(secure_endpoints(seed="y")) != established(a)
    p, q = plaintext_endpoints(), plaintext_endpoints()
    assert p["source"].send(msg()) == q["source"].send(msg())


def test_plaintext_session_id_is_symmetric_and_seeded():
    assert plaintext_session_id(b"s", "a", "b") == plaintext_session_id(b"s", "b", "a")
    assert plaintext_session_id(b"s", "a", "b") != plaintext_session_id(b"t", "a", "b")
    assert plaintext_session_id(b"s", "ab", "c") != plaintext_session_id(b"s", "a", "bc")
    eps = plaintext_endpoints(session_seed=b"k")
    env = eps["source"].send(msg())[0]
    assert peek_header(env)["session_id"] == plaintext_session_id(b"k", "target", "source")


def test_receiver_view_is_a_plaintext_envelope_of_the_message():
    eps = secure_endpoints()
    established(eps)
    (got,), _ = eps["target"].receive(eps["source"].send(msg())[0])
    view = Endpoint.receiver_view(got)
    back = decode(view)
    assert back.suite == "plaintext" and back.seq == got.seq and back.session_id == got.session_id
    assert np.array_equal(back.arrays["emb"], got.arrays["emb"]) and back.meta == got.meta


def test_messages_queue_during_handshake_and_flush_in_order():
    eps = secure_endpoints()
    out = []
    for i in range(5):
        out += eps["source"].send(msg(meta={"i": i}))
    assert [peek_header(e)["type"] for e in out] == ["hs_init"]  # one handshake; all five messages wait for it
    delivered = run(eps, out)
    assert [m.meta["i"] for m in delivered] == list(range(5))
    assert [m.seq for m in delivered] == [1, 2, 3, 4, 5]


def test_simultaneous_initiation_resolves_deterministically():
    for first in ("source", "target"):
        eps = secure_endpoints()
        s = eps["source"].send(msg("source", "target", meta={"from": "s"}))
        t = eps["target"].send(msg("target", "source", meta={"from": "t"}))
        order = s + t if first == "source" else t + s
        delivered = run(eps, order)
        assert sorted(m.meta["from"] for m in delivered) == ["s", "t"]
        # the session is the one the lower name ("source") proposed
        assert eps["source"].state_snapshot()["target"].session_id == peek_header(s[0])["session_id"]
        assert eps["target"].state_snapshot()["source"].session_id == peek_header(s[0])["session_id"]
        assert not eps["source"].rejections and not eps["target"].rejections


def test_rekey_changes_keys_and_epoch_and_keeps_previous_epoch_briefly():
    eps = secure_endpoints()
    established(eps)
    keys0 = eps["source"].state_snapshot()["target"].send.key
    held = eps["source"].send(msg(meta={"held": 1}))
    run(eps, eps["source"].rekey("target"))
    assert eps["source"].epoch("target") == eps["target"].epoch("source") == 1
    assert eps["source"].state_snapshot()["target"].send.key != keys0
    (m,), _ = eps["target"].receive(held[0])  # previous epoch still accepted
    assert m.epoch == 0
    e1 = eps["source"].send(msg())
    run(eps, eps["target"].rekey("source"))  # now epochs 2 (current) and 1 (previous)
    assert eps["target"].receive(e1[0])[0][0].epoch == 1
    old = eps["source"].send(msg())  # epoch 2, fine
    run(eps, old)
    assert _reject(eps["target"], held[0]) is ErrorCode.WRONG_EPOCH


def test_rekey_is_idempotent_while_a_handshake_is_pending():
    eps = secure_endpoints()
    established(eps)
    first = eps["source"].rekey("target")
    assert len(first) == 1 and eps["source"].rekey("target") == []


def test_rekey_every_rotates_epochs_automatically():
    eps = secure_endpoints(rekey_every=3)
    epochs = []
    for i in range(8):
        epochs += [m.epoch for m in run(eps, eps["source"].send(msg(meta={"i": i})))]
    assert epochs == [0, 0, 0, 1, 1, 1, 2, 2]
    p = plaintext_endpoints(rekey_every=2)
    got = [m.epoch for i in range(5) for m in run(p, p["source"].send(msg()))]
    assert got == [0, 0, 1, 1, 2]


def test_replay_window_unit():
    w = ReplayWindow()
    assert w.check(0) is ErrorCode.STALE
    for s in (5, 3, 4, 1):
        assert w.check(s) is None
        w = w.accept(s)
    assert w.check(3) is ErrorCode.REPLAY and w.check(2) is None
    w = w.accept(5 + REPLAY_WINDOW)
    assert w.check(5) is ErrorCode.STALE and w.check(6) is None and w.check(5 + REPLAY_WINDOW) is ErrorCode.REPLAY


@pytest.mark.parametrize("suite", ["secure", "plaintext"])
def test_reordering_within_window_replay_and_stale(suite):
    eps = secure_endpoints() if suite == "secure" else plaintext_endpoints()
    if suite == "secure":
        established(eps)
    envs = [eps["source"].send(msg(meta={"i": i}))[0] for i in range(REPLAY_WINDOW + 3)]
    first, rest = envs[0], envs[1:]
    for env in reversed(rest[:10]):  # out of order but within the window
        eps["target"].receive(env)
    assert _reject(eps["target"], rest[0]) is ErrorCode.REPLAY
    for env in rest[10:]:
        eps["target"].receive(env)
    assert _reject(eps["target"], first) is ErrorCode.STALE


def test_downgrade_and_suite_mismatch():
    sec = secure_endpoints()
    plain = plaintext_endpoints()
    p_env = plain["source"].send(msg())[0]
    assert _reject(sec["target"], p_env) is ErrorCode.DOWNGRADE
    tap = established(sec)
    assert _reject(plain["target"], tap[0]) is ErrorCode.UNSUPPORTED_SUITE  # a secure hs_init
    assert _reject(plain["target"], sec["source"].send(msg())[0]) is ErrorCode.UNSUPPORTED_SUITE


def test_misaddressed_and_unknown_sender():
    eps = secure_endpoints()
    tap = established(eps)
    assert _reject(eps["coordinator"], tap[0]) is ErrorCode.WRONG_RECEIVER
    stranger = Identity.from_private_bytes(bytes([9]) * 32, name="mallory")
    reg = registry()
    reg.add("mallory", stranger.public_bytes())
    mallory = Endpoint("mallory", identity=stranger, registry=reg, rng=seeded_rng("m"))
    assert _reject(eps["target"], mallory.send(msg("mallory", "target"))[0]) is ErrorCode.UNKNOWN_PEER


def _impostor(name: str, seed: int) -> Endpoint:
    """An endpoint called `name` with a key that is not the one everybody else pinned."""
    fake = Identity.from_private_bytes(bytes([seed]) * 32, name=name)
    keys = {n: i.public_bytes() for n, i in identities().items()}
    keys[name] = fake.public_bytes()  # the impostor's own view of the registry
    return Endpoint(name, identity=fake, registry=Registry(keys), rng=seeded_rng(f"impostor/{name}"))


def test_impersonation_with_an_unpinned_identity_key_fails():
    # An impostor initiator: the responder's check of hs_finish fails.
    eps = secure_endpoints()
    fake_source = _impostor("source", 42)
    init = fake_source.send(msg())
    resp = eps["target"].receive(init[0])[1]
    finish = fake_source.receive(resp[0])[1]
    assert _reject(eps["target"], finish[0]) is ErrorCode.HANDSHAKE_FAILED
    # An impostor responder: the initiator's check of hs_resp fails.
    source = secure_endpoints()["source"]
    init = source.send(msg())
    resp = _impostor("target", 43).receive(init[0])[1]
    assert _reject(source, resp[0]) is ErrorCode.HANDSHAKE_FAILED


def test_cut_off_after_max_rejections():
    eps = secure_endpoints(limits=Limits(max_rejections=3))
    established(eps)
    env = eps["source"].send(msg())[0]
    eps["target"].receive(env, link="party:source")
    for _ in range(3):  # replays are whoever replayed them: charged to the link
        assert _reject(eps["target"], env) is ErrorCode.REPLAY
    fresh = eps["source"].send(msg())[0]
    assert _reject(eps["target"], fresh) is ErrorCode.PEER_CUT_OFF  # the default link "" is cut off
    assert eps["target"].rejections[-4:] == [("link:", ErrorCode.REPLAY)] * 3 + [("link:", ErrorCode.PEER_CUT_OFF)]
    assert eps["target"].cut_off() == ["link:"]
    # the sender was never charged: over its own link it is heard
    assert eps["target"].receive(fresh, link="party:source")[0][0].seq == 3
    # other peers on other links are unaffected
    run(eps, eps["coordinator"].send(msg("coordinator", "target", type="bye", arrays={})), link="coordinator")


def test_unparseable_rejections_are_charged_to_the_link():
    eps = secure_endpoints()
    with pytest.raises(ProtocolError) as info:
        eps["target"].receive(b"nonsense", link="inject")
    assert eps["target"].rejections == [("link:inject", ErrorCode.BAD_MAGIC)]
    assert info.value.charged_to == "link:inject" and info.value.sender is None
    with pytest.raises(ProtocolError):
        eps["target"].receive(b"nonsense")  # no link: the endpoint's single default link ""
    assert eps["target"].rejections[-1] == ("link:", ErrorCode.BAD_MAGIC)


def test_send_side_validation():
    eps = secure_endpoints(limits=Limits(max_envelope_bytes=1000))
    with pytest.raises(ValueError, match="sender"):
        eps["source"].send(msg("target", "source"))
    with pytest.raises(ValueError, match="itself"):
        eps["source"].send(msg("source", "source"))
    with pytest.raises(ProtocolError) as info:
        eps["source"].send(msg("source", "mallory"))
    assert info.value.code is ErrorCode.UNKNOWN_PEER
    with pytest.raises(ProtocolError) as info:
        eps["source"].send(msg(arrays={"x": np.zeros(1000, dtype=np.float32)}))
    assert info.value.code is ErrorCode.OVERSIZED
    assert eps["source"].state_snapshot() == {}  # nothing half-sent


def test_constructor_validation():
    ids = identities()
    with pytest.raises(ValueError, match="identity"):
        Endpoint("source")
    with pytest.raises(ValueError, match="suite"):
        Endpoint("source", suite="rot13")
    with pytest.raises(ValueError, match="identity of"):
        Endpoint("source", identity=ids["target"], registry=registry(ids))
    with pytest.raises(ValueError, match="different key"):
        Endpoint("source", identity=Identity.from_private_bytes(bytes([7]) * 32), registry=registry(ids))
    with pytest.raises(ValueError, match="rekey_every"):
        Endpoint("source", suite="plaintext", rekey_every=0)


def test_large_message_is_chunked_and_round_trips(monkeypatch):
    import protocol.secure as sec

    monkeypatch.setattr(sec, "CHUNK_SIZE", 1000)  # many chunks without a big allocation
    eps = secure_endpoints()
    established(eps)
    arr = np.random.default_rng(0).standard_normal(5000).astype(np.float32)  # 20 kB -> 21 chunks
    env = eps["source"].send(msg(arrays={"x": arr}))[0]
    header = peek_header(env)
    assert len(env) - header["body_length"] < 200  # header only; body = plaintext + 21 tags
    assert header["body_length"] > arr.nbytes + 16 * 20
    (got,), _ = eps["target"].receive(env)
    assert np.array_equal(got.arrays["x"], arr)
    # swapping two ciphertext chunks is detected (nonce carries the chunk index)
    body = len(env) - header["body_length"]
    step = 1000 + 16
    env2 = eps["source"].send(msg(arrays={"x": arr}))[0]
    tampered = env2[:body] + env2[body + step : body + 2 * step] + env2[body : body + step] + env2[body + 2 * step :]
    assert _reject(eps["target"], tampered) is ErrorCode.AUTH_FAILED
    assert eps["target"].receive(env2)[0][0].seq == 3


def test_message_equality_and_repr():
    a = Message("artifact", "s", "t", arrays={"x": np.array([np.nan, 1.0])})
    b = Message("artifact", "s", "t", arrays={"x": np.array([np.nan, 1.0])})
    assert a == b and a != Message("artifact", "s", "t", arrays={"x": np.array([np.nan, 2.0])})
    assert a != Message("artifact", "s", "t", arrays={"x": np.array([np.nan, 1.0], dtype=np.float32)})
    assert "x:float64[2]" in repr(a)


def test_peer_restart_during_our_rekey_is_answered():
    eps = secure_endpoints()
    established(eps)
    rekey = eps["source"].rekey("target")  # source ('source' < 'target') starts epoch 1 ...
    assert len(rekey) == 1
    restarted = secure_endpoints(seed="restart")["target"]  # ... while target lost its state
    init = restarted.send(msg("target", "source", meta={"after": "restart"}))
    delivered = run({**eps, "target": restarted}, init)
    assert [m.meta for m in delivered] == [{"after": "restart"}]
    assert eps["source"].epoch("target") == 0 and restarted.epoch("source") == 0
    assert eps["source"].state_snapshot()["target"].session_id == peek_header(init[0])["session_id"]
