"""A machine-readable description of wire format v1 and its hash.

The hash is pinned in tests/protocol/test_schema.py next to WIRE_VERSION: changing a header
field, a message type, an error code or a constant without bumping the version fails that
test (and a version bump must come with a new pin).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from . import wire
from .errors import ErrorCode


def describe() -> dict[str, Any]:
    """Everything two implementations must agree on, as plain JSON-able data."""
    return {
        "wire_version": wire.WIRE_VERSION,
        "supported_versions": list(wire.SUPPORTED_VERSIONS),
        "magic": wire.MAGIC.hex(),
        "prefix": {"format": wire.PREFIX.format, "length": wire.PREFIX_LEN},
        "flags": {"ENCRYPTED_BODY": wire.FLAG_ENCRYPTED_BODY, "known_mask": wire.KNOWN_FLAGS},
        "suites": list(wire.SUITES),
        "application_types": sorted(wire.APPLICATION_TYPES),
        "handshake_types": sorted(wire.HANDSHAKE_TYPES),
        "header_fields": [list(f) for f in wire.HEADER_FIELDS],
        "plaintext_fields": sorted(wire.PLAINTEXT_FIELDS),
        "secure_fields": sorted(wire.SECURE_FIELDS),
        "handshake_payloads": {
            t: {"fields": [list(f) for f in fields], "signed": signed} for t, (fields, signed) in sorted(wire.HANDSHAKE_PAYLOADS.items())
        },
        "dtypes": {name: [code, dt.str] for name, (code, dt) in wire.DTYPES.items()},  # order = layout rank
        "error_codes": [c.value for c in ErrorCode],
        "limits_of_format": {
            "session_id_len": wire.SESSION_ID_LEN,
            "max_name_len": wire.MAX_NAME_LEN,
            "max_ndim": wire.MAX_NDIM,
            "max_meta_depth": wire.MAX_META_DEPTH,
            "cbor_max_depth": wire.CBOR_MAX_DEPTH,
            "handshake_max_offers": wire.HANDSHAKE_MAX_OFFERS,
        },
        "secure": {
            "aead": "ChaCha20-Poly1305",
            "key_len": wire.AEAD_KEY_LEN,
            "nonce_len": wire.AEAD_NONCE_LEN,
            "tag_len": wire.AEAD_TAG_LEN,
            "chunk_size": wire.CHUNK_SIZE,
            "replay_window": wire.REPLAY_WINDOW,
            "kex": "X25519",
            "signature": "Ed25519",
            "kdf": "HKDF-SHA256",
            "inner_trailer": wire.INNER_TRAILER.format,
            "labels": {
                "plaintext_session": wire.PLAINTEXT_SESSION_LABEL.hex(),
                "traffic_key_info": wire.TRAFFIC_KEY_INFO.hex(),
                "resp_sig_context": wire.RESP_SIG_CONTEXT.hex(),
                "finish_sig_context": wire.FINISH_SIG_CONTEXT.hex(),
                "low_order_probe_key": wire.LOW_ORDER_PROBE_KEY.hex(),
            },
        },
    }


def schema_hash() -> str:
    """SHA-256 over the canonical JSON of `describe()`."""
    text = json.dumps(describe(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
