"""One party's protocol state towards all its peers (sans-I/O: bytes in, bytes out).

All per-peer state lives in immutable `PeerState` values (protocol.session). Handling an
envelope computes a new `PeerState` and installs it only when every check has passed, so a
rejected envelope cannot change anything but the rejection accounting (PROTOCOL.md §9, §10).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace

from . import handshake, secure
from .codec import Frame, check_message, encode, message_from_frame, parse_frame, plaintext_body
from .errors import ErrorCode, ProtocolError
from .handshake import SenderFault
from .keys import Identity, Registry
from .message import Message
from .session import PeerState, RecvState, ReplayWindow, SendState, evolve, plaintext_session_id
from .wire import HANDSHAKE_TYPES, SUITES, U32_MAX, U64_MAX, Limits

__all__ = ["Endpoint", "PeerState", "ReplayWindow", "plaintext_session_id"]

LINK_PREFIX = "link:"  # rejections charged to a transport link are logged as "link:<id>"


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
        # (charged_to, code) for every rejected envelope: charged_to is the sender's name when
        # the envelope was provably its own, else "link:<id>" (PROTOCOL.md §10).
        self.rejections: list[tuple[str, ErrorCode]] = []
        self._charged_senders: dict[str, int] = {}
        self._charged_links: dict[str, int] = {}
        self._peers: dict[str, PeerState] = {}

    # ------------------------------------------------------------------ public API
    def send(self, msg: Message) -> list[bytes]:
        """Envelopes to put on the wire now (secure: a handshake first if needed; msg is queued)."""
        check_message(msg)
        if msg.sender != self.name:
            raise ValueError(f"endpoint {self.name!r} cannot send a message whose sender is {msg.sender!r}")
        peer = msg.receiver
        self._check_peer_name(peer)
        prepared = secure.prepare_inner(msg, self.limits, checked=True) if self.suite == "secure" else None
        if prepared is not None:
            self._check_send_size(prepared[1])
        state = self._peer(peer)
        out: list[bytes] = []
        if self.suite == "plaintext":
            if self._rekey_due(state):
                state = replace(state, send=SendState(self.next_epoch(state.send.epoch)))
            envelope, state = self._seal_plaintext(state, msg)
            out.append(envelope)
        else:
            if self._needs_handshake(state):
                init, state = handshake.start(self, peer, state)
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

    def receive(self, data: bytes, *, link: str = "") -> tuple[list[Message], list[bytes]]:
        """Open one envelope: (application messages delivered, envelopes to send in reply).

        `link` names the transport link the envelope arrived on ("" = the single default
        link). A rejection is charged to the sender only when the envelope is provably its
        own (secure suite: authenticated and fresh); otherwise to the link (§10).
        """
        if type(link) is not str:
            raise TypeError(f"link must be a str naming the transport link, got {type(link).__name__}")
        link_key = LINK_PREFIX + link
        if self._charged_links.get(link, 0) >= self.limits.max_rejections:
            raise self._refuse(link_key, f"link {link!r} carried {self._charged_links[link]} rejected envelopes", None)
        try:
            frame = parse_frame(data, self.limits)
        except ProtocolError as exc:
            raise self._charge(exc, link_key, self._charged_links, link) from None
        sender = frame.sender
        if self._charged_senders.get(sender, 0) >= self.limits.max_rejections:
            raise self._refuse(sender, f"{sender!r} sent {self._charged_senders[sender]} rejected envelopes", sender)
        try:
            delivered, out, new_state = self._process(frame)
        except SenderFault as fault:
            fault.error.sender = sender
            raise self._charge(fault.error, sender, self._charged_senders, sender) from None
        except ProtocolError as exc:
            exc.sender = sender
            raise self._charge(exc, link_key, self._charged_links, link) from None
        if new_state is not None:
            self._peers[sender] = new_state
        return delivered, out

    def rekey(self, peer: str) -> list[bytes]:
        """Start a new epoch with `peer`.

        Plaintext: the send epoch moves on, nothing goes on the wire. Secure: an hs_init for
        the next epoch (for a new session at epoch 0 if there is none yet); nothing while a
        handshake with `peer` is pending, whoever started it.
        """
        self._check_peer_name(peer)
        state = self._peer(peer)
        if self.suite == "plaintext":
            self._peers[peer] = replace(state, send=SendState(self.next_epoch(state.send.epoch)))
            return []
        if state.pending is not None:
            return []  # a handshake is already under way; it yields the new epoch
        init, state = handshake.start(self, peer, state)
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

    def cut_off(self) -> list[str]:
        """Senders and links ("link:<id>") refused from now on (max_rejections reached)."""
        limit = self.limits.max_rejections
        return sorted(
            [s for s, n in self._charged_senders.items() if n >= limit]
            + [LINK_PREFIX + k for k, n in self._charged_links.items() if n >= limit]
        )

    # ------------------------------------------------------------------ accounting
    def _charge(self, exc: ProtocolError, charged_to: str, counts: dict[str, int], key: str) -> ProtocolError:
        exc.charged_to = charged_to
        self.rejections.append((charged_to, exc.code))
        counts[key] = counts.get(key, 0) + 1
        return exc

    def _refuse(self, charged_to: str, why: str, sender: str | None) -> ProtocolError:
        # Logged under whoever is cut off, but not charged again: the cut-off is already final.
        exc = ProtocolError(
            ErrorCode.PEER_CUT_OFF,
            f"{why} (Limits.max_rejections={self.limits.max_rejections}); everything from it is refused. "
            "Fix the sender or the link and start a new endpoint",
            sender=sender,
        )
        exc.charged_to = charged_to
        self.rejections.append((charged_to, exc.code))
        return exc

    # ------------------------------------------------------------------ helpers
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
            return PeerState(session_id=plaintext_session_id(self.session_seed, self.name, peer), send=SendState(0), recv=RecvState(0))
        return PeerState()

    def _needs_handshake(self, state: PeerState) -> bool:
        """No session yet, or rekey_every is due. Any pending handshake, ours or the peer's,
        will bring a new epoch, so none is started while one is (§7.6)."""
        return state.pending is None and (state.send is None or self._rekey_due(state))

    def _rekey_due(self, state: PeerState) -> bool:
        """rekey_every = k: k messages were already sealed towards this peer in the current epoch."""
        return self.rekey_every is not None and state.send is not None and state.send.seq >= self.rekey_every

    @staticmethod
    def next_epoch(epoch: int) -> int:
        if epoch >= U32_MAX:
            raise ProtocolError(ErrorCode.WRONG_EPOCH, "epoch counter exhausted; start a new session")
        return epoch + 1

    # ------------------------------------------------------------------ sealing
    def _seal_plaintext(self, state: PeerState, msg: Message) -> tuple[bytes, PeerState]:
        seq = state.send.seq + 1
        sealed = replace(msg, session_id=state.session_id, epoch=state.send.epoch, seq=seq, suite="plaintext")
        return encode(sealed, limits=self.limits), evolve(state, send=evolve(state.send, seq=seq))

    def _seal_secure(self, state: PeerState, msg: Message, prepared=None) -> tuple[bytes, PeerState]:
        send = state.send
        seq = send.seq + 1
        if seq > U64_MAX:  # pragma: no cover - 2^64 messages
            raise ProtocolError(ErrorCode.STALE, "sequence numbers exhausted; rekey")
        envelope = secure.seal(msg, session_id=state.session_id, epoch=send.epoch, seq=seq, key=send.key, iv=send.iv, prepared=prepared)
        return envelope, evolve(state, send=evolve(send, seq=seq))

    def flush(self, state: PeerState) -> tuple[list[bytes], PeerState]:
        """Seal every queued message in order (rekey_every is not consulted: §7.6)."""
        out = []
        for msg in state.queue:
            envelope, state = self._seal_secure(state, msg)
            out.append(envelope)
        return out, replace(state, queue=())

    # ------------------------------------------------------------------ receiving
    def _process(self, frame: Frame) -> handshake.Outcome:
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
                    ErrorCode.DOWNGRADE, f"{self.name!r} speaks only the secure suite and refuses a plaintext envelope from {sender!r}"
                )
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_SUITE, f"{self.name!r} is configured for the plaintext suite and cannot open a secure envelope"
            )
        state = self._peer(sender)
        if h["type"] in HANDSHAKE_TYPES:
            return handshake.receive(self, frame, state)
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
                f"sequence number {seq} from {sender!r} is 0 or older than the replay window "
                f"(newest accepted: {recv.window.top}); it can no longer be checked for replay",
            )

    def _open_plaintext(self, frame: Frame, state: PeerState) -> handshake.Outcome:
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
        recv = evolve(recv, window=recv.window.accept(h["seq"]))
        if advance:
            state = evolve(state, recv_previous=state.recv, recv=recv)
        else:
            state = evolve(state, **{slot: recv})
        return [msg], [], state

    def _open_secure(self, frame: Frame, state: PeerState) -> handshake.Outcome:
        h = frame.header
        sender = h["sender"]
        if state.recv is None:
            raise ProtocolError(
                ErrorCode.NOT_ESTABLISHED,
                f"no secure session with {sender!r} yet; the handshake (hs_init/hs_resp/hs_finish) must complete first",
            )
        if h["session_id"] != state.session_id:  # the session id is compared before the epoch
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
        try:  # authentic and fresh: whatever is wrong inside was sent by the sender itself
            lay, arrays, meta = secure.parse_inner(plain, self.limits)
        except ProtocolError as exc:
            raise SenderFault(exc) from None
        msg = message_from_frame(frame, lay, arrays, meta, "secure")
        return [msg], [], evolve(state, **{slot: evolve(recv, window=recv.window.accept(h["seq"]))})
