"""One party's protocol state towards all its peers (sans-I/O: bytes in, bytes out).

All per-peer state lives in immutable `PeerState` values. Handling an envelope computes a new
`PeerState` and installs it only when every check has passed, so a rejected envelope cannot
change anything but the rejection log (PROTOCOL.md §8).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from . import secure
from .codec import Frame, check_message, encode, message_from_frame, parse_frame, plaintext_body
from .errors import ErrorCode, ProtocolError
from .keys import Identity, Registry
from .message import Message
from .wire import (
    FINISH_SIG_CONTEXT,
    HANDSHAKE_TYPES,
    PLAINTEXT_SESSION_LABEL,
    REPLAY_WINDOW,
    RESP_SIG_CONTEXT,
    SESSION_ID_LEN,
    SUITES,
    U32_MAX,
    U64_MAX,
    WIRE_VERSION,
    X25519_KEY_LEN,
    Limits,
)

_WINDOW_MASK = (1 << REPLAY_WINDOW) - 1


@dataclass(frozen=True)
class ReplayWindow:
    """RFC 4303-style sliding window over received sequence numbers (which start at 1)."""

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
            return ReplayWindow(seq, ((self.bits << (seq - self.top)) | 1) & _WINDOW_MASK)
        return ReplayWindow(self.top, self.bits | (1 << (self.top - seq)))


@dataclass(frozen=True)
class SendState:
    epoch: int
    key: bytes = b""  # empty in the plaintext suite
    iv: bytes = b""
    seq: int = 0  # last sequence number used


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
    """First 16 bytes of SHA-256(label || lp(seed) || lp(name1) || lp(name2)), names sorted."""
    first, second = sorted((a, b))

    def lp(x: bytes) -> bytes:
        return len(x).to_bytes(4, "big") + x

    digest = hashlib.sha256(
        PLAINTEXT_SESSION_LABEL + lp(bytes(session_seed)) + lp(first.encode("utf-8")) + lp(second.encode("utf-8"))
    ).digest()
    return digest[:SESSION_ID_LEN]


class Endpoint:
    """The protocol state of party `name` towards all its peers."""

    def __init__(
        self,
        name: str,
        *,
        suite: str = "secure",
        identity: Identity | None = None,
        registry: Registry | None = None,
        limits: Limits = Limits(),
        session_seed: bytes = b"",
        rng: Callable[[int], bytes] | None = None,
        rekey_every: int | None = None,
    ):
        if not isinstance(name, str) or not name:
            raise ValueError(f"an endpoint needs a non-empty party name, got {name!r}")
        if suite not in SUITES:
            raise ValueError(f"unknown suite {suite!r}; choose one of {SUITES}")
        if suite == "secure":
            if identity is None or registry is None:
                raise ValueError(
                    f"endpoint {name!r}: the secure suite needs identity= (this party's Ed25519 key) and "
                    "registry= (every party's pinned public key); use suite='plaintext' only for ablations"
                )
            if identity.name and identity.name != name:
                raise ValueError(f"endpoint {name!r} was given the identity of {identity.name!r}")
            if name in registry and registry.get(name) != identity.public_bytes():
                raise ValueError(f"the registry pins a different key for {name!r} than its identity")
        if rekey_every is not None and (type(rekey_every) is not int or rekey_every < 1):
            raise ValueError(f"rekey_every must be None or a positive int, got {rekey_every!r}")
        if not isinstance(limits, Limits):
            raise TypeError(f"limits must be a protocol.Limits, got {type(limits).__name__}")
        self.name = name
        self.suite = suite
        self.identity = identity
        self.registry = registry
        self.limits = limits
        self.session_seed = bytes(session_seed)
        self.rng: Callable[[int], bytes] = rng or os.urandom
        self.rekey_every = rekey_every
        self.rejections: list[tuple[str, ErrorCode]] = []
        self._rejected: dict[str, int] = {}
        self._peers: dict[str, PeerState] = {}

    # ------------------------------------------------------------------ public API
    def send(self, msg: Message) -> list[bytes]:
        """Envelopes to put on the wire now (secure: a handshake first if needed; msg is queued)."""
        check_message(msg)
        if msg.sender != self.name:
            raise ValueError(f"endpoint {self.name!r} cannot send a message whose sender is {msg.sender!r}")
        peer = msg.receiver
        self._check_peer_name(peer)
        prepared = secure.prepare_inner(msg) if self.suite == "secure" else None
        if prepared is not None:
            self._check_send_size(prepared[1])
        state = self._peer(peer)
        out: list[bytes] = []
        if self.suite == "plaintext":
            if self.rekey_every is not None and state.send.seq >= self.rekey_every:
                state = replace(state, send=SendState(self._next_epoch(state.send.epoch)))
            envelope, state = self._seal_plaintext(state, msg)
            out.append(envelope)
        else:
            due = self.rekey_every is not None and state.send is not None and state.send.seq >= self.rekey_every
            if state.pending is None and (state.send is None or due):
                init, state = self._start_handshake(peer, state)
                out.append(init)
            # Hold the message while a session we need is being negotiated; a handshake the
            # peer started does not stop us from using the session we already have.
            if state.send is None or (state.pending is not None and state.pending.role == "initiator"):
                state = replace(state, queue=state.queue + (msg,))
            else:
                envelope, state = self._seal_secure(state, msg, prepared)
                out.append(envelope)
        self._peers[peer] = state
        return out

    def receive(self, data: bytes) -> tuple[list[Message], list[bytes]]:
        """Open one envelope: (application messages delivered, envelopes to send in reply)."""
        try:
            frame = parse_frame(data, self.limits)
        except ProtocolError as exc:
            self._record("?", exc)
            raise
        sender = frame.sender
        if self._rejected.get(sender, 0) >= self.limits.max_rejections:
            exc = ProtocolError(
                ErrorCode.PEER_CUT_OFF,
                f"{sender!r} already sent {self._rejected[sender]} rejected envelopes "
                f"(Limits.max_rejections={self.limits.max_rejections}); everything from it is refused. "
                "Fix the sender and start a new endpoint",
                sender=sender,
            )
            self._record(sender, exc)
            raise exc
        try:
            delivered, out, new_state = self._process(frame)
        except ProtocolError as exc:
            exc.sender = sender
            self._record(sender, exc)
            raise
        if new_state is not None:
            self._peers[sender] = new_state
        return delivered, out

    def rekey(self, peer: str) -> list[bytes]:
        """Start a new epoch with `peer` (secure: a fresh handshake, new keys)."""
        self._check_peer_name(peer)
        state = self._peer(peer)
        if self.suite == "plaintext":
            self._peers[peer] = replace(state, send=SendState(self._next_epoch(state.send.epoch)))
            return []
        if state.pending is not None:
            return []  # a handshake is already under way; it yields the new epoch
        init, state = self._start_handshake(peer, state)
        self._peers[peer] = state
        return [init]

    @staticmethod
    def receiver_view(msg: Message) -> bytes:
        """The plaintext envelope of a delivered message: what a curious receiver holds."""
        return encode(replace(msg, suite="plaintext"))

    # ------------------------------------------------------------------ introspection
    def established(self, peer: str) -> bool:
        state = self._peers.get(peer)
        return self.suite == "plaintext" or (state is not None and state.send is not None)

    def epoch(self, peer: str) -> int | None:
        state = self._peers.get(peer)
        if self.suite == "plaintext" and state is None:
            return 0
        return None if state is None or state.send is None else state.send.epoch

    def state_snapshot(self) -> dict[str, PeerState]:
        """Every piece of per-peer protocol state (immutable values; compare with ==)."""
        return dict(self._peers)

    # ------------------------------------------------------------------ helpers
    def _record(self, sender: str, exc: ProtocolError) -> None:
        self.rejections.append((sender, exc.code))
        self._rejected[sender] = self._rejected.get(sender, 0) + 1

    def _check_peer_name(self, peer: str) -> None:
        if peer == self.name:
            raise ValueError(f"endpoint {self.name!r} cannot talk to itself")
        if self.registry is not None and peer not in self.registry:
            raise ProtocolError(
                ErrorCode.UNKNOWN_PEER,
                f"{peer!r} has no pinned key in the registry (known: {self.registry.names()}); add it first",
            )

    def _check_send_size(self, plain_length: int) -> None:
        body = secure.sealed_body_length(plain_length) if self.suite == "secure" else plain_length
        if body > self.limits.max_envelope_bytes:
            raise ProtocolError(
                ErrorCode.OVERSIZED,
                f"this message needs a {body}-byte body, over Limits.max_envelope_bytes="
                f"{self.limits.max_envelope_bytes}; split it into smaller messages",
            )

    def _peer(self, peer: str) -> PeerState:
        state = self._peers.get(peer)
        if state is not None:
            return state
        if self.suite == "plaintext":
            return PeerState(
                session_id=plaintext_session_id(self.session_seed, self.name, peer),
                send=SendState(0),
                recv=RecvState(0),
            )
        return PeerState()

    @staticmethod
    def _next_epoch(epoch: int) -> int:
        if epoch >= U32_MAX:
            raise ProtocolError(ErrorCode.WRONG_EPOCH, "epoch counter exhausted; start a new session")
        return epoch + 1

    # ------------------------------------------------------------------ sealing
    def _seal_plaintext(self, state: PeerState, msg: Message) -> tuple[bytes, PeerState]:
        seq = state.send.seq + 1
        envelope = encode(replace(msg, session_id=state.session_id, epoch=state.send.epoch, seq=seq, suite="plaintext"))
        if len(envelope) > self.limits.max_envelope_bytes:
            self._check_send_size(len(envelope))
        return envelope, replace(state, send=replace(state.send, seq=seq))

    def _seal_secure(self, state: PeerState, msg: Message, prepared=None) -> tuple[bytes, PeerState]:
        send = state.send
        seq = send.seq + 1
        if seq > U64_MAX:  # pragma: no cover - 2^64 messages
            raise ProtocolError(ErrorCode.STALE, "sequence numbers exhausted; rekey")
        envelope = secure.seal(msg, session_id=state.session_id, epoch=send.epoch, seq=seq, key=send.key, iv=send.iv, prepared=prepared)
        return envelope, replace(state, send=replace(send, seq=seq))

    def _flush(self, state: PeerState) -> tuple[list[bytes], PeerState]:
        out = []
        for msg in state.queue:
            envelope, state = self._seal_secure(state, msg)
            out.append(envelope)
        return out, replace(state, queue=())

    # ------------------------------------------------------------------ handshake
    def _start_handshake(self, peer: str, state: PeerState) -> tuple[bytes, PeerState]:
        if state.send is not None:
            sid, epoch = state.session_id, self._next_epoch(state.send.epoch)
        else:
            sid, epoch = self.rng(SESSION_ID_LEN), 0
        eph = self.rng(X25519_KEY_LEN)
        if len(sid) != SESSION_ID_LEN or len(eph) != X25519_KEY_LEN:
            raise ValueError("rng(n) must return exactly n bytes")
        init = secure.build_handshake(
            "hs_init",
            session_id=sid,
            sender=self.name,
            receiver=peer,
            epoch=epoch,
            payload={"eph": secure.x25519_public(eph), "suites": ["secure"], "versions": [WIRE_VERSION]},
        )
        pending = Pending("initiator", sid, epoch, hashlib.sha256(init).digest(), eph_private=eph)
        return init, replace(state, pending=pending)

    def _process(self, frame: Frame) -> tuple[list[Message], list[bytes], PeerState | None]:
        h = frame.header
        sender = h["sender"]
        if h["receiver"] != self.name:
            raise ProtocolError(
                ErrorCode.WRONG_RECEIVER,
                f"envelope is addressed to {h['receiver']!r}, not to {self.name!r}; route it by its receiver field",
            )
        if sender == self.name or (self.registry is not None and sender not in self.registry):
            raise ProtocolError(
                ErrorCode.UNKNOWN_PEER,
                f"sender {sender!r} is not a known peer of {self.name!r}"
                + (f" (registry: {self.registry.names()})" if self.registry is not None else ""),
            )
        if h["suite"] != self.suite:
            if self.suite == "secure":
                raise ProtocolError(
                    ErrorCode.DOWNGRADE,
                    f"{self.name!r} speaks only the secure suite and refuses a plaintext envelope from {sender!r}",
                )
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_SUITE,
                f"{self.name!r} is configured for the plaintext suite and cannot open a secure envelope",
            )
        state = self._peer(sender)
        if h["type"] in HANDSHAKE_TYPES:
            return self._handshake(frame, state)
        if self.suite == "plaintext":
            return self._open_plaintext(frame, state)
        return self._open_secure(frame, state)

    def _match_epoch(self, state: PeerState, epoch: int) -> tuple[RecvState, str] | None:
        if state.recv is not None and state.recv.epoch == epoch:
            return state.recv, "recv"
        if state.recv_previous is not None and state.recv_previous.epoch == epoch:
            return state.recv_previous, "recv_previous"
        return None

    def _check_window(self, recv: RecvState, seq: int, sender: str) -> None:
        code = recv.window.check(seq)
        if code is ErrorCode.REPLAY:
            raise ProtocolError(code, f"sequence number {seq} from {sender!r} was already accepted (replayed envelope)")
        if code is ErrorCode.STALE:
            raise ProtocolError(
                code,
                f"sequence number {seq} from {sender!r} is older than the {REPLAY_WINDOW}-message window "
                f"(newest accepted: {recv.window.top}); it can no longer be checked for replay",
            )

    def _open_plaintext(self, frame: Frame, state: PeerState) -> tuple[list[Message], list[bytes], PeerState]:
        h = frame.header
        if h["session_id"] != state.session_id:
            raise ProtocolError(
                ErrorCode.WRONG_SESSION,
                f"session id {h['session_id'].hex()} is not this pair's plaintext session "
                f"{state.session_id.hex()}; both sides must use the same session_seed",
            )
        matched = self._match_epoch(state, h["epoch"])
        advance = False
        if matched is None:
            if h["epoch"] != state.recv.epoch + 1:
                raise ProtocolError(
                    ErrorCode.WRONG_EPOCH,
                    f"epoch {h['epoch']} is neither the current epoch {state.recv.epoch}, the previous one, nor the next one",
                )
            matched, advance = (RecvState(h["epoch"]), "recv"), True
        recv, slot = matched
        self._check_window(recv, h["seq"], h["sender"])
        lay, arrays = plaintext_body(frame, self.limits)
        msg = message_from_frame(frame, lay, arrays, h["meta"], "plaintext")
        recv = replace(recv, window=recv.window.accept(h["seq"]))
        if advance:
            state = replace(state, recv_previous=state.recv, recv=recv)
        else:
            state = replace(state, **{slot: recv})
        return [msg], [], state

    def _open_secure(self, frame: Frame, state: PeerState) -> tuple[list[Message], list[bytes], PeerState]:
        h = frame.header
        sender = h["sender"]
        if state.recv is None:
            raise ProtocolError(
                ErrorCode.NOT_ESTABLISHED,
                f"no secure session with {sender!r} yet; the handshake (hs_init/hs_resp/hs_finish) must complete first",
            )
        if h["session_id"] != state.session_id:
            raise ProtocolError(
                ErrorCode.WRONG_SESSION,
                f"session id {h['session_id'].hex()} from {sender!r} is not the current session {state.session_id.hex()}",
            )
        matched = self._match_epoch(state, h["epoch"])
        if matched is None:
            accepted = [r.epoch for r in (state.recv, state.recv_previous) if r is not None]
            raise ProtocolError(ErrorCode.WRONG_EPOCH, f"epoch {h['epoch']} from {sender!r} is not accepted now (accepted: {accepted})")
        recv, slot = matched
        plain = secure.open_body(frame, key=recv.key, iv=recv.iv)
        self._check_window(recv, h["seq"], sender)
        lay, arrays, meta = secure.parse_inner(plain, self.limits)
        msg = message_from_frame(frame, lay, arrays, meta, "secure")
        return [msg], [], replace(state, **{slot: replace(recv, window=recv.window.accept(h["seq"]))})

    def _handshake(self, frame: Frame, state: PeerState) -> tuple[list[Message], list[bytes], PeerState | None]:
        mtype = frame.header["type"]
        if mtype == "hs_init":
            return self._on_init(frame, state)
        if mtype == "hs_resp":
            return self._on_resp(frame, state)
        return self._on_finish(frame, state)

    def _on_init(self, frame: Frame, state: PeerState) -> tuple[list[Message], list[bytes], PeerState | None]:
        h = frame.header
        sender, sid, epoch = h["sender"], h["session_id"], h["epoch"]
        if state.send is not None:
            rekey = sid == state.session_id and epoch == state.send.epoch + 1
            restart = sid != state.session_id and epoch == 0
            if not (rekey or restart):
                if sid == state.session_id:
                    raise ProtocolError(
                        ErrorCode.WRONG_EPOCH,
                        f"hs_init for epoch {epoch} of the current session; only epoch {state.send.epoch + 1} "
                        "(the next one) may be negotiated",
                    )
                raise ProtocolError(ErrorCode.WRONG_SESSION, "hs_init for another session must start at epoch 0")
        elif epoch != 0:
            raise ProtocolError(ErrorCode.WRONG_EPOCH, f"hs_init for epoch {epoch} without a session; a new session starts at epoch 0")
        payload, _, _ = secure.parse_handshake(frame)
        pending = state.pending
        if pending is not None and pending.role == "initiator" and pending.epoch == epoch:
            # Both sides started the same handshake: the one from the party whose name sorts
            # first wins. (A peer that restarted proposes epoch 0 while we rekey: we answer it.)
            if self.name < sender:
                return [], [], None  # ours wins; the peer answers our hs_init and drops its own
        if "secure" not in payload["suites"]:
            raise ProtocolError(
                ErrorCode.DOWNGRADE, f"{sender!r} offered suites {payload['suites']} without 'secure'; refusing to downgrade"
            )
        if WIRE_VERSION not in payload["versions"]:
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_VERSION,
                f"{sender!r} offered versions {payload['versions']}; this endpoint speaks {WIRE_VERSION}",
            )
        secure.check_peer_ephemeral(payload["eph"])
        th1 = hashlib.sha256(frame.data).digest()
        eph = self.rng(X25519_KEY_LEN)
        if len(eph) != X25519_KEY_LEN:
            raise ValueError("rng(n) must return exactly n bytes")
        shared = secure.x25519_shared(eph, payload["eph"])
        resp = secure.build_handshake(
            "hs_resp",
            session_id=sid,
            sender=self.name,
            receiver=sender,
            epoch=epoch,
            payload={"eph": secure.x25519_public(eph), "suite": "secure", "version": WIRE_VERSION},
            signer=self.identity,
            context=RESP_SIG_CONTEXT,
            transcript=th1,
        )
        th2 = secure.th_next(th1, resp)
        keys = secure.derive_traffic_keys(shared, th2)
        return [], [resp], replace(state, pending=Pending("responder", sid, epoch, th2, keys=keys))

    def _expect_pending(self, frame: Frame, state: PeerState, role: str) -> Pending:
        h = frame.header
        pending = state.pending
        if pending is None or pending.role != role:
            raise ProtocolError(
                ErrorCode.HANDSHAKE_FAILED,
                f"unexpected {h['type']} from {h['sender']!r}: no handshake in progress in which it is due",
            )
        if h["session_id"] != pending.session_id:
            raise ProtocolError(ErrorCode.WRONG_SESSION, f"{h['type']} is for another session than the handshake in progress")
        if h["epoch"] != pending.epoch:
            raise ProtocolError(
                ErrorCode.WRONG_EPOCH, f"{h['type']} is for epoch {h['epoch']}, the handshake in progress is for {pending.epoch}"
            )
        return pending

    def _establish(self, state: PeerState, pending: Pending, send: SendState, recv: RecvState) -> PeerState:
        same_session = state.session_id == pending.session_id and state.recv is not None
        return replace(
            state,
            session_id=pending.session_id,
            send=send,
            recv=recv,
            recv_previous=state.recv if same_session else None,
            pending=None,
        )

    def _on_resp(self, frame: Frame, state: PeerState) -> tuple[list[Message], list[bytes], PeerState]:
        sender = frame.header["sender"]
        pending = self._expect_pending(frame, state, "initiator")
        payload, signed, sig = secure.parse_handshake(frame)
        secure.verify_signature(self.registry.get(sender), sig, RESP_SIG_CONTEXT + pending.transcript + signed, "hs_resp")
        if payload["suite"] != "secure":
            raise ProtocolError(ErrorCode.DOWNGRADE, f"{sender!r} chose suite {payload['suite']!r}; only 'secure' was offered")
        if payload["version"] != WIRE_VERSION:
            raise ProtocolError(ErrorCode.UNSUPPORTED_VERSION, f"{sender!r} chose version {payload['version']}, not offered")
        shared = secure.x25519_shared(pending.eph_private, payload["eph"])
        th2 = secure.th_next(pending.transcript, bytes(frame.data))
        keys = secure.derive_traffic_keys(shared, th2)
        finish = secure.build_handshake(
            "hs_finish",
            session_id=pending.session_id,
            sender=self.name,
            receiver=sender,
            epoch=pending.epoch,
            payload={},
            signer=self.identity,
            context=FINISH_SIG_CONTEXT,
            transcript=th2,
        )
        state = self._establish(
            state,
            pending,
            SendState(pending.epoch, keys.i2r_key, keys.i2r_iv),
            RecvState(pending.epoch, keys.r2i_key, keys.r2i_iv),
        )
        flushed, state = self._flush(state)
        return [], [finish, *flushed], state

    def _on_finish(self, frame: Frame, state: PeerState) -> tuple[list[Message], list[bytes], PeerState]:
        sender = frame.header["sender"]
        pending = self._expect_pending(frame, state, "responder")
        _, signed, sig = secure.parse_handshake(frame)
        secure.verify_signature(self.registry.get(sender), sig, FINISH_SIG_CONTEXT + pending.transcript + signed, "hs_finish")
        keys = pending.keys
        state = self._establish(
            state,
            pending,
            SendState(pending.epoch, keys.r2i_key, keys.r2i_iv),
            RecvState(pending.epoch, keys.i2r_key, keys.i2r_iv),
        )
        flushed, state = self._flush(state)
        return [], flushed, state
