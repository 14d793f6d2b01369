"""The passive eavesdropper: records every envelope it sees, decodes what it can and
reassembles artifacts. What it captured is written to disk and read back by
attacks/capture_files.py (`Eavesdropper.save`, `load_artifact`), so that anyone can run their
own attacks on it.

`Eavesdropper.observe(bytes)` only appends (the tap sees every message of a training run);
decoding happens lazily, the first time `intercepts`, `artifacts()`, `summary()` or `save()` is
asked. Against the secure suite `protocol.decode` refuses the body (ENCRYPTED), so the tap keeps
only what travels in clear: sizes, the cleartext header fields and the order of messages.

An Eavesdropper is callable, so it plugs straight into a relay's list of taps.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from protocol import Message, codec
from protocol import decode as protocol_decode
from protocol import peek_header as protocol_peek_header

from .artifact import Artifact
from .capture_files import load_artifact, save_capture
from .folds import LatestRows
from .tap_summary import summarize

__all__ = ["ARTIFACT_TYPE", "Artifact", "Eavesdropper", "Intercept", "load_artifact"]

Decoder = Callable[[bytes], Any]
HeaderPeeker = Callable[[bytes], dict]

ARTIFACT_TYPE = "artifact"
RETAIN_FLUSH_BYTES = 64 * 1024 * 1024


def _error_text(exc: BaseException) -> str:
    """'CODE: detail' for a ProtocolError (stable code), 'ExceptionType: message' otherwise."""
    code = getattr(exc, "code", None)
    if code is not None:
        code = getattr(code, "value", code)
        detail = getattr(exc, "detail", None) or str(exc)
        return f"{code}: {detail}"
    return f"{type(exc).__name__}: {exc}"


def _text(value: Any) -> str:
    """A header/message field as text (enum members by their value)."""
    return str(getattr(value, "value", value))


@dataclass
class Intercept:
    """One envelope as the eavesdropper saw it. `header` is None when even the cleartext header
    did not parse; `message` is None when the body could not be decoded (then `error` says why).
    `raw` is the exact bytes observed (b"" when the tap was built with keep_raw=False)."""

    index: int
    point: str
    size: int
    header: dict | None = None
    message: Message | None = None
    error: str | None = None
    raw: bytes = b""
    attempted: bool = field(default=False, repr=False)  # decoding already tried
    # False when the body decoded but was not kept (kind outside retain_kinds): still decoded
    retained: bool = field(default=True, repr=False)

    @property
    def type(self) -> str:
        if self.message is not None:
            return _text(self.message.type)
        if self.header is not None and "type" in self.header:
            return _text(self.header["type"])
        return "?"

    def describe(self) -> dict:
        """The intercept as one entry of a saved capture's index.json."""
        meta = dict(self.message.meta) if self.message is not None and _text(self.message.type) == ARTIFACT_TYPE else {}
        return {
            "index": self.index,
            "point": self.point,
            "size": self.size,
            "decoded": self.message is not None,
            "error": self.error,
            "header": self.header,
            "artifact": meta.get("artifact"),
            "chunk": meta.get("chunk"),
        }


class Eavesdropper:
    """A passive tap: `observe(bytes)` for every envelope, analyses on demand."""

    def __init__(
        self,
        name: str = "wire",
        keep_raw: bool = True,
        *,
        decode: Decoder | None = None,
        peek_header: HeaderPeeker | None = None,
        retain_kinds: Iterable[str] | None = None,
        fold_kinds: Iterable[str] = (),
    ):
        """`retain_kinds`: keep the contents only of artifacts of these kinds (None = all);
        other messages keep their header and size. Bounds memory over long training runs,
        whose per-step traffic would otherwise pile up (the tap then decodes every
        RETAIN_FLUSH_BYTES instead of only on demand).

        `fold_kinds`: artifacts of these kinds (e.g. one small artifact per training step)
        are folded, per sender and round, into one artifact `<kind>@<round>` holding the
        latest row of every user seen in that round: what the per-step stream told about each
        user by the end of the round, in bounded memory."""
        self.name = name
        self.keep_raw = keep_raw
        self.retain_kinds = None if retain_kinds is None else frozenset(retain_kinds)
        self.fold_kinds = frozenset(fold_kinds)
        self._folds: dict[tuple[str, str, int], LatestRows] = {}
        self._undecoded_bytes = 0
        # Another codec can be given (tests use a stand-in wire format).
        self._decode = decode or protocol_decode
        self._peek = peek_header or protocol_peek_header
        self._intercepts: list[Intercept] = []
        self._pending = 0  # index of the first intercept not yet decoded
        self._artifacts: dict[str, Artifact] | None = None
        self._problems: list[str] = []

    # ------------------------------------------------------------------ observing
    def observe(self, data: bytes, point: str = "wire") -> None:
        """Record one envelope exactly as seen. Never raises: non-bytes input is recorded
        as an intercept with an error."""
        try:
            raw = bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else None
        except Exception:  # a memoryview of an exotic buffer; record, do not raise
            raw = None
        if raw is None:
            self._intercepts.append(
                Intercept(len(self._intercepts), str(point), 0, error=f"NOT_BYTES: observed a {type(data).__name__}", attempted=True)
            )
        else:
            self._intercepts.append(Intercept(len(self._intercepts), str(point), len(raw), raw=raw))
            self._undecoded_bytes += len(raw)
        self._artifacts = None
        if (self.retain_kinds is not None or self.fold_kinds) and self._undecoded_bytes > RETAIN_FLUSH_BYTES:
            self._decode_pending()

    __call__ = observe

    def observe_many(self, envelopes: Iterable[bytes], point: str = "wire") -> None:
        for data in envelopes:
            self.observe(data, point)

    def __len__(self) -> int:
        return len(self._intercepts)

    # ------------------------------------------------------------------ decoding
    def _decode_pending(self) -> None:
        if self._pending >= len(self._intercepts):
            return
        for rec in self._intercepts[self._pending :]:
            if rec.attempted:
                continue
            rec.attempted = True
            self._read(rec)
            if self._fold(rec.message):
                rec.message, rec.raw, rec.retained = None, b"", False
            if self.retain_kinds is not None and not self._retained(rec.message):
                rec.message, rec.raw, rec.retained = None, b"", False
            if not self.keep_raw:
                rec.raw = b""
        self._pending = len(self._intercepts)
        self._undecoded_bytes = 0

    def _read(self, rec: Intercept) -> None:
        """The cleartext header of one intercept, then its message if the body decodes."""
        if self._peek is codec.peek_header and self._decode is codec.decode:
            # The protocol's own codec: parse the envelope once for both (peek_header and
            # decode run the same framing and header checks).
            try:
                frame = codec.parse_frame(rec.raw)
            except Exception as exc:  # garbage, truncated, or unknown wire version
                rec.error = _error_text(exc)
                return
            rec.header = dict(frame.header)
            try:
                rec.message = codec.decode_frame(frame)
            except Exception as exc:  # ENCRYPTED on the secure suite, or malformed body
                rec.error = _error_text(exc)
            return
        try:
            rec.header = dict(self._peek(rec.raw))
        except Exception as exc:
            rec.error = _error_text(exc)
        else:
            try:
                rec.message = self._decode(rec.raw)
            except Exception as exc:
                rec.error = _error_text(exc)

    def _fold(self, msg: Any) -> bool:
        """Fold an artifact of a fold kind into its round's latest-row-per-user artifact."""
        if msg is None or _text(msg.type) != ARTIFACT_TYPE:
            return False
        kind = str(dict(msg.meta).get("kind", ""))
        if kind not in self.fold_kinds or "user_ids" not in msg.arrays:
            return False
        rows = self._folds.setdefault((kind, _text(msg.sender), int(msg.round or 0)), LatestRows())
        rows.add(msg.arrays["user_ids"], {k: v for k, v in msg.arrays.items() if k != "user_ids"})
        return True

    def _folded(self) -> dict[str, Artifact]:
        out = {}
        for (kind, sender, rnd), rows in self._folds.items():
            users, arrays = rows.latest()
            name = f"{kind}@{rnd}"
            meta = {"kind": kind, "artifact": name, "folded": "latest row of each user over the round's artifacts"}
            out[name] = Artifact(name=name, kind=kind, meta=meta, user_ids=users, arrays=arrays, sender=sender, round=rnd)
        return out

    def _retained(self, msg: Any) -> bool:
        if msg is None:
            return True
        return _text(msg.type) != ARTIFACT_TYPE or str(dict(msg.meta).get("kind", "")) in self.retain_kinds

    @property
    def intercepts(self) -> list[Intercept]:
        self._decode_pending()
        return self._intercepts

    # ------------------------------------------------------------------ artifacts
    def artifacts(self) -> dict[str, Artifact]:
        """Artifacts reassembled from the decodable 'artifact' messages, by name.

        Chunks are ordered by their index; a repeated chunk index is ignored (first copy wins).
        An artifact with chunks missing is returned with complete=False and `missing_chunks`.
        If the same name is sent again by another sender or in another round, the later
        transmissions are keyed '<name>#2', '<name>#3', ... in order of first appearance.
        """
        self._decode_pending()
        if self._artifacts is not None:
            return dict(self._artifacts)
        self._problems = []
        groups: dict[tuple, dict[int, Any]] = {}
        totals: dict[tuple, int] = {}
        for rec in self._intercepts:
            msg = rec.message
            if msg is None or _text(msg.type) != ARTIFACT_TYPE:
                continue
            meta = dict(msg.meta)
            try:
                name = str(meta["artifact"])
                chunk, total = int(meta["chunk"]), int(meta["chunks"])
            except (KeyError, TypeError, ValueError):
                self._problems.append(f"intercept {rec.index}: artifact message without artifact/chunk/chunks meta")
                continue
            if not 0 <= chunk < total:
                self._problems.append(f"intercept {rec.index}: chunk {chunk} outside 0..{total - 1}")
                continue
            key = (name, _text(msg.sender), int(msg.round or 0))
            parts = groups.setdefault(key, {})
            if chunk not in parts:
                parts[chunk] = msg
            totals[key] = max(totals.get(key, 0), total)

        result: dict[str, Artifact] = {}
        seen_names: Counter[str] = Counter()
        for key, parts in groups.items():  # dicts keep first-appearance order
            name, sender, rnd = key
            seen_names[name] += 1
            label = name if seen_names[name] == 1 else f"{name}#{seen_names[name]}"
            artifact = self._assemble(label, parts, totals[key])
            if artifact is not None:
                artifact.sender, artifact.round = sender, rnd
                result[label] = artifact
        result.update(self._folded())
        self._artifacts = result
        return dict(result)

    def _assemble(self, label: str, parts: dict[int, Any], total: int) -> Artifact | None:
        ordered = [parts[i] for i in sorted(parts)]
        first = ordered[0]
        keys = sorted(first.arrays)
        usable = []
        for msg in ordered:
            arrays = msg.arrays
            if "user_ids" not in arrays or sorted(arrays) != keys:
                self._problems.append(f"artifact {label!r}: chunk {msg.meta.get('chunk')} has fields {sorted(arrays)}, expected {keys}")
                continue
            n = np.asarray(arrays["user_ids"]).shape[0]
            if any(np.asarray(arrays[k]).shape[:1] != (n,) for k in keys):
                self._problems.append(f"artifact {label!r}: chunk {msg.meta.get('chunk')} has arrays with row counts unlike user_ids")
                continue
            usable.append(msg)
        if not usable:
            return None
        cat = {k: np.concatenate([np.asarray(m.arrays[k]) for m in usable]) for k in keys}
        have = {int(m.meta["chunk"]) for m in usable}
        missing = tuple(i for i in range(total) if i not in have)
        meta = {k: v for k, v in dict(usable[0].meta).items() if k not in ("chunk", "chunks")}
        return Artifact(
            name=label,
            kind=str(meta.get("kind", "")),
            meta=meta,
            user_ids=cat.pop("user_ids").astype(np.int64),
            arrays=cat,
            complete=not missing,
            missing_chunks=missing,
            receiver=_text(usable[0].receiver),
        )

    # ------------------------------------------------------------------ summary
    def summary(self) -> dict:
        """Counts and bytes (total, per type, per observation point, per flow), what could not
        be decoded and why, what the tap still learns from cleartext headers, the message order
        (run-length encoded), and the reassembled artifacts. JSON-able."""
        return summarize(self.name, self.intercepts, self.artifacts(), self._problems)

    # ------------------------------------------------------------------ saving
    def save(self, directory: Path | str, users: pd.DataFrame | None = None, kinds: Iterable[str] | None = None) -> list[Path]:
        """Write what was captured into `directory` (created if needed; a run passes its
        `intercepted/` folder):

        - `artifact-<name>.safetensors` per reassembled artifact: `user_ids` plus its arrays;
          the metadata key "cdrsim" holds JSON {name, kind, meta, complete, missing_chunks, ...}.
        - `users.csv`: every user id seen in an artifact (and every id in `users`), whether it
          was intercepted, and the known labels from `users` (its `user_id` column, or its index).
        - `index.json`: the summary, one entry per intercept (header fields, size, decoded or
          not, error), and which file holds each artifact.

        `kinds` limits the artifact files to those kinds (e.g. the released representation,
        not thousands of per-step training messages); every intercept stays in the index.
        `load_artifact` reads an artifact file back. Returns the written paths."""
        return save_capture(self, directory, users=users, kinds=kinds)
