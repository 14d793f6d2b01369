"""The passive eavesdropper: records every envelope it sees, decodes what it can, reassembles
artifacts, and saves what it captured so that anyone can run their own attacks on it.

`Eavesdropper.observe(bytes)` only appends (the tap sees every message of a training run);
decoding happens lazily, the first time `intercepts`, `artifacts()`, `summary()` or `save()` is
asked. Against the secure suite `protocol.decode` refuses the body (ENCRYPTED), so the tap keeps
only what travels in clear: sizes, the cleartext header fields and the order of messages.

An Eavesdropper is callable, so it plugs straight into a relay's list of taps.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from safetensors.numpy import load_file, save_file

if TYPE_CHECKING:  # only for annotations; the codec is imported lazily (see _codec)
    from protocol import Message

Decoder = Callable[[bytes], Any]
HeaderPeeker = Callable[[bytes], dict]

ARTIFACT_TYPE = "artifact"
RETAIN_FLUSH_BYTES = 64 * 1024 * 1024
# Runs of the message order kept in summary(); a long training run alternates types thousands of times.
MAX_ORDER_RUNS = 200
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def _codec() -> tuple[Decoder, HeaderPeeker]:
    try:
        from protocol import decode, peek_header
    except ImportError as exc:  # the protocol package is the only project import allowed here
        raise ImportError(
            "attacks.tap needs protocol.decode and protocol.peek_header; install the cdrsim "
            "protocol package or pass decode=/peek_header= to Eavesdropper"
        ) from exc
    return decode, peek_header


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


def _reason(error: str) -> str:
    return error.split(":", 1)[0]


def _json_safe(value: Any) -> Any:
    """Header fields and meta as JSON: bytes as hex, numpy scalars/arrays as numbers/lists."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
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


@dataclass
class Artifact:
    """A per-user artifact reassembled from its chunks: `arrays` excludes `user_ids`; every
    array has one row per entry of `user_ids`."""

    name: str
    kind: str
    meta: dict
    user_ids: np.ndarray
    arrays: dict[str, np.ndarray]
    complete: bool = True
    missing_chunks: tuple[int, ...] = ()
    sender: str = ""
    receiver: str = ""
    round: int = 0

    def features(self, field: str | None = None) -> np.ndarray:
        """Per-user feature matrix [n_users, d] (each row flattened, float32), rows ordered
        like `user_ids`. `field=None` concatenates every array in sorted name order."""
        names = [field] if field is not None else sorted(self.arrays)
        missing = [n for n in names if n not in self.arrays]
        if missing:
            raise KeyError(f"artifact {self.name!r} has no field {missing[0]!r}; fields: {sorted(self.arrays)}")
        n = int(self.user_ids.shape[0])
        blocks = []
        for key in names:
            arr = self.arrays[key]
            if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
                raise TypeError(f"artifact {self.name!r}: field {key!r} has non-numeric dtype {arr.dtype}")
            blocks.append(arr.reshape(n, -1).astype(np.float32))
        if not blocks:
            return np.zeros((n, 0), dtype=np.float32)
        return np.concatenate(blocks, axis=1)

    def features_for(self, user_ids: np.ndarray, field: str | None = None) -> np.ndarray:
        """Feature rows for the given users (first occurrence of each id); raises if one is absent."""
        feats = self.features(field)
        unique_ids, first = np.unique(np.asarray(self.user_ids, dtype=np.int64), return_index=True)
        wanted = np.asarray(user_ids, dtype=np.int64).reshape(-1)
        pos = np.searchsorted(unique_ids, wanted)
        clipped = np.minimum(pos, max(0, unique_ids.size - 1))
        found = (pos < unique_ids.size) & (unique_ids[clipped] == wanted) if unique_ids.size else np.zeros(wanted.size, bool)
        if not found.all():
            absent = wanted[~found]
            raise KeyError(f"artifact {self.name!r} has no rows for users {absent[:10].tolist()} ({absent.size} missing)")
        return feats[first[clipped]]


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
    ):
        """`retain_kinds`: keep the contents only of artifacts of these kinds (None = all);
        other messages keep their header and size. Bounds memory over long training runs,
        whose per-step traffic would otherwise pile up (the tap then decodes every
        RETAIN_FLUSH_BYTES instead of only on demand)."""
        self.name = name
        self.keep_raw = keep_raw
        self.retain_kinds = None if retain_kinds is None else frozenset(retain_kinds)
        self._undecoded_bytes = 0
        self._decode = decode
        self._peek = peek_header
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
        if self.retain_kinds is not None and self._undecoded_bytes > RETAIN_FLUSH_BYTES:
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
        if self._decode is None or self._peek is None:
            decode, peek = _codec()
            self._decode = self._decode or decode
            self._peek = self._peek or peek
        for rec in self._intercepts[self._pending :]:
            if rec.attempted:
                continue
            rec.attempted = True
            try:
                rec.header = dict(self._peek(rec.raw))
            except Exception as exc:  # garbage, truncated, or unknown wire version
                rec.error = _error_text(exc)
            else:
                try:
                    rec.message = self._decode(rec.raw)
                except Exception as exc:  # ENCRYPTED on the secure suite, or malformed body
                    rec.error = _error_text(exc)
            if self.retain_kinds is not None and not self._retained(rec.message):
                rec.message, rec.raw, rec.retained = None, b"", False
            if not self.keep_raw:
                rec.raw = b""
        self._pending = len(self._intercepts)
        self._undecoded_bytes = 0

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
        recs = self.intercepts
        artifacts = self.artifacts()
        per_type: dict[str, dict] = {}
        per_point: dict[str, dict] = {}
        flows: dict[tuple[str, str], dict] = {}
        suites: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        header_fields: set[str] = set()
        undecoded_types: Counter[str] = Counter()
        order: list[dict] = []
        decoded = undecoded = 0
        decoded_bytes = undecoded_bytes = 0
        for rec in recs:
            t = rec.type
            entry = per_type.setdefault(t, {"count": 0, "bytes": 0, "decoded": 0, "min_size": rec.size, "max_size": rec.size})
            entry["count"] += 1
            entry["bytes"] += rec.size
            entry["min_size"] = min(entry["min_size"], rec.size)
            entry["max_size"] = max(entry["max_size"], rec.size)
            pt = per_point.setdefault(rec.point, {"count": 0, "bytes": 0})
            pt["count"] += 1
            pt["bytes"] += rec.size
            if rec.message is not None or not rec.retained:
                decoded += 1
                decoded_bytes += rec.size
                entry["decoded"] += 1
            else:
                undecoded += 1
                undecoded_bytes += rec.size
                reasons[_reason(rec.error or "UNKNOWN")] += 1
                undecoded_types[t] += 1
            sender = receiver = "?"
            if rec.header is not None:
                header_fields.update(rec.header)
                suites[_text(rec.header.get("suite", "?"))] += 1
                sender, receiver = _text(rec.header.get("sender", "?")), _text(rec.header.get("receiver", "?"))
            flow = flows.setdefault((sender, receiver), {"sender": sender, "receiver": receiver, "count": 0, "bytes": 0})
            flow["count"] += 1
            flow["bytes"] += rec.size
            if order and (order[-1]["type"], order[-1]["sender"], order[-1]["receiver"]) == (t, sender, receiver):
                order[-1]["count"] += 1
                order[-1]["bytes"] += rec.size
            else:
                order.append({"type": t, "sender": sender, "receiver": receiver, "count": 1, "bytes": rec.size})
        return _json_safe(
            {
                "eavesdropper": self.name,
                "intercepts": len(recs),
                "bytes": sum(r.size for r in recs),
                "decoded": {"count": decoded, "bytes": decoded_bytes},
                "could_not_decode": {
                    "count": undecoded,
                    "bytes": undecoded_bytes,
                    "reasons": dict(sorted(reasons.items())),
                    "types": dict(sorted(undecoded_types.items())),
                },
                "still_learns": {
                    "header_fields": sorted(header_fields),
                    "suites": dict(sorted(suites.items())),
                    "flows": list(flows.values()),
                    "note": "sizes, cleartext header fields and message order are visible even when bodies are encrypted",
                },
                "per_type": dict(sorted(per_type.items())),
                "per_point": dict(sorted(per_point.items())),
                "order": order[:MAX_ORDER_RUNS],
                "order_truncated": len(order) > MAX_ORDER_RUNS,
                "artifacts": {
                    name: {
                        "kind": a.kind,
                        "users": int(a.user_ids.shape[0]),
                        "fields": {k: list(v.shape[1:]) for k, v in sorted(a.arrays.items())},
                        "dtypes": {k: str(v.dtype) for k, v in sorted(a.arrays.items())},
                        "complete": a.complete,
                        "missing_chunks": list(a.missing_chunks),
                        "sender": a.sender,
                        "round": a.round,
                    }
                    for name, a in artifacts.items()
                },
                "problems": list(self._problems),
            }
        )

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

        Returns the written paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        wanted = None if kinds is None else set(kinds)
        artifacts = {n: a for n, a in self.artifacts().items() if wanted is None or a.kind in wanted}
        written: list[Path] = []
        files: dict[str, str] = {}
        used: set[str] = set()
        for name, art in artifacts.items():
            stem = _SAFE_NAME.sub("_", name) or "artifact"
            while stem in used:
                stem += "_"
            used.add(stem)
            path = directory / f"artifact-{stem}.safetensors"
            tensors = {"user_ids": np.ascontiguousarray(art.user_ids)}
            tensors.update({k: np.ascontiguousarray(v) for k, v in art.arrays.items()})
            info = {
                "name": art.name,
                "kind": art.kind,
                "meta": art.meta,
                "complete": art.complete,
                "missing_chunks": list(art.missing_chunks),
                "sender": art.sender,
                "receiver": art.receiver,
                "round": art.round,
            }
            # One metadata key keeps the file bytes deterministic.
            save_file(tensors, str(path), metadata={"cdrsim": json.dumps(_json_safe(info), sort_keys=True)})
            files[name] = path.name
            written.append(path)

        users_path = directory / "users.csv"
        _users_table(artifacts, users).to_csv(users_path, index=False)
        written.append(users_path)

        index_path = directory / "index.json"
        index = {
            "summary": self.summary(),
            "artifact_files": files,
            "intercepts": [
                {
                    "index": r.index,
                    "point": r.point,
                    "size": r.size,
                    "decoded": r.message is not None,
                    "error": r.error,
                    "header": r.header,
                    "artifact": (
                        dict(r.message.meta).get("artifact") if r.message is not None and _text(r.message.type) == ARTIFACT_TYPE else None
                    ),
                    "chunk": (
                        dict(r.message.meta).get("chunk") if r.message is not None and _text(r.message.type) == ARTIFACT_TYPE else None
                    ),
                }
                for r in self.intercepts
            ],
        }
        index_path.write_text(json.dumps(_json_safe(index), indent=1, sort_keys=True))
        written.append(index_path)
        return written


def _users_table(artifacts: Mapping[str, Artifact], users: pd.DataFrame | None) -> pd.DataFrame:
    seen = np.unique(np.concatenate([a.user_ids for a in artifacts.values()])) if artifacts else np.zeros(0, dtype=np.int64)
    table = pd.DataFrame({"user_id": seen.astype(np.int64), "intercepted": True})
    if users is None:
        return table
    labels = users.copy()
    if "user_id" not in labels.columns:
        labels = labels.rename_axis("user_id").reset_index()
    try:
        labels["user_id"] = labels["user_id"].astype(np.int64)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            "users must identify users by integer ids, in a 'user_id' column or as its index "
            f"(the ids the artifacts carry); got {labels['user_id'].dtype}"
        ) from exc
    labels = labels.drop(columns=["intercepted"], errors="ignore")
    merged = table.merge(labels, on="user_id", how="outer")
    merged["intercepted"] = merged["intercepted"].astype("boolean").fillna(False).astype(bool)
    return merged.sort_values("user_id", kind="stable").reset_index(drop=True)


def load_artifact(path: Path | str) -> Artifact:
    """Read back an artifact written by `Eavesdropper.save`."""
    from safetensors import safe_open

    path = Path(path)
    with safe_open(str(path), framework="numpy") as f:
        info = json.loads((f.metadata() or {}).get("cdrsim", "{}"))
    tensors = load_file(str(path))
    if "user_ids" not in tensors:
        raise ValueError(f"{path} has no 'user_ids' tensor; it was not written by Eavesdropper.save")
    user_ids = tensors.pop("user_ids")
    return Artifact(
        name=str(info.get("name", path.stem)),
        kind=str(info.get("kind", "")),
        meta=dict(info.get("meta", {})),
        user_ids=user_ids,
        arrays=tensors,
        complete=bool(info.get("complete", True)),
        missing_chunks=tuple(info.get("missing_chunks", ())),
        sender=str(info.get("sender", "")),
        receiver=str(info.get("receiver", "")),
        round=int(info.get("round", 0)),
    )
