"""The coordinator's side of the network: it starts the parties, pins their keys, and relays.

The `Relay` is the coordinator's switchboard: it puts envelopes on the wire (every tap sees
every byte), routes them by the receiver named in the cleartext header, records a transcript
line for each, and returns the coordinator's replies. Each envelope travels with the name of
the link it came from (`coordinator`, `party:<name>`, or `inject` for an active attacker's
bytes), so that the protocol charges rejections it cannot pin on an authenticated sender to
that link, and forgeries cannot get an honest party cut off.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from parties.base import COORDINATOR, ChannelConfig
from protocol import Endpoint, Message, ProtocolError, Registry, peek_header

from .errors import RunError

if TYPE_CHECKING:  # the relay works with any runtime; it does not depend on one
    from .runtimes.base import PartySpec, Runtime

Observer = Callable[[bytes], None]

INJECT_LINK = "inject"


def party_link(party: str) -> str:
    return f"party:{party}"


def start_parties(runtime: Runtime, specs: list[PartySpec], channel: ChannelConfig) -> Endpoint:
    """Start the parties where they run and return the coordinator's endpoint.

    Secure suite: every party made its identity key where it runs and reported only its public
    key; the coordinator creates its own here, pins all of them in a registry, and hands that
    registry (public keys only) to every party before anything is sent."""
    public = runtime.start(specs)
    identity = channel.load_identity(COORDINATOR)
    if identity is None:
        return channel.endpoint(COORDINATOR, None)
    registry = Registry({COORDINATOR: identity.public_bytes(), **public}).to_json()
    runtime.install_registry(registry)
    return channel.endpoint(COORDINATOR, identity, registry)


@dataclass
class Transcript:
    """One record per envelope on the wire: cleartext header fields, size, digest, outcome."""

    lines: list[dict[str, Any]] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)  # e.g. seed, variant

    def record(self, envelope: bytes, status: str, error: str | None = None, header: dict[str, Any] | None = None) -> None:
        """`header`: the envelope's peeked header when the caller already has it (saves a parse)."""
        if header is None:
            try:
                header = peek_header(envelope)
            except ProtocolError as exc:
                header = {"unparseable": str(exc.code)}
        meta = header.get("meta") or {}
        line = {
            **self.context,
            "index": len(self.lines),
            "type": header.get("type"),
            "sender": header.get("sender"),
            "receiver": header.get("receiver"),
            "suite": header.get("suite"),
            "session_id": _hex(header.get("session_id")),
            "epoch": header.get("epoch"),
            "seq": header.get("seq"),
            "round": header.get("round"),
            "op": meta.get("op"),
            "artifact": meta.get("artifact"),
            "size": len(envelope),
            "body_length": header.get("body_length"),
            "sha256": hashlib.sha256(envelope).hexdigest(),
            "status": status,
        }
        if error:
            line["error"] = error
        self.lines.append(line)

    def write(self, path) -> None:
        with open(path, "a", encoding="utf-8") as f:
            for line in self.lines:
                f.write(json.dumps(line, sort_keys=True) + "\n")


def _hex(value: Any) -> Any:
    return value.hex() if isinstance(value, (bytes, bytearray)) else value


class Relay:
    """The coordinator's view of the network: sends requests and relays until answered."""

    def __init__(
        self,
        runtime: Runtime,
        coordinator: Endpoint,
        *,
        taps: list[Observer] | None = None,
        transcript: Transcript | None = None,
        max_rejected: int = 64,
    ):
        self.runtime = runtime
        self.coordinator = coordinator
        self.taps = list(taps or [])
        self.transcript = transcript if transcript is not None else Transcript()
        self.max_rejected = max_rejected  # per link: a party whose own envelopes keep failing is broken
        self.rejected = 0
        self.rejected_by_link: dict[str, int] = {}
        self.messages = 0

    def request(self, party: str, op: str, *, round: int = 0, **meta: Any) -> list[Message]:
        """Send control{op} to `party`; relay until the network is quiet; return every
        message that reached the coordinator (acks, reports). An `error` raises RunError."""
        msg = Message(type="control", sender=COORDINATOR, receiver=party, meta={"op": op, **meta}, round=round)
        started = time.perf_counter()
        inbox = self._pump([(e, COORDINATOR) for e in self.coordinator.send(msg)], step=op)
        if not inbox:
            raise RunError(
                f"step {op!r} sent to {party!r} ended with no reply after "
                f"{time.perf_counter() - started:.1f}s; the party produced no answer"
            )
        return inbox

    def inject(self, envelope: bytes) -> list[Message]:
        """Put raw bytes on the wire as an active attacker would (tampered, replayed,
        misaddressed): they are tapped, routed and recorded like any envelope, over the
        attacker's own link."""
        return self._pump([(envelope, INJECT_LINK)], step="inject")

    def _pump(self, envelopes: list[tuple[bytes, str]], *, step: str) -> list[Message]:
        queue = deque(envelopes)
        inbox: list[Message] = []
        while queue:
            envelope, link = queue.popleft()
            self.messages += 1
            for tap in self.taps:
                tap(envelope)
            header = None
            try:
                header = peek_header(envelope)
                receiver = header["receiver"]
                if receiver == COORDINATOR:
                    delivered, out = self.coordinator.receive(envelope, link=link)
                    inbox.extend(delivered)
                    origin = COORDINATOR
                else:
                    out = self.runtime.call(receiver, envelope, link)
                    origin = party_link(receiver)
            except ProtocolError as exc:
                # the receiver's state is unchanged; record the rejection and carry on
                self.transcript.record(envelope, "rejected", f"{exc.code.value}: {exc.detail}", header=header)
                self._rejected(link, exc, step)
                continue
            self.transcript.record(envelope, "delivered", header=header)
            queue.extend((e, origin) for e in out)
        errors = [m for m in inbox if m.type == "error"]
        if errors:
            e = errors[0].meta
            raise RunError(f"party {e.get('party')!r} failed at step {e.get('step')!r}: {e.get('detail')}")
        return inbox

    def _rejected(self, link: str, exc: ProtocolError, step: str) -> None:
        """Count a rejection. The receiving endpoint charged it to an authenticated sender or
        to the link it came over; only an honest party's own faults end the run."""
        self.rejected += 1
        count = self.rejected_by_link[link] = self.rejected_by_link.get(link, 0) + 1
        if link == INJECT_LINK and exc.charged_to != exc.sender:
            return  # an attacker's bytes are refused (and its link eventually cut off); the run goes on
        if exc.code.value == "PEER_CUT_OFF" or count > self.max_rejected:
            raise RunError(f"step {step!r}: the protocol cut off a peer after repeated rejections ({exc})") from exc

    def request_one(self, party: str, op: str, *, type: str = "ack", **meta: Any) -> Message:
        """`request`, expecting a reply of `type` to this op from `party`."""
        for msg in self.request(party, op, **meta):
            if msg.type == type and msg.sender == party and msg.meta.get("op") == op:
                return msg
        raise RunError(f"step {op!r}: {party!r} never sent the expected {type!r}")
