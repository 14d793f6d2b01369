"""What every party shares: an endpoint, message dispatch, and the instrumentation lane.

A party is a sans-I/O state machine over envelopes: `handle(envelope) -> [envelopes]`. The
runtime (in-process, Ray actor, Flower ClientApp) only moves the bytes; it never sees the
party's data or models. Application logic lives in `on_<type>` / `op_<name>` methods of the
subclasses.
"""

from __future__ import annotations

import dataclasses
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
    """How a party's endpoint is set up; JSON-able so that remote runtimes can rebuild it.

    It never carries a private key. On the secure suite the party's identity key is created
    where the party runs (or read from its own key file, `identity_file`, for deployments);
    only its public key leaves, and the registry of pinned public keys arrives either here
    (`registry_json`, pinned in advance) or later from the coordinator (`install_registry`).
    """

    suite: str = "secure"
    session_seed: bytes = b""
    identity_file: str | None = None  # this party's Ed25519 key file (deployments); None: a fresh key
    registry_json: str | None = None  # pinned public keys of every party, when known in advance
    limits: Limits = field(default_factory=Limits)

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"suite": self.suite, "session_seed": self.session_seed.hex()}
        if self.identity_file:
            obj["identity_file"] = self.identity_file
        if self.registry_json:
            obj["registry_json"] = self.registry_json
        if self.limits != Limits():
            obj["limits"] = dataclasses.asdict(self.limits)
        return obj

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ChannelConfig:
        unknown = set(obj) - {"suite", "session_seed", "identity_file", "registry_json", "limits"}
        if unknown:
            raise ValueError(f"unknown channel setting(s) {sorted(unknown)}; a channel never carries private keys")
        return cls(
            suite=str(obj["suite"]),
            session_seed=bytes.fromhex(obj.get("session_seed", "")),
            identity_file=obj.get("identity_file"),
            registry_json=obj.get("registry_json"),
            limits=Limits(**obj["limits"]) if obj.get("limits") else Limits(),
        )

    def load_identity(self, name: str) -> Identity | None:
        """This party's identity: read from its key file, or created here (secure suite)."""
        if self.suite != "secure":
            return None
        if self.identity_file:
            return Identity.load(self.identity_file, name=name)
        return Identity.generate(name=name)

    def endpoint(self, name: str, identity: Identity | None, registry_json: str | None = None) -> Endpoint:
        registry_json = registry_json or self.registry_json
        registry = Registry.from_json(registry_json) if registry_json else None
        return Endpoint(name, suite=self.suite, identity=identity, registry=registry, limits=self.limits, session_seed=self.session_seed)


class Party:
    """Base class: turns inbound envelopes into outbound envelopes.

    Subclasses implement `op_<name>(msg) -> Iterable[Message]` for control operations and
    `on_<type>(msg) -> Iterable[Message]` for other message types.
    """

    name: str = "party"

    def __init__(self, name: str, channel: ChannelConfig):
        self.name = name
        self.channel = channel
        self.identity = channel.load_identity(name)
        # On the secure suite the endpoint exists once the registry is known.
        self.endpoint: Endpoint | None = None
        if channel.suite != "secure" or channel.registry_json:
            self.endpoint = channel.endpoint(name, self.identity)
        # Plaintext views of the artifacts this party accepted: what a curious receiver holds.
        # Kept for the simulation's attack step (instrumentation, never sent on the protocol).
        self._receiver_view: list[bytes] = []
        self.keep_receiver_view_kinds: set[str] | None = None  # None = keep all artifacts
        # Kinds of per-step artifacts folded, per sender and round, into one view artifact with
        # each user's latest row (sealed by `seal_view_folds`): bounded memory over long runs.
        self.fold_receiver_view_kinds: set[str] = set()
        # (kind, sender, round) -> (last message, parts, rows held in the parts)
        self._view_folds: dict[tuple[str, str, int], tuple[Message, list[tuple[np.ndarray, dict[str, np.ndarray]]], int]] = {}

    # ----------------------------------------------------------------- keys
    def public_key(self) -> bytes:
        """This party's identity public key (b"" on the plaintext suite): all of its key that leaves it."""
        return self.identity.public_bytes() if self.identity is not None else b""

    def install_registry(self, registry_json: str) -> None:
        """Pin every party's public key (from the coordinator); must pin this party's own key."""
        if self.channel.suite != "secure":
            return
        if self.endpoint is not None:
            if self.endpoint.registry == Registry.from_json(registry_json):
                return
            raise PartyError(self.name, "install_registry", "a different registry is already pinned; start a new party")
        registry = Registry.from_json(registry_json)
        if self.name not in registry or registry.get(self.name) != self.public_key():
            raise PartyError(self.name, "install_registry", "the registry does not pin this party's own public key")
        self.endpoint = self.channel.endpoint(self.name, self.identity, registry_json)

    # ----------------------------------------------------------------- wire
    # ----------------------------------------------------------------- wire
    def handle(self, envelope: bytes, link: str = "") -> list[bytes]:
        """Open one envelope, act on it, and return the envelopes to put on the wire.

        `link` names the transport link it arrived on (rejections the protocol cannot pin on
        an authenticated sender are counted per link). A `ProtocolError` propagates unchanged
        (the endpoint has not changed state); the runtime records the rejection. Application
        failures become an `error` message to the coordinator so that the run ends with a
        clear error instead of hanging.
        """
        delivered, outbound = self._endpoint().receive(envelope, link=link)
        for msg in delivered:
            for reply in self._dispatch(msg):
                outbound.extend(self.endpoint.send(reply))
        return outbound

    def send(self, msg: Message) -> list[bytes]:
        return self._endpoint().send(msg)

    def _endpoint(self) -> Endpoint:
        if self.endpoint is None:
            raise PartyError(self.name, "receive", "no registry of pinned keys yet: the coordinator installs it after start")
        return self.endpoint

    def _dispatch(self, msg: Message) -> Iterable[Message]:
        if msg.type == "artifact":
            self._view(msg)
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

    def _view(self, msg: Message) -> None:
        """Record an accepted artifact in the receiver's view (kept whole, folded, or dropped)."""
        kind = str(msg.meta.get("kind", ""))
        if kind in self.fold_receiver_view_kinds and "user_ids" in msg.arrays:
            _, parts, rows = self._view_folds.get((kind, msg.sender, msg.round), (msg, [], 0))
            fields = {k: np.asarray(v) for k, v in msg.arrays.items() if k != "user_ids"}
            users = np.asarray(msg.arrays["user_ids"]).reshape(-1)
            parts.append((users, fields))
            rows += users.size
            if rows > FOLD_COMPACT_ROWS and len(parts) > 1:
                parts[:] = [latest_rows(parts)]
                rows = parts[0][0].size
            self._view_folds[(kind, msg.sender, msg.round)] = (msg, parts, rows)
        elif self.keep_receiver_view_kinds is None or kind in self.keep_receiver_view_kinds:
            self._receiver_view.append(Endpoint.receiver_view(msg))

    def seal_view_folds(self) -> None:
        """Add each folded round to the receiver's view as one artifact `<kind>@<round>` (every
        user's latest row of the round), then forget it."""
        for (kind, _, rnd), (last, parts, _) in self._view_folds.items():
            users, fields = latest_rows(parts)
            arrays = {"user_ids": users, **{k: fields[k] for k in sorted(fields)}}
            meta = {"artifact": f"{kind}@{rnd}", "kind": kind, "chunk": 0, "chunks": 1, "folded": "latest row per user"}
            self._receiver_view.append(Endpoint.receiver_view(dataclasses.replace(last, arrays=arrays, meta=meta)))
        self._view_folds.clear()

    # ---------------------------------------------------------- instrumentation
    def receiver_view(self) -> list[bytes]:
        """The plaintext envelopes of the artifacts this party accepted (curious receiver)."""
        return list(self._receiver_view)

    def rejections(self) -> list[tuple[str, str]]:
        rejected = self.endpoint.rejections if self.endpoint is not None else []
        return [(sender, str(getattr(code, "value", code))) for sender, code in rejected]

    # ----------------------------------------------------------------- helpers
    def reply(self, to: Message, type: str = "ack", **meta: Any) -> Message:
        return Message(
            type=type,
            sender=self.name,
            receiver=to.sender,
            meta=without_wall_clock({"op": to.meta.get("op", to.type), **meta}),
            reply_to=to.seq,
            round=to.round,
        )


WALL_CLOCK_KEYS = frozenset({"seconds", "train_seconds"})


def without_wall_clock(meta: Any) -> Any:
    """`meta` without wall-clock timings (at any depth): what a party sends must depend on the
    seed alone, so that a rerun or another runtime gives the same bytes (transcripts hold each
    envelope's SHA-256). A run's wall time is recorded by the engine, per task."""
    if isinstance(meta, dict):
        return {k: without_wall_clock(v) for k, v in meta.items() if k not in WALL_CLOCK_KEYS}
    if isinstance(meta, list):
        return [without_wall_clock(v) for v in meta]
    return meta


FOLD_COMPACT_ROWS = 1 << 16  # folded rows held before they are reduced to one per user


def latest_rows(parts: list[tuple[np.ndarray, dict[str, np.ndarray]]]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Each user's row from the last part that carried it: (user ids ascending, fields).

    Vectorised when every part has the same fields with one row per user id; otherwise row
    by row, where a user's latest part decides its fields (those of the lowest id are kept)."""
    names = set(parts[0][1])
    if all(set(f) == names and all(v.shape[:1] == u.shape for v in f.values()) for u, f in parts):
        try:
            users = np.concatenate([u for u, _ in parts]).astype(np.int64)
            fields = {k: np.concatenate([f[k] for _, f in parts]) for k in names}
        except ValueError:  # a field whose rows differ in shape between parts
            pass
        else:
            unique, first_reversed = np.unique(users[::-1], return_index=True)  # last occurrence of each
            last = users.size - 1 - first_reversed
            return unique, {k: v[last] for k, v in fields.items()}
    rows: dict[int, dict[str, np.ndarray]] = {}
    for users, fields in parts:
        for i, user in enumerate(users.tolist()):
            rows[int(user)] = {k: v[i] for k, v in fields.items()}
    ids = np.array(sorted(rows), dtype=np.int64)
    return ids, {k: np.stack([rows[int(u)][k] for u in ids]) for k in sorted(rows[int(ids[0])])}


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
    row_bytes = 8 + sum(math.prod(a.shape[1:]) * a.dtype.itemsize for a in arrays.values())  # math.prod: exact, no array
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
        if total == 1:  # nothing to join (the common case of small artifacts)
            arrays = dict(ordered[0].arrays)
        else:
            arrays = {k: np.concatenate([p.arrays[k] for p in ordered]) for k in ordered[0].arrays}
        meta = {k: v for k, v in ordered[0].meta.items() if k not in ("chunk", "chunks")}
        return name, arrays, meta
