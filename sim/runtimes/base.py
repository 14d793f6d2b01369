"""The runtime interface and the relay loop every runtime shares.

A runtime hosts parties (built from JSON-able `PartySpec`s, so that remote runtimes can build
them where they run) and delivers one envelope at a time: `call(party, envelope) ->
[envelopes]`. The `Relay` is the coordinator's switchboard: it puts envelopes on the wire (the
tap sees every byte), routes them by the receiver named in the cleartext header, records a
transcript line for each, and returns the coordinator's replies. Runtimes differ only in how
`call` reaches a party.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from parties.base import COORDINATOR, Party
from protocol import Endpoint, Message, ProtocolError, peek_header


class RunError(Exception):
    """A run could not finish; the message names the party and the step."""


@dataclass(frozen=True)
class PartySpec:
    """How to build one party: `factory` is 'module:function', called as factory(config)."""

    name: str
    factory: str
    config: dict[str, Any]

    def build(self) -> Party:
        module, _, attr = self.factory.partition(":")
        party = getattr(importlib.import_module(module), attr)(self.config)
        if party.name != self.name:
            raise RunError(f"factory {self.factory} built party {party.name!r}, expected {self.name!r}")
        return party


class Runtime(ABC):
    """Hosts parties and delivers envelopes to them."""

    name: str = "?"

    @abstractmethod
    def start(self, specs: list[PartySpec]) -> None: ...

    @abstractmethod
    def call(self, party: str, envelope: bytes) -> list[bytes]:
        """Deliver one envelope; return what the party puts on the wire in response.

        Raises `ProtocolError` when the party rejected the envelope (its state unchanged)."""

    @abstractmethod
    def receiver_view(self, party: str) -> list[bytes]:
        """Plaintext envelopes of the artifacts `party` accepted (curious-receiver instrument)."""

    @abstractmethod
    def stop(self) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


Observer = Callable[[bytes], None]


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
        self.max_rejected = max_rejected
        self.rejected = 0
        self.messages = 0

    def request(self, party: str, op: str, *, round: int = 0, **meta: Any) -> list[Message]:
        """Send control{op} to `party`; relay until the network is quiet; return every
        message that reached the coordinator (acks, reports). An `error` raises RunError."""
        msg = Message(type="control", sender=COORDINATOR, receiver=party, meta={"op": op, **meta}, round=round)
        started = time.perf_counter()
        inbox = self._pump(self.coordinator.send(msg), step=op)
        if not inbox:
            raise RunError(
                f"step {op!r} sent to {party!r} ended with no reply after "
                f"{time.perf_counter() - started:.1f}s; the party produced no answer"
            )
        return inbox

    def inject(self, envelope: bytes) -> list[Message]:
        """Put raw bytes on the wire as an active attacker would (tampered, replayed,
        misaddressed): they are tapped, routed and recorded like any envelope."""
        return self._pump([envelope], step="inject")

    def _pump(self, envelopes: list[bytes], *, step: str) -> list[Message]:
        queue = deque(envelopes)
        inbox: list[Message] = []
        while queue:
            envelope = queue.popleft()
            self.messages += 1
            for tap in self.taps:
                tap(envelope)
            header = None
            try:
                header = peek_header(envelope)
                receiver = header["receiver"]
                if receiver == COORDINATOR:
                    delivered, out = self.coordinator.receive(envelope)
                    inbox.extend(delivered)
                else:
                    out = self.runtime.call(receiver, envelope)
            except ProtocolError as exc:
                # the receiver's state is unchanged; record the rejection and carry on
                self.transcript.record(envelope, "rejected", f"{exc.code.value}: {exc.detail}", header=header)
                self.rejected += 1
                if exc.code.value == "PEER_CUT_OFF" or self.rejected > self.max_rejected:
                    raise RunError(f"step {step!r}: the protocol cut off a peer after repeated rejections ({exc})") from exc
                continue
            self.transcript.record(envelope, "delivered", header=header)
            queue.extend(out)
        errors = [m for m in inbox if m.type == "error"]
        if errors:
            e = errors[0].meta
            raise RunError(f"party {e.get('party')!r} failed at step {e.get('step')!r}: {e.get('detail')}")
        return inbox

    def request_one(self, party: str, op: str, *, type: str = "ack", **meta: Any) -> Message:
        """`request`, expecting a reply of `type` to this op from `party`."""
        for msg in self.request(party, op, **meta):
            if msg.type == type and msg.sender == party and msg.meta.get("op") == op:
                return msg
        raise RunError(f"step {op!r}: {party!r} never sent the expected {type!r}")
