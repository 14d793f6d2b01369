"""cdrsim wire protocol v1: sans-I/O codecs and session state machines over bytes.

See protocol/PROTOCOL.md for the normative specification. Nothing here does I/O; every
runtime (in-process, Ray, Flower) and every conformance test drives the same code.
"""

from .codec import decode, encode, peek_header
from .endpoint import Endpoint, plaintext_session_id
from .errors import ErrorCode, ProtocolError
from .keys import Identity, Registry, seeded_rng
from .message import Message
from .schema import schema_hash
from .wire import APPLICATION_TYPES, HANDSHAKE_TYPES, MESSAGE_TYPES, SUITES, WIRE_VERSION, Limits

__all__ = [
    "APPLICATION_TYPES",
    "HANDSHAKE_TYPES",
    "MESSAGE_TYPES",
    "SUITES",
    "WIRE_VERSION",
    "Endpoint",
    "ErrorCode",
    "Identity",
    "Limits",
    "Message",
    "ProtocolError",
    "Registry",
    "decode",
    "encode",
    "peek_header",
    "plaintext_session_id",
    "schema_hash",
    "seeded_rng",
]
