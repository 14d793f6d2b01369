"""endpoint_secure.json, rule groups: handshake payloads and check order, the inner header of
authentic envelopes, the replay window, rekey_every, and rejection accounting (PROTOCOL.md
§7-§10). Each case pins a rule that the first groups leave open.
"""

from __future__ import annotations

import struct
from typing import Any

import cbor2
import numpy as np
import safetensors.numpy as stn

from .constructions import build_input, canonical, inner_plaintext, raw_cbor_map, split_frame, transcript_hash
from .forms import value_to_json
from .writer import (
    LOW_ORDER_POINT,
    PARTY_KEYS,
    VectorFile,
    establish,
    exact_window,
    manifest,
    mutated,
    nest,
    output,
    plaintext_frame,
    seal_case,
    secure_header,
    set_header,
)

RESP_CONTEXT = b"cdrsim/v1 hs_resp signature\x00"  # §7.3


def add_groups(vf: VectorFile) -> None:
    _handshake(vf)
    _inner_and_order(vf)
    _window(vf)
    _rekey_every(vf)
    _accounting(vf)


def _inner(obj: Any = None, raw: bytes | None = None, body: bytes = b"") -> bytes:
    raw = canonical(obj) if raw is None else raw
    return body + raw + struct.pack(">I", len(raw))


def _handshake(vf: VectorFile) -> None:
    g = vf.conversation(
        "secure", "§7.2 and §9 step 16: handshake payload errors and the order of hs_init / hs_resp checks", seed="handshake/"
    )
    a = g.send("source -> target ack: hs_init goes out", "ack", "source", "target")
    init = g.out(a)
    pl = cbor2.loads(split_frame(init)[3])

    def body(raw: bytes, *more: dict) -> dict:
        return mutated(a, {"op": "body", "hex": raw.hex()}, *more)

    def payload(**fields: Any) -> dict:
        return mutated(a, {"op": "payload", "set": value_to_json(fields)})

    dup = raw_cbor_map([("eph", pl["eph"]), ("eph", pl["eph"]), ("suites", pl["suites"]), ("versions", pl["versions"])])
    g.reject(
        "target", "hs_init payload repeating the key 'eph' (a payload's CBOR errors are HANDSHAKE_FAILED)", "HANDSHAKE_FAILED", body(dup)
    )
    g.reject(
        "target",
        "hs_init payload with keys out of canonical order",
        "HANDSHAKE_FAILED",
        body(raw_cbor_map(sorted(pl.items(), reverse=True))),
    )
    g.reject(
        "target",
        "hs_init payload with a tag",
        "HANDSHAKE_FAILED",
        body(canonical(pl).replace(b"hversions\x81\x01", b"hversions\x81\xc1\x01")),
    )
    g.reject("target", "hs_init payload without 'versions'", "HANDSHAKE_FAILED", body(canonical({"eph": pl["eph"], "suites": ["secure"]})))
    g.reject("target", "hs_init offering 17 suites (at most 16)", "HANDSHAKE_FAILED", payload(suites=["secure"] * 17))
    g.reject("target", "hs_init offering no version", "HANDSHAKE_FAILED", payload(versions=[]))
    g.reject("target", "hs_init offering version 256 (not a uint8)", "HANDSHAKE_FAILED", payload(versions=[1, 256]))
    g.reject("target", "hs_init with a 31-byte ephemeral key", "HANDSHAKE_FAILED", payload(eph=pl["eph"][:31]))
    g.reject("target", "hs_init payload over Limits.max_header_bytes", "OVERSIZED", payload(suites=["secure", "x" * 70_000]))
    g.reject(
        "target",
        "epoch 3 without a session and a repeated payload key: admission first",
        "WRONG_EPOCH",
        body(dup, {"op": "header", "set": {"epoch": 3}}),
    )
    g.reject(
        "target",
        "only 'plaintext' offered and no version: the payload's form first",
        "HANDSHAKE_FAILED",
        payload(suites=["plaintext"], versions=[]),
    )
    g.reject("target", "only 'plaintext' and only version 2: DOWNGRADE first", "DOWNGRADE", payload(suites=["plaintext"], versions=[2]))
    g.reject(
        "target",
        "only version 2 and a low-order key: UNSUPPORTED_VERSION first",
        "UNSUPPORTED_VERSION",
        payload(versions=[2], eph=LOW_ORDER_POINT),
    )
    r = g.deliver(a, "target", "target answers the genuine hs_init")
    resp = g.out(r)
    header = {k: v for k, v in split_frame(resp)[2].items() if k != "body_length"}
    good = cbor2.loads(split_frame(resp)[3][:-64])
    th1 = transcript_hash(init)

    def signed(key: bytes = PARTY_KEYS["target"], transcript: bytes = th1, hdr: dict | None = None, **fields: Any) -> dict:
        return {
            "kind": "signed_handshake",
            "header": value_to_json(dict(header, **(hdr or {}))),
            "payload": value_to_json(dict(good, **fields)),
            "signing_key": key.hex(),
            "context": RESP_CONTEXT.hex(),
            "transcript": transcript.hex(),
        }

    link = "party:target"
    for comment, code, construction in [
        (
            "hs_resp choosing 'plaintext', signed by target: verified, then DOWNGRADE (charged to target)",
            "DOWNGRADE",
            signed(suite="plaintext"),
        ),
        ("hs_resp choosing version 2, signed by target", "UNSUPPORTED_VERSION", signed(version=2)),
        ("hs_resp choosing 'plaintext' and version 2: DOWNGRADE first", "DOWNGRADE", signed(suite="plaintext", version=2)),
        ("hs_resp with a low-order key, signed by target", "HANDSHAKE_FAILED", signed(eph=LOW_ORDER_POINT)),
        (
            "hs_resp with version 2 and a low-order key: UNSUPPORTED_VERSION first",
            "UNSUPPORTED_VERSION",
            signed(version=2, eph=LOW_ORDER_POINT),
        ),
        (
            "hs_resp signed over another transcript (charged to the link)",
            "HANDSHAKE_FAILED",
            signed(transcript=bytes(32), suite="plaintext"),
        ),
        ("hs_resp signed with source's key", "HANDSHAKE_FAILED", signed(key=PARTY_KEYS["source"])),
        (
            "hs_resp for another session and epoch: WRONG_SESSION first",
            "WRONG_SESSION",
            signed(hdr={"session_id": b"\xbb" * 16, "epoch": 4}),
        ),
        ("hs_resp for epoch 4 of the session in negotiation", "WRONG_EPOCH", signed(hdr={"epoch": 4})),
    ]:
        g.reject("source", comment, code, construction, link=link)
    g.add("rejections", "source's log: only the verified hs_resp are charged to target", party="source")
    f = g.deliver(r, "source", "the genuine hs_resp completes the handshake", link=link)
    g.deliver(f, "target", "target verifies hs_finish", index=0)
    g.deliver(f, "target", "target opens the ack", index=1)
    g.add("rekey", "source starts epoch 1", party="source", peer="target")
    g.add("rekey", "rekey() again while source's own handshake is pending: nothing", party="source", peer="target")


def _inner_and_order(vf: VectorFile) -> None:
    g = vf.conversation("secure", "§7.5 inner header of authentic envelopes; §9 order around authentication", seed="inner/")
    establish(g, "source", "target")
    g.add("keys", "traffic keys of source towards target", party="source", peer="target")
    st = g.state("source", "target")
    base = st.send.seq
    hdr = secure_header(type="artifact", sender="source", receiver="target", session_id=st.session_id, epoch=0, seq=base + 1)

    def sealed(inner: bytes, **over: Any) -> dict:
        return seal_case(st, dict(hdr, **over), inner)

    with_meta = stn.save({"x": np.zeros(2, dtype=np.float32)}, metadata={"a": "b"})
    tagged = canonical({"manifest": [], "meta": {}}).replace(b"dmeta\xa0", b"dmeta\xa1\x61a\xc1\x01")
    link = "party:source"
    for comment, code, inner in [
        ("decrypted body shorter than its 4-byte trailer", "MALFORMED_HEADER", b"\x01\x02"),
        ("inner length 65537, over Limits.max_header_bytes", "OVERSIZED", struct.pack(">I", 65537)),
        ("inner length pointing before the start of the body", "MALFORMED_HEADER", b"\xa0" + struct.pack(">I", 5)),
        ("inner header is an array", "MALFORMED_HEADER", _inner([])),
        ("inner header without 'meta'", "MALFORMED_HEADER", _inner({"manifest": []})),
        ("inner 'meta' is an array", "MALFORMED_HEADER", _inner({"manifest": [], "meta": []})),
        ("inner header with an extra key", "MALFORMED_HEADER", _inner({"manifest": [], "meta": {}, "x": 1})),
        ("inner header keys out of canonical order", "MALFORMED_HEADER", _inner(raw=raw_cbor_map([("manifest", []), ("meta", {})]))),
        ("inner meta with a tag", "MALFORMED_HEADER", _inner(raw=tagged)),
        ("inner meta value 17 levels below meta", "MALFORMED_HEADER", _inner({"manifest": [], "meta": {"d": nest(16)}})),
        (
            "inner manifest with 33 dimensions",
            "MALFORMED_HEADER",
            _inner({"manifest": manifest(("x", "int8", [1] * 33)), "meta": {}}, body=bytes(1)),
        ),
        ("decrypted safetensors body with __metadata__", "MANIFEST_MISMATCH", inner_plaintext(with_meta, manifest(("x", "float32", [2])))),
        ("no arrays but a body of safetensors.save({})", "MANIFEST_MISMATCH", inner_plaintext(stn.save({}), [])),
    ]:
        g.reject("target", f"authentic: {comment}", code, sealed(inner), link=link)
    bad = _inner({"manifest": []})
    g.reject("target", "authentic, seq 0 and a bad inner header: the window (STALE) first", "STALE", sealed(bad, seq=0), link=link)
    deep = sealed(_inner({"manifest": [], "meta": {"d": nest(15)}}), seq=base + 100)
    g.reject("target", "authentic: meta value 16 levels below meta, accepted", "valid", deep, link=link)
    n = len(build_input(deep, {}))
    flipped = deep | {"mutations": [{"op": "flip", "offset": n - 1, "bit": 0}]}
    g.reject("target", "that envelope replayed with a flipped tag bit: AUTH_FAILED before REPLAY", "AUTH_FAILED", flipped, link=link)
    e = g.send("source -> target ack, held for the order cases", "ack", "source", "target")
    g.reject(
        "target", "session and epoch both wrong: WRONG_SESSION first", "WRONG_SESSION", set_header(e, session_id=b"\xcc" * 16, epoch=9)
    )
    g.reject(
        "target",
        "addressed to coordinator from an unknown sender: WRONG_RECEIVER first",
        "WRONG_RECEIVER",
        set_header(e, receiver="coordinator", sender="mallory"),
    )
    g.reject(
        "target",
        "plaintext envelope from an unknown sender: UNKNOWN_PEER before DOWNGRADE",
        "UNKNOWN_PEER",
        plaintext_frame("ack", "mallory", "target"),
    )
    coord = secure_header(type="ack", sender="coordinator", receiver="target", session_id=b"\xdd" * 16, epoch=5)
    g.reject(
        "target",
        "no session with coordinator, another session id and epoch: NOT_ESTABLISHED first",
        "NOT_ESTABLISHED",
        seal_case(st, coord, _inner({"manifest": [], "meta": {}})),
    )
    g.deliver(e, "target", "the held ack is still accepted")
    g.add("rejections", "target's log: authentic failures charged to source, the others to links", party="target")


def _window(vf: VectorFile) -> None:
    g = vf.conversation("secure", "§8 on the secure suite: exact window size, authentic sequence numbers far ahead", seed="window/")
    establish(g, "source", "target")
    exact_window(g)
    g.add("keys", "traffic keys of source towards target", party="source", peer="target")
    st = g.state("source", "target")
    top = st.send.seq
    hdr = secure_header(type="ack", sender="source", receiver="target", session_id=st.session_id, epoch=0)
    empty = inner_plaintext(b"", [])
    far = top + 2**40
    for comment, seq, code in [
        ("authentic, 2^40 ahead of the top", far, "valid"),
        ("one below the new top: never seen, accepted", far - 1, "valid"),
        ("2^40 ahead, again", far, "REPLAY"),
        ("authentic, 2^63 - 1 ahead of that", far + 2**63 - 1, "valid"),
        ("authentic, 2^64 - 1", 2**64 - 1, "valid"),
        ("2^64 - 1 again", 2**64 - 1, "REPLAY"),
    ]:
        g.reject("target", comment, code, seal_case(st, dict(hdr, seq=seq), empty))
    nxt = g.send("source's next genuine message, far behind the top now", "ack", "source", "target")
    g.deliver(nxt, "target", "older than the window", expect="STALE")


def _rekey_every(vf: VectorFile) -> None:
    g = vf.conversation(
        "secure",
        "§7.6 rekey_every = 2 (source and target); a pending handshake started by the peer counts; rekey() without a session",
        seed="rekey/",
        rekey_every={"source": 2, "target": 2},
    )
    establish(g, "source", "target")
    s2 = g.send("source #2: epoch 0, seq 2", "ack", "source", "target")
    g.deliver(s2, "target", "target opens #2")
    s3 = g.send("source #3: 2 sent in epoch 0, so an epoch-1 hs_init goes out and #3 waits", "ack", "source", "target")
    r = g.deliver(s3, "target", "target answers")
    f = g.deliver(r, "source", "source: epoch 1, hs_finish and #3")
    g.deliver(f, "target", "target: epoch 1", index=0)
    g.deliver(f, "target", "target opens #3 (epoch 1, seq 1)", index=1)
    for i in (1, 2):
        t = g.send(f"target #{i} to source: epoch 1", "ack", "target", "source")
        g.deliver(t, "source", f"source opens target #{i}")
    rk = g.add("rekey", "source starts epoch 2", party="source", peer="target")
    rr = g.deliver(rk, "target", "target answers: a handshake started by source is pending at target")
    t3 = g.send("target #3: 2 sent, but the pending handshake counts - no hs_init, sealed in epoch 1", "ack", "target", "source")
    g.deliver(t3, "source", "source opens target #3 (its own handshake is pending)")
    g.add("rekey", "target's rekey() while the peer's handshake is pending: nothing", party="target", peer="source")
    rf = g.deliver(rr, "source", "source: epoch 2")
    g.deliver(rf, "target", "target: epoch 2", index=0)
    t4 = g.send("target #4: epoch 2, seq 1", "ack", "target", "source")
    g.deliver(t4, "source", "source opens target #4")
    c = g.add("rekey", "coordinator's rekey() with no session towards target: a new session at epoch 0", party="coordinator", peer="target")
    cr = g.deliver(c, "target", "target answers")
    cf = g.deliver(cr, "coordinator", "coordinator: session established, nothing queued")
    g.deliver(cf, "target", "target: session established", index=0)


def _accounting(vf: VectorFile) -> None:
    g = vf.conversation(
        "secure",
        "§10 accounting: rejections are charged to the sender only when authenticated and fresh, else to the link",
        limits={"target": {"max_rejections": 3}},
        seed="accounting/",
    )
    establish(g, "source", "target", to_responder="party:source", to_initiator="party:target")
    g.add("keys", "traffic keys of source towards target", party="source", peer="target")
    st = g.state("source", "target")
    a1 = g.send("source -> target #1", "ack", "source", "target", meta={"i": 1})
    g.deliver(a1, "target", "accepted over party:source", link="party:source")
    a2 = g.send("source -> target #2", "ack", "source", "target", meta={"i": 2})
    env = g.out(a2)
    g.reject(
        "target",
        "forgery over inject: #2 with a flipped tag bit",
        "AUTH_FAILED",
        mutated(a2, {"op": "flip", "offset": len(env) - 1, "bit": 0}),
        link="inject",
    )
    g.reject("target", "forgery over inject: #1 replayed (a replay is the replayer's doing)", "REPLAY", output(a1), link="inject")
    g.reject("target", "forgery over inject: another session id", "WRONG_SESSION", set_header(a2, session_id=b"\xee" * 16), link="inject")
    g.deliver(a2, "target", "inject is cut off: even genuine #2 is refused over it", expect="PEER_CUT_OFF", link="inject")
    g.deliver(a2, "target", "#2 over party:source: source was never charged", link="party:source")
    hdr = secure_header(type="artifact", sender="source", receiver="target", session_id=st.session_id, epoch=0, seq=st.send.seq + 5)
    for i, (comment, code, inner) in enumerate(
        [
            ("authentic with a disallowed dtype", "DISALLOWED_DTYPE", inner_plaintext(bytes(16), manifest(("x", "complex64", [2])))),
            (
                "authentic with a manifest that does not match",
                "MANIFEST_MISMATCH",
                inner_plaintext(bytes(16), manifest(("x", "float32", [2]))),
            ),
            ("authentic with a malformed inner header", "MALFORMED_HEADER", _inner({"manifest": []})),
        ]
    ):
        g.reject("target", f"{comment}: charged to source ({i + 1} of 3)", code, seal_case(st, hdr, inner), link="party:source")
    a3 = g.send("source -> target #3", "ack", "source", "target", meta={"i": 3})
    g.deliver(a3, "target", "source is cut off: refused over any link", expect="PEER_CUT_OFF", link="party:source-2")
    establish(g, "coordinator", "target", to_responder="coordinator", to_initiator="party:target")
    g.add("rejections", "target's log and what is cut off", party="target")
