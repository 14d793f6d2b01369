"""The secure suite's handshake state machine (PROTOCOL.md §7.2-7.6), one function per message.

Each function takes the receiving endpoint, the parsed frame and the current state of the
peer, and returns (delivered, replies, new state or None) without touching the endpoint: the
endpoint installs the new state only if nothing raised. Errors raised after a signature has
verified are wrapped in `SenderFault`: only those are charged to the sender (§10).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import TYPE_CHECKING

from . import secure
from .codec import Frame
from .errors import ErrorCode, ProtocolError
from .message import Message
from .session import PeerState, Pending, RecvState, SendState
from .wire import FINISH_SIG_CONTEXT, RESP_SIG_CONTEXT, SESSION_ID_LEN, WIRE_VERSION, X25519_KEY_LEN

if TYPE_CHECKING:
    from .endpoint import Endpoint

Outcome = tuple[list[Message], list[bytes], PeerState | None]


class SenderFault(Exception):
    """A ProtocolError about an envelope proven to come from its sender (authenticated, fresh)."""

    def __init__(self, error: ProtocolError):
        super().__init__(str(error))
        self.error = error


def start(ep: Endpoint, peer: str, state: PeerState) -> tuple[bytes, PeerState]:
    """hs_init for a new session (epoch 0) or, with a session, for its next epoch."""
    if state.send is not None:
        sid, epoch = state.session_id, ep.next_epoch(state.send.epoch)
    else:
        sid, epoch = ep.rng(SESSION_ID_LEN), 0
    eph = ep.rng(X25519_KEY_LEN)
    if len(sid) != SESSION_ID_LEN or len(eph) != X25519_KEY_LEN:
        raise ValueError("rng(n) must return exactly n bytes")
    init = secure.build_handshake(
        "hs_init",
        session_id=sid,
        sender=ep.name,
        receiver=peer,
        epoch=epoch,
        payload={"eph": secure.x25519_public(eph), "suites": ["secure"], "versions": [WIRE_VERSION]},
    )
    pending = Pending("initiator", sid, epoch, hashlib.sha256(init).digest(), eph_private=eph)
    return init, replace(state, pending=pending)


def receive(ep: Endpoint, frame: Frame, state: PeerState) -> Outcome:
    mtype = frame.header["type"]
    if mtype == "hs_init":
        return _on_init(ep, frame, state)
    if mtype == "hs_resp":
        return _on_resp(ep, frame, state)
    return _on_finish(ep, frame, state)


def _on_init(ep: Endpoint, frame: Frame, state: PeerState) -> Outcome:
    h = frame.header
    sender, sid, epoch = h["sender"], h["session_id"], h["epoch"]
    if state.send is not None:
        rekey = sid == state.session_id and epoch == state.send.epoch + 1
        restart = sid != state.session_id and epoch == 0
        if not (rekey or restart):
            if sid == state.session_id:
                raise ProtocolError(
                    ErrorCode.WRONG_EPOCH,
                    f"hs_init for epoch {epoch} of the current session; only epoch {state.send.epoch + 1} (the next one) may be negotiated",
                )
            raise ProtocolError(ErrorCode.WRONG_SESSION, "hs_init for another session must start at epoch 0")
    elif epoch != 0:
        raise ProtocolError(ErrorCode.WRONG_EPOCH, f"hs_init for epoch {epoch} without a session; a new session starts at epoch 0")
    payload, _, _ = secure.parse_handshake(frame, ep.limits)
    pending = state.pending
    if pending is not None and pending.role == "initiator" and pending.epoch == epoch and ep.name < sender:
        # Both sides started the same handshake: the one from the party whose name sorts
        # first wins. (A peer that restarted proposes epoch 0 while we rekey: we answer it.)
        return [], [], None
    if "secure" not in payload["suites"]:
        raise ProtocolError(ErrorCode.DOWNGRADE, f"{sender!r} offered suites {payload['suites']} without 'secure'; refusing to downgrade")
    if WIRE_VERSION not in payload["versions"]:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"{sender!r} offered versions {payload['versions']}; this endpoint speaks {WIRE_VERSION}",
        )
    secure.check_peer_ephemeral(payload["eph"])
    th1 = hashlib.sha256(frame.data).digest()
    eph = ep.rng(X25519_KEY_LEN)
    if len(eph) != X25519_KEY_LEN:
        raise ValueError("rng(n) must return exactly n bytes")
    shared = secure.x25519_shared(eph, payload["eph"])
    resp = secure.build_handshake(
        "hs_resp",
        session_id=sid,
        sender=ep.name,
        receiver=sender,
        epoch=epoch,
        payload={"eph": secure.x25519_public(eph), "suite": "secure", "version": WIRE_VERSION},
        signer=ep.identity,
        context=RESP_SIG_CONTEXT,
        transcript=th1,
    )
    th2 = secure.th_next(th1, resp)
    keys = secure.derive_traffic_keys(shared, th2)
    return [], [resp], replace(state, pending=Pending("responder", sid, epoch, th2, keys=keys))


def _expect_pending(frame: Frame, state: PeerState, role: str) -> Pending:
    h = frame.header
    pending = state.pending
    if pending is None or pending.role != role:
        raise ProtocolError(
            ErrorCode.HANDSHAKE_FAILED,
            f"unexpected {h['type']} from {h['sender']!r}: no handshake in progress in which it is due",
        )
    if h["session_id"] != pending.session_id:  # the session id is compared before the epoch
        raise ProtocolError(ErrorCode.WRONG_SESSION, f"{h['type']} is for another session than the handshake in progress")
    if h["epoch"] != pending.epoch:
        raise ProtocolError(
            ErrorCode.WRONG_EPOCH, f"{h['type']} is for epoch {h['epoch']}, the handshake in progress is for {pending.epoch}"
        )
    return pending


def _establish(state: PeerState, pending: Pending, send: SendState, recv: RecvState) -> PeerState:
    same_session = state.session_id == pending.session_id and state.recv is not None
    return replace(
        state,
        session_id=pending.session_id,
        send=send,
        recv=recv,
        recv_previous=state.recv if same_session else None,
        pending=None,
    )


def _on_resp(ep: Endpoint, frame: Frame, state: PeerState) -> Outcome:
    sender = frame.header["sender"]
    pending = _expect_pending(frame, state, "initiator")
    payload, signed, sig = secure.parse_handshake(frame, ep.limits)
    secure.verify_signature(ep.registry.get(sender), sig, RESP_SIG_CONTEXT + pending.transcript + signed, "hs_resp")
    try:  # the signature verified: from here on the sender answers for what it sent
        if payload["suite"] != "secure":
            raise ProtocolError(ErrorCode.DOWNGRADE, f"{sender!r} chose suite {payload['suite']!r}; only 'secure' was offered")
        if payload["version"] != WIRE_VERSION:
            raise ProtocolError(ErrorCode.UNSUPPORTED_VERSION, f"{sender!r} chose version {payload['version']}, not offered")
        shared = secure.x25519_shared(pending.eph_private, payload["eph"])
    except ProtocolError as exc:
        raise SenderFault(exc) from None
    th2 = secure.th_next(pending.transcript, bytes(frame.data))
    keys = secure.derive_traffic_keys(shared, th2)
    finish = secure.build_handshake(
        "hs_finish",
        session_id=pending.session_id,
        sender=ep.name,
        receiver=sender,
        epoch=pending.epoch,
        payload={},
        signer=ep.identity,
        context=FINISH_SIG_CONTEXT,
        transcript=th2,
    )
    state = _establish(
        state,
        pending,
        SendState(pending.epoch, keys.i2r_key, keys.i2r_iv),
        RecvState(pending.epoch, keys.r2i_key, keys.r2i_iv),
    )
    flushed, state = ep.flush(state)
    return [], [finish, *flushed], state


def _on_finish(ep: Endpoint, frame: Frame, state: PeerState) -> Outcome:
    sender = frame.header["sender"]
    pending = _expect_pending(frame, state, "responder")
    _, signed, sig = secure.parse_handshake(frame, ep.limits)
    secure.verify_signature(ep.registry.get(sender), sig, FINISH_SIG_CONTEXT + pending.transcript + signed, "hs_finish")
    keys = pending.keys
    state = _establish(
        state,
        pending,
        SendState(pending.epoch, keys.r2i_key, keys.r2i_iv),
        RecvState(pending.epoch, keys.i2r_key, keys.i2r_iv),
    )
    flushed, state = ep.flush(state)
    return [], flushed, state
