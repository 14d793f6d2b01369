"""What an eavesdropper's capture amounts to (`Eavesdropper.summary`): counts, sizes, what
could not be decoded and why, what the cleartext headers still tell, the message order, and
the reassembled artifacts."""

from __future__ import annotations

from collections import Counter
from typing import Any

from .artifact import Artifact
from .jsonable import json_safe

# Runs of the message order kept in summary(); a long training run alternates types thousands of times.
MAX_ORDER_RUNS = 200


def _text(value: Any) -> str:
    """A header/message field as text (enum members by their value)."""
    return str(getattr(value, "value", value))


def _reason(error: str) -> str:
    return error.split(":", 1)[0]


def summarize(name: str, recs: list, artifacts: dict[str, Artifact], problems: list[str]) -> dict:
    """The summary of intercepts `recs` (attacks.tap.Intercept) and the artifacts reassembled
    from them; JSON-able."""
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
    return json_safe(
        {
            "eavesdropper": name,
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
            "problems": list(problems),
        }
    )
