"""endpoint_plaintext.json: the plaintext suite's sessions (PROTOCOL.md §6, §8-§10)."""

from __future__ import annotations

from typing import Any

from .writer import (
    VectorFile,
    W,
    emb,
    endpoint_header,
    exact_window,
    frame_of,
    header_fields,
    manifest,
    msg_json,
    mutated,
    output,
    secure_header,
    set_header,
)

FLAG_ENCRYPTED_BODY = 0x01


def plaintext_vectors() -> dict[str, Any]:
    vf = VectorFile("endpoint", endpoint_header("plaintext"))
    g = vf.conversation("plaintext", "coordinator, source and target over the plaintext suite (ablation)")
    c = g.send("coordinator -> source control", "control", "coordinator", "source", meta={"op": "fit"}, round=1)
    g.deliver(c, "source", "source accepts the control message")
    sends = {}
    for mtype, (a, b) in {
        "artifact": ("source", "target"),
        "request": ("target", "source"),
        "gradient": ("target", "source"),
        "report": ("target", "coordinator"),
        "ack": ("source", "coordinator"),
        "error": ("target", "coordinator"),
        "bye": ("coordinator", "target"),
    }.items():
        arrays = emb() if mtype in ("artifact", "gradient", "report") else {}
        sends[mtype] = g.send(f"{a} -> {b} {mtype}", mtype, a, b, arrays=arrays, meta={"n": 1})
        g.deliver(sends[mtype], b, f"{b} accepts the {mtype}")
    art = sends["artifact"]
    g.reject("target", "replayed artifact", "REPLAY", output(art))
    g.reject("coordinator", "artifact for target delivered to coordinator", "WRONG_RECEIVER", output(art))
    g.reject("target", "session id of another seed", "WRONG_SESSION", set_header(art, session_id=b"\xaa" * 16, seq=50))
    g.reject("target", "epoch 5 while epoch 0 is current", "WRONG_EPOCH", set_header(art, epoch=5, seq=50))
    g.reject(
        "target",
        "session and epoch both wrong: WRONG_SESSION first",
        "WRONG_SESSION",
        set_header(art, session_id=b"\xaa" * 16, epoch=5, seq=50),
    )
    g.reject("target", "sender not in the registry", "UNKNOWN_PEER", set_header(art, sender="mallory", seq=50))
    g.reject("target", "sender claims to be the receiver itself", "UNKNOWN_PEER", set_header(art, sender="target", seq=50))
    secure = secure_header(type="artifact", sender="source", receiver="target", body_length=20)
    g.reject(
        "target",
        "secure envelope to a plaintext endpoint",
        "UNSUPPORTED_SUITE",
        frame_of(secure, body=bytes(20), flags=FLAG_ENCRYPTED_BODY),
    )
    bigger = manifest(("user_ids", "int64", [3]), ("emb", "float32", [4, 4]))
    g.reject(
        "target",
        "manifest altered in transit (no integrity in plaintext: caught only as a mismatch)",
        "MANIFEST_MISMATCH",
        set_header(art, seq=50, manifest=bigger),
    )
    complex_ = manifest(("user_ids", "int64", [3]), ("emb", "complex64", [3, 2]))
    g.reject("target", "disallowed dtype", "DISALLOWED_DTYPE", set_header(art, seq=50, manifest=complex_))
    g.add(
        "receive",
        "plaintext has no integrity: a flipped body bit (and a fresh seq) goes unnoticed",
        party="target",
        construction=mutated(art, {"op": "flip", "offset": len(g.out(art)) - 1, "bit": 0}, {"op": "header", "set": {"seq": 50}}),
    )
    # Reordering within the window.
    m1 = g.send("source -> target artifact #1", "artifact", "source", "target", arrays=emb(seed=1))
    m2 = g.send("source -> target artifact #2", "artifact", "source", "target", arrays=emb(seed=2))
    g.deliver(m2, "target", "#2 arrives first")
    g.deliver(m1, "target", "#1 arrives late but inside the window")
    held = g.send("source -> target, held back for later", "ack", "source", "target", meta={"held": True})
    g.add("rekey", "source moves to epoch 1 (plaintext: no handshake, nothing on the wire)", party="source", peer="target")
    e1 = g.send("first epoch-1 message", "ack", "source", "target")
    g.deliver(e1, "target", "target follows to epoch 1")
    g.deliver(held, "target", "a late epoch-0 message is still accepted (previous epoch)")
    g.add("rekey", "source moves to epoch 2", party="source", peer="target")
    e2 = g.send("first epoch-2 message", "ack", "source", "target")
    g.deliver(e2, "target", "target follows to epoch 2")
    g.reject("target", "epoch 0 is no longer accepted", "WRONG_EPOCH", set_header(held, seq=99))
    old = g.send("source -> target, held back past the window", "ack", "source", "target", meta={"old": True})
    g.add(
        "bulk",
        f"{W + 6} messages move the window on",
        party="source",
        peer="target",
        count=W + 6,
        message=msg_json("ack", "source", "target"),
    )
    g.deliver(old, "target", "older than the replay window", expect="STALE")
    z = g.send("coordinator -> target bye", "bye", "coordinator", "target")
    g.reject("target", "sequence number 0 is never valid", "STALE", set_header(z, seq=0))
    g.deliver(z, "target", "the genuine bye")
    _window(vf)
    _rekey_every(vf)
    _accounting(vf)
    return vf.finish()


def _window(vf: VectorFile) -> None:
    g = vf.conversation("plaintext", "§8: the replay window is exactly 1024 wide and survives sequence numbers far ahead", seed="window/")
    exact_window(g)
    a = g.send("source -> target ack", "ack", "source", "target")
    g.deliver(a, "target", "accepted")
    top = g.state("source", "target").send.seq
    g.reject("target", "sequence number 2^40 ahead of the window (plaintext: anyone may send it)", "valid", set_header(a, seq=top + 2**40))
    g.reject(
        "target",
        "one below the new top: never seen, accepted (the old bitmap must not shift into it)",
        "valid",
        set_header(a, seq=top + 2**40 - 1),
    )
    g.reject("target", "the far envelope again", "REPLAY", set_header(a, seq=top + 2**40))
    g.reject("target", "sequence number 2^64-1, the largest", "valid", set_header(a, seq=2**64 - 1))
    g.reject("target", "2^64-2: inside the window below the top", "valid", set_header(a, seq=2**64 - 2))
    nxt = g.send("source's next genuine message (its own seq is far behind now)", "ack", "source", "target")
    g.deliver(nxt, "target", "older than the window", expect="STALE")
    g.reject("target", "2^64-1 again", "REPLAY", set_header(a, seq=2**64 - 1))


def _rekey_every(vf: VectorFile) -> None:
    g = vf.conversation("plaintext", "§6.3: rekey_every = 2 at source; rekey() without traffic", seed="rekey/", rekey_every={"source": 2})
    for i in range(5):
        s = g.send(f"source -> target #{i + 1}: epoch {i // 2}", "ack", "source", "target", meta={"i": i})
        g.deliver(s, "target", f"target accepts #{i + 1}")
    g.add("rekey", "source rekeys by hand: epoch 3, nothing on the wire", party="source", peer="target")
    s = g.send("source -> target: epoch 3, seq 1 (the count restarts)", "ack", "source", "target")
    g.deliver(s, "target", "target follows to epoch 3")
    g.add("rekey", "coordinator rekeys towards target before any traffic: epoch 1", party="coordinator", peer="target")
    c = g.send("coordinator -> target: epoch 1, seq 1", "bye", "coordinator", "target")
    g.deliver(c, "target", "target follows from 0 to 1")


def _accounting(vf: VectorFile) -> None:
    g = vf.conversation(
        "plaintext",
        "§10 accounting: on the plaintext suite nothing is attributable, every rejection is charged to the link it came over",
        limits={"target": {"max_rejections": 3}},
        seed="accounting/",
    )
    s1 = g.send("source -> target #1", "ack", "source", "target", meta={"i": 1})
    g.deliver(s1, "target", "accepted over party:source", link="party:source")
    s2 = g.send("source -> target #2", "ack", "source", "target", meta={"i": 2})
    g.reject(
        "target",
        "forgery claiming source over inject: wrong session",
        "WRONG_SESSION",
        set_header(s1, session_id=b"\xaa" * 16, seq=9),
        link="inject",
    )
    g.reject("target", "forgery claiming source over inject: replay", "REPLAY", output(s1), link="inject")
    g.reject("target", "forgery claiming source over inject: sequence number 0", "STALE", set_header(s1, seq=0), link="inject")
    g.reject(
        "target",
        "garbage over inject, now cut off: refused before it is parsed",
        "PEER_CUT_OFF",
        frame_of(b"", magic="58585858"),
        link="inject",
    )
    g.deliver(s2, "target", "inject is cut off: even a genuine envelope is refused over it", expect="PEER_CUT_OFF", link="inject")
    g.deliver(s2, "target", "the same envelope over party:source: source was never charged", link="party:source")
    bad_schema = frame_of(header_fields(sender="source", receiver="target", epoch="0"))
    g.reject(
        "target",
        "readable sender 'source' but a header that fails its schema: charged to the link",
        "MALFORMED_HEADER",
        bad_schema,
        link="party:x",
    )
    c1 = g.send("coordinator -> target #1", "ack", "coordinator", "target")
    g.deliver(c1, "target", "accepted over coordinator", link="coordinator")
    for i in range(3):
        g.deliver(c1, "target", f"replay {i + 1} of 3 over coordinator", expect="REPLAY", link="coordinator")
    c2 = g.send("coordinator -> target #2", "ack", "coordinator", "target")
    g.deliver(c2, "target", "the coordinator link is cut off", expect="PEER_CUT_OFF", link="coordinator")
    g.deliver(c2, "target", "over another link the coordinator is heard: links are charged, not senders", link="coordinator-2")
    g.add("rejections", "target's log: (charged_to, code); PEER_CUT_OFF names what is cut off and is not charged", party="target")
