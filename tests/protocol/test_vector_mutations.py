"""Mutation test of the golden vectors: change one rule of the implementation, and a named
vector must fail. Each row of MUTANTS patches the codec or endpoint (tests/protocol/mutants.py;
never the harness in protocol.conformance, which rebuilds inputs from the specification) and
names the vector(s) expected to fail first. The table of results is printed after the run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import protocol_mutants as m
import pytest
from protocol_helpers import REPORT

import protocol.cbor as pcbor
import protocol.secure as secure
import protocol.session as session
import protocol.tensors as tensors
from protocol.conformance import VECTOR_DIR, VectorMismatch, replay

CODEC, PLAIN, SECURE = "codec.json", "endpoint_plaintext.json", "endpoint_secure.json"


@dataclass(frozen=True)
class Mutant:
    rule: str  # the rule of PROTOCOL.md that the patch breaks
    patch: Callable[[pytest.MonkeyPatch], None]
    file: str
    caught_by: tuple[str, ...]  # comments of the vectors expected to fail first


MUTANTS = [
    Mutant("§8 window 1023 wide", m.set_attr(session, "REPLAY_WINDOW", 1023), PLAIN, ("1023 behind the top: inside the window, accepted",)),
    Mutant("§8 window 1025 wide", m.set_attr(session, "REPLAY_WINDOW", 1025), SECURE, ("1024 behind the top: outside the window",)),
    Mutant(
        "§8 a jump of W or more keeps the old bitmap",
        m.window_keeps_old_bits,
        PLAIN,
        ("one below the new top: never seen, accepted (the old bitmap must not shift into it)",),
    ),
    Mutant(
        "§7.5 chunk of 2^24 - 1 bytes",
        m.set_attr(secure, "CHUNK_SIZE", 2**24 - 1),
        SECURE,
        ("inner plaintext of exactly 16 MiB: one chunk, body_length = 2^24 + 16",),
    ),
    Mutant(
        "§7.5 chunk of 2^23 bytes",
        m.set_attr(secure, "CHUNK_SIZE", 2**23),
        SECURE,
        ("inner plaintext of exactly 16 MiB: one chunk, body_length = 2^24 + 16",),
    ),
    Mutant(
        "§7.5 a final chunk of only a tag accepted",
        m.empty_final_chunk_allowed,
        SECURE,
        ("authentic 16 MiB inner sealed as a full chunk plus an empty one: a final chunk of only a tag is refused",),
    ),
    Mutant(
        "§4 DEL escaped as \\u007f",
        m.escape_names(lambda s: s.replace("\x7f", "\\u007f")),
        CODEC,
        ("array name with a quote, a backslash, JSON short escapes, U+0001, U+001F, DEL, U+2028, é and /",),
    ),
    Mutant(
        "§4 non-ASCII escaped",
        m.escape_names(lambda s: s.encode("ascii", "backslashreplace").decode()),
        CODEC,
        ("0-d array, zero-size array and a non-ASCII array name",),
    ),
    Mutant(
        "§4 control characters in upper-case hex",
        m.escape_names(lambda s: s.replace("\\u001f", "\\u001F")),
        CODEC,
        ("array name with a quote, a backslash, JSON short escapes, U+0001, U+001F, DEL, U+2028, é and /",),
    ),
    Mutant("§4 empty body written as save({})", m.empty_body_is_save_of_nothing, CODEC, ("plaintext ack message",)),
    Mutant(
        "§3.1 depth 18 levels accepted",
        m.set_attr(pcbor, "CBOR_MAX_DEPTH", 18),
        CODEC,
        ("meta value 17 levels below meta (level 18 of the header)",),
    ),
    Mutant(
        "§3.1 depth 16 levels",
        m.set_attr(pcbor, "CBOR_MAX_DEPTH", 16),
        CODEC,
        ("meta value 16 levels below meta (level 17 of the header): the deepest allowed",),
    ),
    Mutant(
        "§10 sender allows meta 17 deep",
        m.set_attr(pcbor, "MAX_META_DEPTH", 17),
        CODEC,
        ("meta value 17 levels below meta: the sender refuses it",),
    ),
    Mutant("§3.2 names of 257 code points", m.name_limit(257), CODEC, ("sender name of 257 code points: the sender refuses it",)),
    Mutant(
        "§3.2 names counted in UTF-8 bytes",
        m.names_in_bytes,
        CODEC,
        ("sender name of 256 code points (512 UTF-8 bytes)", "sender name of 256 code points"),
    ),
    Mutant("§4 33 dimensions", m.set_attr(tensors, "MAX_NDIM", 33), CODEC, ("array with 33 dimensions: the sender refuses it",)),
    Mutant(
        "§3.1 duplicates reported before the rest of the item",
        m.duplicates_first,
        CODEC,
        ("duplicate key in meta, invalid UTF-8 later in the header",),
    ),
    Mutant(
        "§3.1 canonical form checked before duplicates",
        m.canonical_before_duplicates,
        CODEC,
        ("duplicate key whose value is a non-shortest float (1.0 as a double)",),
    ),
    Mutant(
        "§9 envelope size before the version byte",
        m.frame_check_first(m.size_first),
        CODEC,
        ("version byte 2 in an envelope over max_envelope_bytes: step 3 before 4",),
    ),
    Mutant(
        "§9 reserved flags before the envelope size",
        m.frame_check_first(m.flags_first),
        CODEC,
        ("reserved flag in an envelope over max_envelope_bytes: step 4 before 5",),
    ),
    Mutant(
        "§9 suite before the header version field",
        m.header_check_first(m.suite_first),
        CODEC,
        ("header 'version' 2 and unknown suite: version field first",),
    ),
    Mutant(
        "§12 header version field is UNSUPPORTED_VERSION",
        m.header_check_first(m.version_field_unsupported),
        CODEC,
        ("header 'version' field says 2",),
    ),
    Mutant(
        "§9 payload CBOR errors keep their own code",
        m.payload_code_passed_through,
        SECURE,
        ("hs_init payload repeating the key 'eph' (a payload's CBOR errors are HANDSHAKE_FAILED)",),
    ),
    Mutant("§9 handshake payload not bounded", m.payload_unbounded, SECURE, ("hs_init payload over Limits.max_header_bytes",)),
    Mutant(
        "§9 WRONG_EPOCH before WRONG_SESSION",
        m.open_secure_first(m.epoch_first),
        SECURE,
        ("session and epoch both wrong: WRONG_SESSION first",),
    ),
    Mutant(
        "§8 window before authentication",
        m.open_secure_first(m.window_first),
        SECURE,
        ("that envelope replayed with a flipped tag bit: AUTH_FAILED before REPLAY",),
    ),
    Mutant(
        "§9 inner header before the window",
        m.open_secure_first(m.inner_first),
        SECURE,
        ("authentic, seq 0 and a bad inner header: the window (STALE) first",),
    ),
    Mutant(
        "§9 registry before the receiver",
        m.registry_first,
        SECURE,
        ("addressed to coordinator from an unknown sender: WRONG_RECEIVER first",),
    ),
    Mutant("§7.5 §4 length from body_length", m.length_from_ciphertext, SECURE, ("source opens the control message",)),
    Mutant(
        "§7.5 inner length limit ignored", m.inner_limit_ignored, SECURE, ("authentic: inner length 65537, over Limits.max_header_bytes",)
    ),
    Mutant("§7.5 inner 'meta' defaulted", m.inner_meta_defaulted, SECURE, ("authentic: inner header without 'meta'",)),
    Mutant(
        "§7.5 impossible lengths as MALFORMED_HEADER",
        m.impossible_lengths_malformed,
        SECURE,
        ("impossible ciphertext length 0: an empty body",),
    ),
    Mutant(
        "§7.6 rekey() without a session does nothing",
        m.rekey_without_session_does_nothing,
        SECURE,
        ("coordinator's rekey() with no session towards target: a new session at epoch 0",),
    ),
    Mutant("§6.3 rekey_every off by one", m.rekey_off_by_one, PLAIN, ("source -> target #3: epoch 1",)),
    Mutant(
        "§7.6 a peer's pending handshake does not count",
        m.pending_responder_ignored,
        SECURE,
        ("target #3: 2 sent, but the pending handshake counts - no hs_init, sealed in epoch 1",),
    ),
    Mutant(
        "§10 rejections charged to the claimed sender", m.charge_to("sender"), SECURE, ("#2 over party:source: source was never charged",)
    ),
    Mutant(
        "§10 plaintext rejections charged to the claimed sender",
        m.charge_to("sender"),
        PLAIN,
        ("garbage over inject, now cut off: refused before it is parsed", "the same envelope over party:source: source was never charged"),
    ),
    Mutant("§10 nothing charged to the sender", m.charge_to("link"), SECURE, ("source is cut off: refused over any link",)),
]


@cache
def _document(name: str) -> dict:
    return json.loads((VECTOR_DIR / name).read_text(encoding="utf-8"))


def _ids(document: dict, comment: str) -> int:
    found = [t["tcId"] for g in document["testGroups"] for t in g["tests"] if t["comment"] == comment]
    assert len(found) == 1, f"{comment!r} names {len(found)} vectors; a mutant must name exactly one"
    return found[0]


def test_every_mutant_names_existing_vectors():
    for mutant in MUTANTS:
        for comment in mutant.caught_by:
            _ids(_document(mutant.file), comment)


@pytest.fixture
def unremembered():
    """What the receiver remembers of checked manifests was checked under the unchanged rules."""
    tensors.forget_checked_manifests()
    yield
    tensors.forget_checked_manifests()


@pytest.mark.parametrize("mutant", MUTANTS, ids=[mutant.rule for mutant in MUTANTS])
def test_vectors_catch_the_mutant(mutant, monkeypatch, unremembered):
    document = _document(mutant.file)
    wanted = {_ids(document, c) for c in mutant.caught_by}
    mutant.patch(monkeypatch)
    with pytest.raises(VectorMismatch) as info:
        replay(document, until=max(wanted), groups=wanted)
    caught = info.value
    assert caught.tc_id in wanted, f"failed first at tcId {caught.tc_id} ({caught.comment}), not at {sorted(wanted)}: {caught}"
    REPORT["mutations"].append((mutant.rule, mutant.file, caught.tc_id, caught.key, caught.comment))
