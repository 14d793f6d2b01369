"""The single protocol exception and its stable error codes.

Codes are part of the wire contract (transcripts, conformance vectors and other
implementations refer to them by name), so a code is never renamed or reused; PROTOCOL.md
lists what each one means.
"""

from __future__ import annotations

import enum


class ErrorCode(str, enum.Enum):
    """Stable string codes of `ProtocolError` (value == name)."""

    BAD_MAGIC = "BAD_MAGIC"
    UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"
    TRUNCATED = "TRUNCATED"
    OVERSIZED = "OVERSIZED"
    MALFORMED_HEADER = "MALFORMED_HEADER"
    DUPLICATE_KEY = "DUPLICATE_KEY"
    UNKNOWN_MESSAGE_TYPE = "UNKNOWN_MESSAGE_TYPE"
    UNSUPPORTED_SUITE = "UNSUPPORTED_SUITE"
    ENCRYPTED = "ENCRYPTED"
    PEER_CUT_OFF = "PEER_CUT_OFF"
    WRONG_RECEIVER = "WRONG_RECEIVER"
    UNKNOWN_PEER = "UNKNOWN_PEER"
    DOWNGRADE = "DOWNGRADE"
    HANDSHAKE_FAILED = "HANDSHAKE_FAILED"
    NOT_ESTABLISHED = "NOT_ESTABLISHED"
    WRONG_SESSION = "WRONG_SESSION"
    WRONG_EPOCH = "WRONG_EPOCH"
    AUTH_FAILED = "AUTH_FAILED"
    REPLAY = "REPLAY"
    STALE = "STALE"
    MANIFEST_MISMATCH = "MANIFEST_MISMATCH"
    DISALLOWED_DTYPE = "DISALLOWED_DTYPE"

    def __str__(self) -> str:  # so f"{code}" prints the bare code
        return self.value


class ProtocolError(Exception):
    """Any rejection by the protocol layer. `str(e)` says what was wrong and how to fix it.

    `sender` is the sender named in the (cleartext) header when it could be read, else None.
    `charged_to` is set by `Endpoint.receive`: the sender's name when the rejection was
    charged to it, "link:<id>" when charged to the transport link (PROTOCOL.md §10).
    """

    def __init__(self, code: ErrorCode, detail: str, *, sender: str | None = None, charged_to: str | None = None):
        self.code = ErrorCode(code)
        self.detail = detail
        self.sender = sender
        self.charged_to = charged_to
        super().__init__(f"{self.code.value}: {detail}")

    def __reduce__(self):  # keep every field when the error crosses a process boundary
        return (_rebuild_error, (self.code.value, self.detail, self.sender, self.charged_to))


def _rebuild_error(code: str, detail: str, sender: str | None, charged_to: str | None = None) -> ProtocolError:
    return ProtocolError(ErrorCode(code), detail, sender=sender, charged_to=charged_to)
