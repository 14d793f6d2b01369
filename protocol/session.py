"""Immutable per-peer session state: replay window, send/receive epochs, pending handshakes.

Every value here is frozen: an endpoint computes a new `PeerState` for each envelope and
installs it only when every check has passed, so a rejected envelope changes nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from . import secure
from .errors import ErrorCode
from .message import Message
from .wire import PLAINTEXT_SESSION_LABEL, REPLAY_WINDOW, SESSION_ID_LEN


def evolve(record: Any, **changes: Any) -> Any:
    """`dataclasses.replace` for the frozen records below, without running `__init__` again
    (none of them validates anything there): per envelope it is the hot path of sealing and
    opening."""
    fields = record.__dataclass_fields__
    for name in changes:
        if name not in fields:
            raise TypeError(f"{type(record).__name__} has no field {name!r}")
    new = object.__new__(type(record))
    new.__dict__.update(record.__dict__, **changes)
    return new


@dataclass(frozen=True)
class ReplayWindow:
    """RFC 4303-style sliding window over received sequence numbers (which start at 1).

    Memory is O(REPLAY_WINDOW) bits whatever the sequence numbers: a jump of a window or more
    starts a fresh bitmap instead of shifting the old one (a shift by 2^40 would build a
    2^40-bit integer).
    """

    top: int = 0  # highest sequence number accepted so far (0: none yet)
    bits: int = 0  # bit i set <=> sequence number top - i was accepted (i < REPLAY_WINDOW)

    def check(self, seq: int) -> ErrorCode | None:
        if seq == 0 or (seq <= self.top and self.top - seq >= REPLAY_WINDOW):
            return ErrorCode.STALE
        if seq <= self.top and (self.bits >> (self.top - seq)) & 1:
            return ErrorCode.REPLAY
        return None

    def accept(self, seq: int) -> ReplayWindow:
        if seq > self.top:
            shift = seq - self.top
            if shift >= REPLAY_WINDOW:  # nothing of the old window stays inside the new one
                return ReplayWindow(seq, 1)
            return ReplayWindow(seq, ((self.bits << shift) | 1) & ((1 << REPLAY_WINDOW) - 1))
        if self.top - seq >= REPLAY_WINDOW:  # stale: nothing to remember (check() refuses it)
            return self
        return ReplayWindow(self.top, self.bits | (1 << (self.top - seq)))


@dataclass(frozen=True)
class SendState:
    epoch: int
    key: bytes = b""  # empty in the plaintext suite
    iv: bytes = b""
    seq: int = 0  # last sequence number used in this epoch (= messages sent in it)


@dataclass(frozen=True)
class RecvState:
    epoch: int
    key: bytes = b""
    iv: bytes = b""
    window: ReplayWindow = field(default_factory=ReplayWindow)


@dataclass(frozen=True)
class Pending:
    """A handshake in progress with one peer."""

    role: str  # "initiator" or "responder"
    session_id: bytes
    epoch: int
    transcript: bytes  # TH1 (initiator) or TH2 (responder)
    eph_private: bytes = b""  # initiator only
    keys: secure.TrafficKeys | None = None  # responder only


@dataclass(frozen=True)
class PeerState:
    session_id: bytes | None = None
    send: SendState | None = None
    recv: RecvState | None = None
    recv_previous: RecvState | None = None  # the epoch before `recv`, still accepted
    pending: Pending | None = None
    queue: tuple[Message, ...] = ()


def plaintext_session_id(session_seed: bytes, a: str, b: str) -> bytes:
    """First 16 bytes of SHA-256(label || lp(seed) || lp(name1) || lp(name2)), names sorted.

    `session_seed` is a byte string (PROTOCOL.md §6.1); names are compared by code point.
    """
    first, second = sorted((a, b))

    def lp(x: bytes) -> bytes:
        return len(x).to_bytes(4, "big") + x

    digest = hashlib.sha256(
        PLAINTEXT_SESSION_LABEL + lp(bytes(session_seed)) + lp(first.encode("utf-8")) + lp(second.encode("utf-8"))
    ).digest()
    return digest[:SESSION_ID_LEN]
