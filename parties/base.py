"""What every party shares: an endpoint, message dispatch, and the instrumentation lane.

A party is a sans-I/O state machine over envelopes: `handle(envelope) -> [envelopes]`. The
runtime (in-process, Ray actor, Flower ClientApp) only moves the bytes; it never sees the
party's data or models. Application logic lives in `on_<type>` / `op_<name>` methods of the
subclasses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protocol import Endpoint, Identity, Limits, Message, ProtocolError, Registry

COORDINATOR = "coordinator"
SOURCE = "source"
TARGET = "target"

# Artifacts travel in chunks of at most this many bytes of array data, so a party with many
# users streams bounded envelopes instead of one giant message.
DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024


class PartyError(Exception):
    """A party could not carry out a step; the message names the party and the step."""

    def __init__(self, party: str, step: str, detail: str):
        super().__init__(f"party {party!r} failed at step {step!r}: {detail}")
        self.party, self.step, self.detail = party, step, detail


@dataclass
class ChannelConfig:
    """How a party's endpoint is set up; JSON-able so that remote runtimes can rebuild it."""

    suite: str = "secure"
    session_seed: bytes = b""
    identity_private: bytes | None = None  # Ed25519 private key of this party (secure suite)
    registry_json: str | None = None  # pinned public keys of every party
    limits: Limits = field(default_factory=Limits)

    def endpoint(self, name: str) -> Endpoint:
        identity = Identity.from_private_bytes(self.identity_private, name=name) if self.identity_private is not None else None
        registry = Registry.from_json(self.registry_json) if self.registry_json else None
        return Endpoint(
            name,
            suite=self.suite,
            identity=identity,
            registry=registry,
            limits=self.limits,
            session_seed=self.session_seed,
        )


class Party:
    """Base class: turns inbound envelopes into outbound envelopes.

    Subclasses implement `op_<name>(msg) -> Iterable[Message]` for control operations and
    `on_<type>(msg) -> Iterable[Message]` for other message types.
    """

    name: str = "party"

    def __init__(self, name: str, channel: ChannelConfig):
        self.name = name
        self.endpoint = channel.endpoint(name)
        # Plaintext views of the artifacts this party accepted: what a curious receiver holds.
        # Kept for the simulation's attack step (instrumentation, never sent on the protocol).
        self._receiver_view: list[bytes] = []
        self.keep_receiver_view_kinds: set[str] | None = None  # None = keep all artifacts

    # ----------------------------------------------------------------- wire
    def handle(self, envelope: bytes) -> list[bytes]:
        """Open one envelope, act on it, and return the envelopes to put on the wire.

        A `ProtocolError` propagates unchanged (the endpoint has not changed state); the
        runtime records the rejection. Application failures become an `error` message to the
        coordinator so that the run ends with a clear error instead of hanging.
        """
        delivered, outbound = self.endpoint.receive(envelope)
        for msg in delivered:
            for reply in self._dispatch(msg):
                outbound.extend(self.endpoint.send(reply))
        return outbound

    def send(self, msg: Message) -> list[bytes]:
        return self.endpoint.send(msg)

    def _dispatch(self, msg: Message) -> Iterable[Message]:
        if msg.type == "artifact" and self._keeps(msg):
            self._receiver_view.append(Endpoint.receiver_view(msg))
        try:
            if msg.type == "control":
                op = str(msg.meta.get("op", ""))
                handler = getattr(self, f"op_{op.replace('-', '_')}", None)
                if handler is None:
                    raise PartyError(self.name, op or "?", f"unknown control operation {op!r}")
            else:
                handler = getattr(self, f"on_{msg.type}", None)
                if handler is None:
                    raise PartyError(self.name, msg.type, f"does not accept {msg.type!r} messages")
            return list(handler(msg) or ())
        except ProtocolError:
            raise
        except Exception as exc:  # report, do not hang the run
            step = str(msg.meta.get("op", msg.type))
            detail = exc.detail if isinstance(exc, PartyError) else f"{type(exc).__name__}: {exc}"
            return [
                Message(
                    type="error",
                    sender=self.name,
                    receiver=COORDINATOR,
                    meta={"step": step, "party": self.name, "detail": detail},
                    reply_to=msg.seq,
                    round=msg.round,
                )
            ]

    def _keeps(self, msg: Message) -> bool:
        kinds = self.keep_receiver_view_kinds
        return kinds is None or str(msg.meta.get("kind", "")) in kinds

    # ---------------------------------------------------------- instrumentation
    def receiver_view(self) -> list[bytes]:
        """The plaintext envelopes of the artifacts this party accepted (curious receiver)."""
        return list(self._receiver_view)

    def rejections(self) -> list[tuple[str, str]]:
        return [(sender, str(getattr(code, "value", code))) for sender, code in self.endpoint.rejections]

    # ----------------------------------------------------------------- helpers
    def reply(self, to: Message, type: str = "ack", **meta: Any) -> Message:
        return Message(
            type=type,
            sender=self.name,
            receiver=to.sender,
            meta={"op": to.meta.get("op", to.type), **meta},
            reply_to=to.seq,
            round=to.round,
        )


def artifact_chunks(
    *,
    sender: str,
    receiver: str,
    name: str,
    kind: str,
    user_ids: np.ndarray,
    arrays: Mapping[str, np.ndarray],
    meta: Mapping[str, Any] | None = None,
    round: int = 0,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> list[Message]:
    """Split a per-user artifact into messages of bounded size (rows stay whole)."""
    n = int(user_ids.shape[0])
    for key, arr in arrays.items():
        if arr.shape[0] != n:
            raise ValueError(f"artifact {name!r}: array {key!r} has {arr.shape[0]} rows, expected {n}")
    row_bytes = 8 + sum(int(np.prod(a.shape[1:], dtype=np.int64)) * a.dtype.itemsize for a in arrays.values())
    rows = max(1, chunk_bytes // max(1, row_bytes))
    n_chunks = max(1, math.ceil(n / rows))
    messages = []
    for c in range(n_chunks):
        sl = slice(c * rows, min(n, (c + 1) * rows))
        body = {"user_ids": np.ascontiguousarray(user_ids[sl], dtype=np.int64)}
        body.update({k: np.ascontiguousarray(v[sl]) for k, v in arrays.items()})
        messages.append(
            Message(
                type="artifact",
                sender=sender,
                receiver=receiver,
                arrays=body,
                meta={**(meta or {}), "artifact": name, "kind": kind, "chunk": c, "chunks": n_chunks},
                round=round,
            )
        )
    return messages


class ArtifactAssembler:
    """Collects the chunks of named artifacts until each is complete."""

    def __init__(self) -> None:
        self._parts: dict[str, dict[int, Message]] = {}

    def add(self, msg: Message) -> tuple[str, dict[str, np.ndarray], dict] | None:
        """Add a chunk; return (name, arrays, meta) once the artifact is complete."""
        name = str(msg.meta["artifact"])
        total = int(msg.meta["chunks"])
        parts = self._parts.setdefault(name, {})
        parts[int(msg.meta["chunk"])] = msg
        if len(parts) < total:
            return None
        del self._parts[name]
        ordered = [parts[i] for i in range(total)]
        arrays = {k: np.concatenate([p.arrays[k] for p in ordered]) for k in ordered[0].arrays}
        meta = {k: v for k, v in ordered[0].meta.items() if k not in ("chunk", "chunks")}
        return name, arrays, meta
