"""Canonical CBOR for headers: strict decoding (no tags, no duplicates, canonical bytes only).

Only a small data model crosses the wire: maps with text keys, arrays, text, bytes, ints in
the 64-bit range, floats, booleans and null. Rejecting every semantic tag keeps out
value-sharing references (cycles, exponential expansion), timestamps, bignums and other
types a peer could use to surprise a decoder; requiring canonical bytes makes every header
have exactly one encoding, so byte-exact vectors and AEAD associated data are unambiguous.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cbor2
import numpy as np

from .errors import ErrorCode, ProtocolError
from .wire import CBOR_MAX_DEPTH, MAX_META_DEPTH, U64_MAX

_INT_MIN = -(2**64)  # CBOR major type 1 reaches -2^64


def _reject_tag(*_args: Any) -> Any:
    raise ValueError("CBOR semantic tags are not allowed in protocol v1")


class _NoSemanticTags(dict):
    """A decoder table that claims every tag number and rejects it (cbor2 consults it first)."""

    def __contains__(self, _key: object) -> bool:
        return True

    def get(self, _key: object, _default: Any = None) -> Any:
        return _reject_tag

    def __getitem__(self, _key: object) -> Any:
        return _reject_tag


_NO_TAGS = _NoSemanticTags()


def dumps(obj: Any) -> bytes:
    """Canonical CBOR (RFC 7049 §3.9 as implemented by cbor2 canonical=True)."""
    return cbor2.dumps(obj, canonical=True)


def loads(data: bytes, *, what: str = "header") -> Any:
    """Decode canonical CBOR strictly; every failure is a ProtocolError.

    DUPLICATE_KEY for a repeated map key, MALFORMED_HEADER for anything else (bad syntax,
    trailing bytes, tags, indefinite lengths, disallowed types, non-canonical encoding).
    """
    raw = bytes(data)
    try:
        obj = cbor2.loads(
            raw,
            allow_duplicate_keys=False,
            allow_indefinite=False,
            max_depth=CBOR_MAX_DEPTH,
            semantic_decoders=_NO_TAGS,
            tag_hook=_reject_tag,
            str_errors="strict",
        )
    except Exception as exc:  # cbor2 raises several types; all mean "not valid CBOR for us"
        text = f"{exc} {exc.__cause__ or ''}"
        if "duplicate map key" in text.lower():  # cbor2's wording, pinned by a test
            raise ProtocolError(
                ErrorCode.DUPLICATE_KEY,
                f"the {what} CBOR repeats a map key ({exc}); every key may appear once",
            ) from None
        raise ProtocolError(
            ErrorCode.MALFORMED_HEADER,
            f"the {what} is not valid CBOR for protocol v1 ({type(exc).__name__}: {exc}); use definite-length canonical CBOR without tags",
        ) from None
    problem = _check_value(obj, 0)
    if problem:
        raise ProtocolError(ErrorCode.MALFORMED_HEADER, f"the {what} contains {problem}")
    try:
        canonical = dumps(obj)
    except Exception as exc:  # pragma: no cover - _check_value admits only encodable values
        raise ProtocolError(ErrorCode.MALFORMED_HEADER, f"the {what} cannot be re-encoded: {exc}") from None
    if canonical != raw:
        raise ProtocolError(
            ErrorCode.MALFORMED_HEADER,
            f"the {what} is not in canonical CBOR form ({len(raw)} bytes, canonical form has "
            f"{len(canonical)}); encode with sorted keys, shortest integers and floats, definite "
            "lengths and nothing after the map",
        )
    return obj


def _check_value(value: Any, depth: int) -> str | None:
    """Return a description of the first disallowed value, or None."""
    if depth > CBOR_MAX_DEPTH:
        return f"values nested deeper than {CBOR_MAX_DEPTH} levels"
    t = type(value)
    if value is None or t is bool or t is float or t is str or t is bytes:
        return None
    if t is int:
        return None if _INT_MIN <= value <= U64_MAX else f"an integer outside the 64-bit range ({value})"
    if t is list:
        for item in value:
            problem = _check_value(item, depth + 1)
            if problem:
                return problem
        return None
    if t is dict:
        for key, item in value.items():
            if type(key) is not str:
                return f"a map key of type {type(key).__name__} (only text keys are allowed)"
            problem = _check_value(item, depth + 1)
            if problem:
                return problem
        return None
    return f"a value of type {t.__name__} (allowed: map, array, text, bytes, int, float, bool, null)"


def normalize_meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """Turn caller-supplied meta into the wire data model, or raise ProtocolError saying why.

    Tuples become lists and numpy scalars become Python scalars (parties often put metric
    values computed with numpy there); arrays are refused: they belong in Message.arrays.
    """
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise ProtocolError(ErrorCode.MALFORMED_HEADER, f"meta must be a mapping, got {type(meta).__name__}")
    return _normalize(meta, 0, "meta")


def _normalize(value: Any, depth: int, path: str) -> Any:
    if depth > MAX_META_DEPTH:
        raise ProtocolError(ErrorCode.MALFORMED_HEADER, f"{path}: meta is nested deeper than {MAX_META_DEPTH} levels; flatten it")
    if isinstance(value, np.generic):  # numpy scalar -> the equivalent Python scalar
        value = value.item()
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ProtocolError(ErrorCode.MALFORMED_HEADER, f"{path}: text is not valid Unicode (lone surrogate); fix the string") from None
        return str(value)
    if isinstance(value, int):
        if not (_INT_MIN <= value <= U64_MAX):
            raise ProtocolError(
                ErrorCode.MALFORMED_HEADER,
                f"{path}: integer {value} is outside the 64-bit range; send it as a string or an array",
            )
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, np.ndarray):
        raise ProtocolError(ErrorCode.MALFORMED_HEADER, f"{path}: numpy arrays do not go in meta; put them in Message.arrays")
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ProtocolError(ErrorCode.MALFORMED_HEADER, f"{path}: meta keys must be str, got {type(key).__name__} {key!r}")
            out[_normalize(key, depth, path)] = _normalize(item, depth + 1, f"{path}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [_normalize(item, depth + 1, f"{path}[{i}]") for i, item in enumerate(value)]
    raise ProtocolError(
        ErrorCode.MALFORMED_HEADER,
        f"{path}: values of type {type(value).__name__} cannot go in meta "
        "(allowed: dict with str keys, list, str, bytes, int, float, bool, None)",
    )
