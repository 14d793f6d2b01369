"""Wire-format constants of protocol v1 and the tables that drive validation.

Everything an independent implementation must agree on lives here (and in PROTOCOL.md); the
schema hash in `protocol.schema` is computed over these tables, so changing any of them
without bumping `WIRE_VERSION` fails the pinned test.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"CDRS"
WIRE_VERSION = 1
SUPPORTED_VERSIONS = (1,)

# magic (4) | version u8 | flags u8 | header length u32 big-endian
PREFIX = struct.Struct(">4sBBI")
PREFIX_LEN = PREFIX.size  # 10

FLAG_ENCRYPTED_BODY = 0x01  # body is AEAD ciphertext (secure-suite application messages)
KNOWN_FLAGS = FLAG_ENCRYPTED_BODY

SUITES = ("plaintext", "secure")

APPLICATION_TYPES = frozenset({"control", "artifact", "request", "gradient", "report", "ack", "error", "bye"})
HANDSHAKE_TYPES = frozenset({"hs_init", "hs_resp", "hs_finish"})
MESSAGE_TYPES: frozenset[str] = APPLICATION_TYPES | HANDSHAKE_TYPES

SESSION_ID_LEN = 16
MAX_NAME_LEN = 256  # party names and array names, in Unicode code points
MAX_NDIM = 32
MAX_META_DEPTH = 16  # levels below the meta map
# Levels below the top-level item (which is level 0). `meta` sits at level 1 of a header, so
# the deepest meta value allowed to a sender is exactly the deepest a receiver accepts.
CBOR_MAX_DEPTH = MAX_META_DEPTH + 1
U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1

# Secure suite.
AEAD_TAG_LEN = 16
AEAD_KEY_LEN = 32
AEAD_NONCE_LEN = 12
CHUNK_SIZE = 16 * 1024 * 1024  # plaintext bytes per AEAD call
MAX_CHUNKS = 2**32  # chunk index is 32 bits of the nonce
REPLAY_WINDOW = 1024
X25519_KEY_LEN = 32
ED25519_SIG_LEN = 64
INNER_TRAILER = struct.Struct(">I")  # length of the inner CBOR map at the end of the plaintext

# Domain-separation labels (bytes on the wire or in key derivation; never change within v1).
PLAINTEXT_SESSION_LABEL = b"cdrsim/v1 plaintext session"
TRAFFIC_KEY_INFO = b"cdrsim/v1 traffic keys"
RESP_SIG_CONTEXT = b"cdrsim/v1 hs_resp signature\x00"
FINISH_SIG_CONTEXT = b"cdrsim/v1 hs_finish signature\x00"
LOW_ORDER_PROBE_KEY = bytes([0x77] * 32)  # fixed X25519 scalar used only to test peer keys


# dtype name -> (safetensors code, little-endian numpy dtype). The order of this table is the
# safetensors layout order (it sorts tensors by dtype, descending, then by name).
DTYPES: dict[str, tuple[str, np.dtype]] = {
    "int64": ("I64", np.dtype("<i8")),
    "float64": ("F64", np.dtype("<f8")),
    "float32": ("F32", np.dtype("<f4")),
    "int32": ("I32", np.dtype("<i4")),
    "float16": ("F16", np.dtype("<f2")),
    "int16": ("I16", np.dtype("<i2")),
    "int8": ("I8", np.dtype("i1")),
    "uint8": ("U8", np.dtype("u1")),
    "bool": ("BOOL", np.dtype("?")),
}
DTYPE_RANK = {name: i for i, name in enumerate(DTYPES)}

# Header fields in wire order of documentation: (name, type). Types:
#   uint8/uint32/uint64: CBOR unsigned int in range; tstr: text; name: text, 1..MAX_NAME_LEN chars;
#   bstr16: 16-byte byte string; "uint64?" : uint64 or null; manifest; meta: see PROTOCOL.md.
HEADER_FIELDS: tuple[tuple[str, str], ...] = (
    ("version", "uint8"),
    ("suite", "tstr"),
    ("type", "tstr"),
    ("session_id", "bstr16"),
    ("sender", "name"),
    ("receiver", "name"),
    ("epoch", "uint32"),
    ("seq", "uint64"),
    ("round", "uint64"),
    ("reply_to", "uint64?"),
    ("body_length", "uint64"),
    ("manifest", "manifest"),
    ("meta", "meta"),
)
COMMON_FIELDS = frozenset(name for name, _ in HEADER_FIELDS[:11])
# Plaintext application messages carry the manifest and meta in the clear; the secure suite
# puts both inside the ciphertext, so its headers carry only the common fields.
PLAINTEXT_FIELDS = COMMON_FIELDS | {"manifest", "meta"}
SECURE_FIELDS = COMMON_FIELDS

# Handshake payloads (canonical CBOR maps in the body, followed by a signature where noted).
HANDSHAKE_MAX_OFFERS = 16  # hs_init offers 1..16 suites and 1..16 versions
HANDSHAKE_PAYLOADS: dict[str, tuple[tuple[tuple[str, str], ...], bool]] = {
    "hs_init": ((("eph", "bstr32"), ("suites", "tstr[]"), ("versions", "uint8[]")), False),
    "hs_resp": ((("eph", "bstr32"), ("suite", "tstr"), ("version", "uint8")), True),
    "hs_finish": ((), True),
}


@dataclass(frozen=True)
class Limits:
    """Caps a receiver checks before it allocates anything (local policy, not wire format)."""

    max_envelope_bytes: int = 1024**3
    max_header_bytes: int = 64 * 1024
    max_arrays: int = 4096
    max_rejections: int = 16

    def __post_init__(self) -> None:
        for name in ("max_envelope_bytes", "max_header_bytes", "max_arrays", "max_rejections"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"Limits.{name} must be a positive int, got {value!r}")
        if self.max_header_bytes > U32_MAX:
            raise ValueError(f"Limits.max_header_bytes must be <= {U32_MAX} (u32 header length)")
