"""endpoint_secure.json, group 1-2: handshakes, every message type, tampering, replay, rekeying.

The rule groups that follow live in secure_rules.py and chunk_cases.py.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import safetensors.numpy as stn

from . import chunk_cases, secure_rules
from .constructions import PREFIX, inner_plaintext, raw_cbor_map, split_frame
from .forms import value_to_json
from .writer import (
    LOW_ORDER_POINT,
    VectorFile,
    W,
    emb,
    endpoint_header,
    find_eph,
    manifest,
    msg_json,
    mutated,
    output,
    plaintext_frame,
    seal_case,
    secure_header,
    set_header,
)

PREFIX_LEN = PREFIX.size
FLAG_ENCRYPTED_BODY = 0x01


def secure_vectors() -> dict[str, Any]:
    vf = VectorFile("endpoint", endpoint_header("secure"))
    g = vf.conversation("secure", "handshakes, every message type, tampering, replay, rekeying")
    # Handshake coordinator -> source, carrying a control message.
    c = g.send(
        "coordinator -> source control: no session yet, so an hs_init goes out and the control waits",
        "control",
        "coordinator",
        "source",
        meta={"op": "fit"},
        round=1,
    )
    r = g.deliver(c, "source", "source answers hs_init with a signed hs_resp")
    f = g.deliver(r, "coordinator", "coordinator verifies hs_resp, sends hs_finish and the queued control")
    g.deliver(f, "source", "source verifies hs_finish: session established", index=0)
    g.deliver(f, "source", "source opens the control message", index=1)
    g.add("keys", "traffic keys of coordinator towards source (epoch 0)", party="coordinator", peer="source")
    g.add("keys", "traffic keys of source towards coordinator (epoch 0)", party="source", peer="coordinator")

    # Handshake source -> target, with handshake negatives along the way.
    a = g.send("source -> target artifact: hs_init goes out", "artifact", "source", "target", arrays=emb(), meta={"kind": "embeddings"})
    init = g.out(a)
    empty_inner = inner_plaintext(b"", [])
    no_session = secure_header(
        type="artifact",
        sender="source",
        receiver="target",
        session_id=split_frame(init)[2]["session_id"],
        body_length=len(empty_inner) + 16,
    )
    g.reject(
        "target",
        "app message before any session exists",
        "NOT_ESTABLISHED",
        {"kind": "seal", "key": "00" * 32, "iv": "00" * 12, "inner": empty_inner.hex(), "header": value_to_json(no_session)},
    )
    g.reject(
        "target",
        "hs_init with a low-order ephemeral key (u=0)",
        "HANDSHAKE_FAILED",
        mutated(a, {"op": "set_bytes", "offset": find_eph(init), "hex": LOW_ORDER_POINT.hex()}),
    )
    g.reject(
        "target",
        "hs_init offering only the plaintext suite",
        "DOWNGRADE",
        mutated(a, {"op": "payload", "set": {"suites": ["plaintext"]}}),
    )
    g.reject("target", "hs_init offering only version 2", "UNSUPPORTED_VERSION", mutated(a, {"op": "payload", "set": {"versions": [2]}}))
    g.reject("target", "hs_init from a sender that is not in the registry", "UNKNOWN_PEER", set_header(a, sender="mallory"))
    g.reject("target", "hs_init for epoch 3 without a session", "WRONG_EPOCH", set_header(a, epoch=3))
    g.reject("target", "hs_init with seq 1", "HANDSHAKE_FAILED", set_header(a, seq=1))
    g.reject(
        "target",
        "plaintext envelope to a secure endpoint (downgrade)",
        "DOWNGRADE",
        plaintext_frame("artifact", "source", "target", arrays=emb()),
    )
    mitm = g.add(
        "receive",
        "an attacker rewrote the offered suites to ['secure', 'plaintext']; target (unaware) answers",
        party="target",
        construction=mutated(a, {"op": "payload", "set": {"suites": ["secure", "plaintext"]}}),
    )
    g.reject("source", "hs_resp signed over the rewritten transcript: source detects the mismatch", "HANDSHAKE_FAILED", output(mitm))
    resp = g.deliver(a, "target", "target answers the genuine hs_init (replacing the tampered attempt)")
    resp_env = g.out(resp)
    g.reject(
        "source",
        "hs_resp with one signature bit flipped",
        "HANDSHAKE_FAILED",
        mutated(resp, {"op": "flip", "offset": len(resp_env) - 1, "bit": 7}),
    )
    g.reject(
        "source",
        "hs_resp with a flipped bit in the responder's ephemeral key",
        "HANDSHAKE_FAILED",
        mutated(resp, {"op": "flip", "offset": find_eph(resp_env), "bit": 0}),
    )
    chosen = resp_env.rindex(b"fsecure") + 1  # the payload's chosen suite (the header's comes first)
    g.reject(
        "source",
        "hs_resp choosing the plaintext suite (re-signed by nobody: signature fails first)",
        "HANDSHAKE_FAILED",
        mutated(resp, {"op": "set_bytes", "offset": chosen, "hex": b"plain!".hex()}),
    )
    g.reject("coordinator", "hs_resp delivered to a party that never started a handshake with target", "WRONG_RECEIVER", output(resp))
    fin = g.deliver(resp, "source", "source verifies hs_resp; hs_finish and the queued artifact go out")
    fin_env = g.out(fin)
    g.reject(
        "target",
        "hs_finish with a flipped signature bit",
        "HANDSHAKE_FAILED",
        mutated(fin, {"op": "flip", "offset": len(fin_env) - 10, "bit": 2}),
    )
    g.reject("target", "queued artifact before hs_finish: no session yet", "NOT_ESTABLISHED", output(fin, 1))
    g.deliver(fin, "target", "target verifies hs_finish", index=0)
    g.reject("target", "hs_finish replayed", "HANDSHAKE_FAILED", output(fin, 0))
    g.deliver(fin, "target", "target opens the artifact", index=1)
    g.add("keys", "traffic keys of source towards target (epoch 0)", party="source", peer="target")
    g.add("keys", "traffic keys of target towards source (epoch 0)", party="target", peer="source")

    # Every application type over the secure suite.
    for mtype, (x, y) in {
        "request": ("target", "source"),
        "gradient": ("target", "source"),
        "artifact": ("source", "target"),
        "ack": ("source", "coordinator"),
        "error": ("source", "coordinator"),
        "bye": ("coordinator", "source"),
        "control": ("coordinator", "source"),
    }.items():
        arrays = emb(seed=3) if mtype in ("artifact", "gradient") else {}
        sent = g.send(f"{x} -> {y} {mtype}", mtype, x, y, arrays=arrays, meta={"op": mtype}, round=2)
        g.deliver(sent, y, f"{y} opens the {mtype}")
    report_arrays = {"users": np.arange(3, dtype=np.int64), "hr": np.array([1.0, 0.0, 1.0])}
    rep = g.send(
        "target -> coordinator report: a third handshake starts",
        "report",
        "target",
        "coordinator",
        arrays=report_arrays,
        meta={"op": "evaluate", "utility": {"HR@10": 0.6667}},
    )
    r2 = g.deliver(rep, "coordinator", "coordinator answers target's hs_init")
    f2 = g.deliver(r2, "target", "target finishes and sends the report")
    g.deliver(f2, "coordinator", "coordinator verifies hs_finish", index=0)
    g.deliver(f2, "coordinator", "coordinator opens the report", index=1)

    # Tampering with an established-session envelope.
    e = g.send(
        "source -> target artifact used for the tampering cases",
        "artifact",
        "source",
        "target",
        arrays=emb(seed=4),
        meta={"kind": "embeddings"},
    )
    env = g.out(e)
    hl = PREFIX.unpack_from(env, 0)[3]
    body = PREFIX_LEN + hl

    def mut(*ms: dict) -> dict:
        return mutated(e, *ms)

    g.reject("target", "bit flip in the magic", "BAD_MAGIC", mut({"op": "flip", "offset": 1, "bit": 3}))
    g.reject("target", "wire version 2", "UNSUPPORTED_VERSION", mut({"op": "set_bytes", "offset": 4, "hex": "02"}))
    g.reject("target", "encrypted-body flag cleared", "MALFORMED_HEADER", mut({"op": "flip", "offset": 5, "bit": 0}))
    g.reject("target", "top bit of the header length set", "OVERSIZED", mut({"op": "flip", "offset": 6, "bit": 7}))
    for i in range(PREFIX_LEN, body):
        g.reject("target", f"bit flip in header byte {i - PREFIX_LEN}", None, mut({"op": "flip", "offset": i, "bit": (i * 5) % 8}))
    g.reject("target", "bit flip in the first ciphertext byte", "AUTH_FAILED", mut({"op": "flip", "offset": body, "bit": 0}))
    g.reject(
        "target",
        "bit flip in the middle of the ciphertext",
        "AUTH_FAILED",
        mut({"op": "flip", "offset": (body + len(env)) // 2, "bit": 6}),
    )
    g.reject("target", "bit flip in the tag", "AUTH_FAILED", mut({"op": "flip", "offset": len(env) - 1, "bit": 1}))
    g.reject(
        "target",
        "tag removed (body_length fixed up)",
        "AUTH_FAILED",
        mut({"op": "truncate", "length": len(env) - 16}, {"op": "header", "set": {"body_length": len(env) - 16 - body}}),
    )
    g.reject("target", "last byte missing", "TRUNCATED", mut({"op": "truncate", "length": len(env) - 1}))
    g.reject("target", "cut inside the header", "TRUNCATED", mut({"op": "truncate", "length": PREFIX_LEN + 5}))
    g.reject("target", "one byte appended", "MALFORMED_HEADER", mut({"op": "append", "hex": "00"}))
    g.reject("target", "body_length of 2^40", "OVERSIZED", set_header(e, body_length=2**40))
    dup = raw_cbor_map([("seq", 1), *split_frame(env)[2].items()])
    g.reject(
        "target",
        "header with a duplicate key",
        "DUPLICATE_KEY",
        {"kind": "frame", "flags": FLAG_ENCRYPTED_BODY, "body": env[body:].hex(), "header_cbor": dup.hex()},
    )
    g.reject("target", "unknown message type", "UNKNOWN_MESSAGE_TYPE", set_header(e, type="exfiltrate"))
    g.reject("target", "unknown suite", "UNSUPPORTED_SUITE", set_header(e, suite="null-cipher"))
    g.reject("coordinator", "delivered to the wrong party", "WRONG_RECEIVER", output(e))
    g.reject("target", "session id changed", "WRONG_SESSION", set_header(e, session_id=b"\xaa" * 16))
    g.reject("target", "epoch changed to 7", "WRONG_EPOCH", set_header(e, epoch=7))
    g.reject("target", "round changed (every header byte is associated data)", "AUTH_FAILED", set_header(e, round=9))
    g.reject("target", "seq changed (nonce and associated data)", "AUTH_FAILED", set_header(e, seq=1000))
    g.reject("target", "reply_to added", "AUTH_FAILED", set_header(e, reply_to=1))
    coordinator_sid = g.state("coordinator", "target").session_id
    g.reject(
        "target",
        "sender changed to coordinator (no session with that sender's keys)",
        "AUTH_FAILED",
        set_header(e, sender="coordinator", session_id=coordinator_sid),
    )
    g.deliver(e, "target", "the genuine envelope is still accepted after all rejections")
    g.reject("target", "replayed", "REPLAY", output(e))

    # Authentic envelopes (sealed with the sender's real keys) whose inner manifest is bad.
    st = g.state("source", "target")
    header = secure_header(
        type="artifact", sender="source", receiver="target", session_id=st.session_id, epoch=st.send.epoch, seq=st.send.seq + 1
    )
    body4 = stn.save({"x": np.arange(4, dtype=np.float32)})
    dup_inner = raw_cbor_map([("meta", {}), ("meta", {}), ("manifest", manifest(("x", "float32", [4])))])
    for comment, code, inner in [
        (
            "authentic envelope whose manifest names dtype complex64",
            "DISALLOWED_DTYPE",
            inner_plaintext(bytes(16), manifest(("x", "complex64", [2]))),
        ),
        (
            "authentic envelope whose manifest says 3 floats, body holds 4",
            "MANIFEST_MISMATCH",
            inner_plaintext(body4, manifest(("x", "float32", [3]))),
        ),
        (
            "authentic envelope whose manifest says int32, body holds float32",
            "MANIFEST_MISMATCH",
            inner_plaintext(body4, manifest(("x", "int32", [4]))),
        ),
        (
            "authentic envelope with a duplicate key in the inner header",
            "DUPLICATE_KEY",
            body4 + dup_inner + struct.pack(">I", len(dup_inner)),
        ),
    ]:
        g.reject("target", comment, code, seal_case(st, header, inner))

    # Reordering, then stale.
    m1 = g.send("artifact #1", "artifact", "source", "target", arrays=emb(seed=5))
    m2 = g.send("artifact #2", "artifact", "source", "target", arrays=emb(seed=6))
    g.deliver(m2, "target", "#2 first")
    g.deliver(m1, "target", "#1 late, inside the window")
    old = g.send("ack held back past the window", "ack", "source", "target", meta={"old": True})
    g.add(
        "bulk",
        f"{W + 6} messages move the window on",
        party="source",
        peer="target",
        count=W + 6,
        message=msg_json("ack", "source", "target"),
    )
    g.deliver(old, "target", "older than the replay window", expect="STALE")

    # Rekeying.
    held = g.send("epoch-0 ack held back across the rekey", "ack", "source", "target", meta={"held": True})
    rk = g.add("rekey", "source starts epoch 1", party="source", peer="target")
    g.send("sent during the rekey: queued until epoch 1 is established", "gradient", "source", "target", arrays=emb(seed=7))
    rr = g.deliver(rk, "target", "target answers the epoch-1 hs_init")
    rf = g.deliver(rr, "source", "source completes epoch 1 and flushes the queued gradient")
    g.deliver(rf, "target", "target completes epoch 1", index=0)
    g.deliver(rf, "target", "target opens the epoch-1 gradient", index=1)
    g.add("keys", "traffic keys of source towards target (epoch 1)", party="source", peer="target")
    g.deliver(held, "target", "late epoch-0 ack: the previous epoch is still accepted")
    g.reject("target", "old epoch-0 hs_init replayed after the rekey", "WRONG_EPOCH", output(a))
    rk2 = g.add("rekey", "target starts epoch 2", party="target", peer="source")
    rr2 = g.deliver(rk2, "source", "source answers")
    rf2 = g.deliver(rr2, "target", "target completes epoch 2")
    g.deliver(rf2, "source", "source completes epoch 2", index=0)
    g.reject("target", "an epoch-0 envelope after two rekeys", "WRONG_EPOCH", output(fin, 1))
    z = g.send("source -> target in epoch 2", "bye", "source", "target")
    g.deliver(z, "target", "target opens it")
    g.reject(
        "target",
        "seq 0 (sequence numbers start at 1) - authentic envelope",
        "STALE",
        seal_case(g.state("source", "target"), dict(header, epoch=2, seq=0), inner_plaintext(b"", [])),
    )

    # Simultaneous initiation.
    g2 = vf.conversation("secure", "simultaneous handshake initiation resolves deterministically", seed="simultaneous/")
    s1 = g2.send("source -> target, hs_init", "artifact", "source", "target", arrays=emb())
    t1 = g2.send("target -> source at the same time, hs_init", "request", "target", "source", meta={"op": "scores"})
    g2.deliver(t1, "source", "source ('source' < 'target') ignores target's hs_init: its own wins")
    r = g2.deliver(s1, "target", "target drops its own attempt and answers source's hs_init")
    f = g2.deliver(r, "source", "source finishes and sends its queued artifact")
    fo = g2.deliver(f, "target", "target finishes and flushes its queued request", index=0)
    g2.deliver(f, "target", "target opens the artifact", index=1)
    g2.deliver(fo, "source", "source opens the request")

    secure_rules.add_groups(vf)
    chunk_cases.add_groups(vf)
    return vf.finish()
