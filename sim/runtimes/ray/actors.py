"""What runs inside the Ray actors: a party's host and the eavesdropper's recorder, and the
relay-side tap that feeds the recorder. Every method returns plain data (dicts, str, bytes),
never an object of a party."""

from __future__ import annotations

import heapq
import os
import traceback
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayError

from protocol import ProtocolError

from ...errors import RunError
from ..base import Observer, PartySpec
from .processes import short_error

DEFAULT_CALL_TIMEOUT = 600.0  # seconds one envelope may take inside a party (a training step)
EAVESDROPPER = "eavesdropper"  # placement key of the tap actor
TAP_MAX_IN_FLIGHT = 64  # tap messages not yet confirmed before the relay waits (bounds memory)
TAP_DRAIN_BYTES = 64 * 1024 * 1024  # bytes per drain call when collecting the tap's recording


class PartyHost:
    """Runs inside a Ray actor: hosts one party and moves envelopes in and out as bytes.

    `load(spec)` builds a fresh party from its spec (so the party's data and models exist only
    in this actor); `unload()` drops it. Every method returns plain data (dicts, str, bytes),
    never an exception object of the party: a rejection is {"status": "rejected", code, detail,
    sender}; any other failure is {"status": "failed", error, traceback}.
    """

    def __init__(self) -> None:
        self.name: str | None = None
        self.party = None
        self.error: dict[str, str] | None = None

    def info(self) -> dict[str, Any]:
        ctx = ray.get_runtime_context()
        public = self.party.public_key() if self.party is not None else b""
        return {"party": self.name, "node_id": ctx.get_node_id(), "pid": os.getpid(), "error": self.error, "public_key": public}

    def load(self, name: str, factory: str, config: dict[str, Any], torch_threads: int | None = None) -> dict[str, Any]:
        self.name, self.party, self.error = name, None, None
        try:
            if torch_threads:
                # Same intra-op threads as the in-process runtime, so the numbers are the same.
                import torch

                torch.set_num_threads(int(torch_threads))
            self.party = PartySpec(name, factory, config).build()
        except Exception as exc:
            self.error = _failure(exc)
        return self.info()

    def unload(self) -> None:
        self.party = None
        self.error = None

    def install_registry(self, registry_json: str) -> dict[str, Any]:
        if self.party is None:
            return self._not_loaded()
        try:
            self.party.install_registry(registry_json)
        except Exception as exc:
            return {"status": "failed", **_failure(exc)}
        return {"status": "ok", "out": []}

    def handle(self, envelope: bytes, link: str = "") -> dict[str, Any]:
        if self.party is None:
            return self._not_loaded()
        try:
            out = self.party.handle(bytes(envelope), link)
        except ProtocolError as exc:
            return {"status": "rejected", "code": exc.code.value, "detail": exc.detail, "sender": exc.sender, "charged_to": exc.charged_to}
        except Exception as exc:
            return {"status": "failed", **_failure(exc)}
        return {"status": "ok", "out": [bytes(e) for e in out]}

    def receiver_view(self) -> dict[str, Any]:
        if self.party is None:
            return self._not_loaded()
        try:
            return {"status": "ok", "out": [bytes(e) for e in self.party.receiver_view()]}
        except Exception as exc:
            return {"status": "failed", **_failure(exc)}

    def _not_loaded(self) -> dict[str, Any]:
        return {"status": "failed", **(self.error or {"error": "no party is loaded in this actor", "traceback": ""})}


class TapHost:
    """Runs inside a Ray actor: the eavesdropper's recorder. Keeps every envelope it is sent,
    by index, and hands them back in index order."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._heap: list[tuple[int, bytes]] = []
        self._next = 0  # index of the next envelope drain() may return
        self.count = 0
        self.bytes = 0

    def info(self) -> dict[str, Any]:
        return {"party": EAVESDROPPER, "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(), "error": None}

    def record(self, index: int, envelope: bytes) -> None:
        heapq.heappush(self._heap, (int(index), bytes(envelope)))
        self.count += 1
        self.bytes += len(envelope)

    def drain(self, max_bytes: int = TAP_DRAIN_BYTES) -> list[tuple[int, bytes]]:
        """The recorded envelopes from the next expected index on, consecutive only, up to
        about `max_bytes` (at least one)."""
        out: list[tuple[int, bytes]] = []
        size = 0
        while self._heap and self._heap[0][0] == self._next and (not out or size < max_bytes):
            index, data = heapq.heappop(self._heap)
            out.append((index, data))
            size += len(data)
            self._next += 1
        return out

    def stats(self) -> dict[str, int]:
        return {"count": self.count, "bytes": self.bytes, "pending": len(self._heap), "next": self._next}


# Restarts would rebuild a party with fresh protocol state mid-run: never restart, never retry.
PartyActor = ray.remote(max_restarts=0, max_task_retries=0)(PartyHost)
TapActor = ray.remote(max_restarts=0, max_task_retries=0)(TapHost)


def _failure(exc: BaseException) -> dict[str, str]:
    return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}


# ----------------------------------------------------------------------------- the tap
class RayTap:
    """The Relay's tap when the eavesdropper is a Ray actor.

    Calling it sends the envelope to the tap actor asynchronously (`.remote()`, numbered so the
    order is exact); `flush()` waits until the actor has everything and feeds it, in order, to
    the `observer` (the engine's `Eavesdropper`). So the eavesdropper ends up with exactly the
    bytes that were put on the wire.
    """

    def __init__(
        self, actor: Any, observer: Observer, *, timeout: float | None = DEFAULT_CALL_TIMEOUT, max_in_flight: int = TAP_MAX_IN_FLIGHT
    ):
        self.actor = actor
        self.observer = observer
        self.timeout = timeout
        self.max_in_flight = max(1, int(max_in_flight))
        self.sent = 0
        self.delivered = 0
        self._in_flight: list[Any] = []

    def __call__(self, envelope: bytes) -> None:
        self._in_flight.append(self.actor.record.remote(self.sent, bytes(envelope)))
        self.sent += 1
        if len(self._in_flight) >= self.max_in_flight:
            # Back-pressure: wait for the older half so a long run cannot pile up unbounded bytes.
            half = len(self._in_flight) // 2
            self._get(self._in_flight[:half], f"recording message {self.sent - len(self._in_flight)}")
            del self._in_flight[:half]

    def flush(self) -> int:
        """Deliver everything recorded so far to the observer; return how many were delivered."""
        self._get(self._in_flight, "recording the last messages")
        self._in_flight.clear()
        before = self.delivered
        while self.delivered < self.sent:
            batch = self._get(self.actor.drain.remote(), "collecting what it recorded")
            if not batch:
                stats = self._get(self.actor.stats.remote(), "counting what it recorded")
                raise RunError(
                    f"the eavesdropper tap lost messages: {self.sent} sent, {self.delivered} collected "
                    f"(tap actor state {stats}); its recording is incomplete"
                )
            for index, data in batch:
                if index != self.delivered:  # drain() only returns consecutive indices
                    raise RunError(f"the eavesdropper tap returned message {index}, expected {self.delivered}")
                self.observer(data)
                self.delivered += 1
        return self.delivered - before

    def _get(self, refs: Any, what: str) -> Any:
        try:
            return ray.get(refs, timeout=self.timeout)
        except GetTimeoutError:
            raise RunError(f"the eavesdropper tap did not answer within {self.timeout:g}s while {what}") from None
        except RayError as exc:
            raise RunError(f"the eavesdropper tap failed while {what}: {short_error(exc)}") from exc
