"""The application-level message that every party sends and receives."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class Message:
    """One protocol message. Callers fill the first seven fields; `seal`/`decode` fill the rest.

    `arrays` become the safetensors body, `meta` a small CBOR map (str keys; int, float, str,
    bool, None, bytes, lists and maps of those).
    """

    type: str
    sender: str
    receiver: str
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)
    round: int = 0
    reply_to: int | None = None
    # Filled in when the message is sealed or decoded:
    session_id: bytes = b""
    epoch: int = 0
    seq: int = 0
    suite: str = "plaintext"

    def __eq__(self, other: object) -> bool:
        # numpy arrays have no scalar truth value, so compare them explicitly (dtype and shape too)
        if not isinstance(other, Message):
            return NotImplemented
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name == "arrays":
                if set(a) != set(b):
                    return False
                for key in a:
                    x, y = np.asarray(a[key]), np.asarray(b[key])
                    if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
                        return False
            elif f.name == "meta":
                if dict(a) != dict(b):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None  # type: ignore[assignment]  # mutable array contents

    def __repr__(self) -> str:
        arrays = ", ".join(f"{k}:{np.asarray(v).dtype}{list(np.shape(v))}" for k, v in self.arrays.items())
        return (
            f"Message(type={self.type!r}, sender={self.sender!r}, receiver={self.receiver!r}, "
            f"arrays={{{arrays}}}, meta={dict(self.meta)!r}, round={self.round}, reply_to={self.reply_to}, "
            f"session_id={self.session_id.hex()!r}, epoch={self.epoch}, seq={self.seq}, suite={self.suite!r})"
        )
