"""The wire format cannot change without a version bump."""

from protocol import WIRE_VERSION, schema_hash
from protocol.schema import describe

# Pinned together: if this test fails, either revert the wire-format change or bump
# WIRE_VERSION (and PROTOCOL.md), regenerate the vectors, and pin the new hash here.
# Re-pinned within v1 once (PROTOCOL.md §15): CBOR depth counted in levels (17, was an
# unspecified 20 that accepted meta the senders refuse) and the hs_init offer bound named.
PINNED = (1, "f164078277aea14cfc7a2e40e61e20a840e30da7693142ed429112b21cd4719d")


def test_schema_hash_is_pinned_with_the_wire_version():
    assert (WIRE_VERSION, schema_hash()) == PINNED


def test_schema_description_covers_the_contract():
    d = describe()
    assert [f[0] for f in d["header_fields"]] == [
        "version",
        "suite",
        "type",
        "session_id",
        "sender",
        "receiver",
        "epoch",
        "seq",
        "round",
        "reply_to",
        "body_length",
        "manifest",
        "meta",
    ]
    assert "PEER_CUT_OFF" in d["error_codes"] and "hs_init" in d["handshake_types"]
    assert d["secure"]["chunk_size"] == 16 * 1024 * 1024


def test_schema_hash_reacts_to_changes(monkeypatch):
    import protocol.wire as wire

    before = schema_hash()
    monkeypatch.setattr(wire, "REPLAY_WINDOW", 64)
    assert schema_hash() != before
