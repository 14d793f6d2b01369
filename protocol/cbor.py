"""Canonical CBOR for headers: a strict decoder of the v1 data model, and the canonical encoder.

Only a small data model crosses the wire: maps with text keys, arrays, text, bytes, ints in
the 64-bit range, floats, booleans and null. Rejecting every semantic tag keeps out
value-sharing references (cycles, exponential expansion), timestamps, bignums and other
types a peer could use to surprise a decoder; requiring canonical bytes makes every header
have exactly one encoding, so byte-exact vectors and AEAD associated data are unambiguous.

The decoder is our own so that the order of the checks (PROTOCOL.md §3.1) is the one the
specification states and memory stays bounded: a claimed length or element count is compared
with the bytes that remain before anything is read or allocated.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, NoReturn

import cbor2
import numpy as np

from .errors import ErrorCode, ProtocolError
from .wire import CBOR_MAX_DEPTH, MAX_META_DEPTH, U64_MAX

_INT_MIN = -(2**64)  # CBOR major type 1 reaches -2^64
_HALF, _SINGLE, _DOUBLE = struct.Struct(">e"), struct.Struct(">f"), struct.Struct(">d")
_SIMPLE = {20: False, 21: True, 22: None}  # the only simple values of the data model


def dumps(obj: Any) -> bytes:
    """Canonical CBOR (RFC 7049 §3.9 as implemented by cbor2 canonical=True).

    Fast path: a map or array of the data model whose maps already list their keys in
    canonical order (as `normalize_meta` and the header builders make them) and that holds no
    float encodes to the same bytes with cbor2's plain encoder, which keeps the key order and
    writes every integer and length in shortest form. Anything else (floats, whose shortest
    form only the canonical encoder writes) goes through canonical=True.
    """
    kind = type(obj)
    if kind is list or kind is dict:
        try:
            if not _in_model(obj, 0, set()):
                return cbor2.dumps(obj)
        except SlowPath:
            pass
    return cbor2.dumps(obj, canonical=True)


def encode_checked(value: Any, has_float: bool) -> bytes:
    """The canonical bytes of a value a check walk found in the data model with its map keys in
    canonical order: the plain encoder writes them, except floats (only the canonical encoder
    writes their shortest form)."""
    return cbor2.dumps(value, canonical=True) if has_float else cbor2.dumps(value)


def loads(data: bytes | bytearray | memoryview, *, what: str = "header") -> Any:
    """Decode canonical CBOR strictly; every failure is a ProtocolError.

    Three phases, in this order (PROTOCOL.md §3.1): the whole item must be well-formed and
    inside the data model (MALFORMED_HEADER, at the first problem in byte order); then no map
    may repeat a key (DUPLICATE_KEY); then the bytes must be the canonical encoding
    (MALFORMED_HEADER).
    """
    raw = bytes(data)
    fast = decode_fast(raw, _in_data_model)
    if fast is not SLOW:
        return fast
    decoder = _Decoder(raw, what)
    obj = decoder.item(0)
    if decoder.pos != len(raw):
        decoder.fail(f"{len(raw) - decoder.pos} bytes follow the top-level item")
    if decoder.duplicate is not None:
        raise ProtocolError(
            ErrorCode.DUPLICATE_KEY,
            f"the {what} CBOR repeats the map key {decoder.duplicate[:64]!r}; every key may appear once",
        )
    canonical = dumps(obj)
    if canonical != raw:
        raise ProtocolError(
            ErrorCode.MALFORMED_HEADER,
            f"the {what} is not in canonical CBOR form ({len(raw)} bytes, canonical form has "
            f"{len(canonical)}); encode with sorted keys, shortest integers and floats, definite "
            "lengths and nothing after the map",
        )
    return obj


class SlowPath(Exception):
    """Raised by a fast path's check: a value it does not handle; the general (strict or
    canonical) code decides."""


SLOW = object()  # what `decode_fast` returns when the strict decoder must decide


_SCALARS = frozenset({str, bytes, bool, type(None)})


def _text_order(key: str) -> int:
    """Length of a key's UTF-8 encoding. Canonical order sorts text keys by the length of their
    encoding, then bytewise: the CBOR head grows with the UTF-8 length, and UTF-8 sorts
    bytewise as code points do, so (UTF-8 length, str) gives the same order."""
    return len(key) if key.isascii() else len(key.encode("utf-8"))


def canonical_order(mapping: dict[str, Any]) -> dict[str, Any]:
    """The same map with its (text) keys in canonical order, so that `dumps` takes its fast path."""
    return {key: mapping[key] for key in _key_order(tuple(mapping))}


@lru_cache(maxsize=1024)
def _key_order(keys: tuple[str, ...]) -> tuple[str, ...]:
    # Parties send the same few meta layouts over and over: sort each set of keys once.
    return tuple(sorted(keys, key=lambda k: (_text_order(k), k)))


def decode_fast(raw: bytes | memoryview, check: Callable[[Any], bool]) -> Any:
    """What the strict decoder returns for `raw` when `raw` passes every check, else SLOW.

    cbor2's C decoder reads the item (it allocates nothing from a claimed length it cannot
    back with bytes, and bounds nesting); then `check(value)` must show that the value lies in
    the data model with the levels of §3.1, no container reached twice (tags 28/29 share
    values) and every map's keys in canonical order (so no duplicate); it returns whether the
    value holds a float and raises SlowPath otherwise. Last, the value's canonical encoding
    must be `raw` itself. Such bytes are exactly the canonical encoding of a data-model value,
    which the strict decoder accepts and decodes to the same value; anything else goes to the
    strict decoder, which finds the error and its code in the order §3.1 states.

    `check` is the generic walk (`_in_data_model`) or, for a header of a known shape, a check of
    that shape that proves the same in fewer steps.
    """
    try:
        value = cbor2.loads(raw)
        has_float = check(value)
        again = encode_checked(value, has_float)
    except Exception:  # any decoding problem or a value outside the model: the strict path
        return SLOW
    return value if again == raw else SLOW


def _in_data_model(value: Any) -> bool:
    """`decode_fast`'s check for any item."""
    kind = type(value)
    if kind is list or kind is dict:
        return _in_model(value, 0, set())
    if kind in _SCALARS or kind is float or (kind is int and _INT_MIN <= value <= U64_MAX):
        return kind is float
    raise SlowPath


def holds_float(container: dict | list, level: int) -> bool:
    """The generic check of `decode_fast` for a container at `level` of the item (raises
    SlowPath as it does), for shape checks that leave a free-form part (meta) to it."""
    return _in_model(container, level, set())


def _in_model(value: Any, level: int, seen: set[int]) -> bool:
    """Raise SlowPath unless the container `value` (an item at `level`) holds only the data model
    with canonical map key order; True when it holds a float (the plain encoder writes floats
    in full width, so the canonical encoder then checks their form). Kept in one loop: it runs
    for every header a party encodes or decodes."""
    if id(value) in seen:
        raise SlowPath
    seen.add(id(value))
    child = level + 1
    has_float = False
    if type(value) is dict:
        if value and child > CBOR_MAX_DEPTH:
            raise SlowPath
        previous_length, previous = -1, ""
        for key, item in value.items():
            if type(key) is not str:
                raise SlowPath
            # _text_order, inlined
            length = len(key) if key.isascii() else len(key.encode("utf-8"))
            if length < previous_length or (length == previous_length and key <= previous):
                raise SlowPath
            previous_length, previous = length, key
            kind = type(item)
            if kind in _SCALARS:
                continue
            if kind is int:
                if not _INT_MIN <= item <= U64_MAX:
                    raise SlowPath
            elif kind is float:
                has_float = True
            elif kind is list or kind is dict:
                has_float = _in_model(item, child, seen) or has_float
            else:
                raise SlowPath
        return has_float
    if value and child > CBOR_MAX_DEPTH:
        raise SlowPath
    for item in value:
        kind = type(item)
        if kind in _SCALARS:
            continue
        if kind is int:
            if not _INT_MIN <= item <= U64_MAX:
                raise SlowPath
        elif kind is float:
            has_float = True
        elif kind is list or kind is dict:
            has_float = _in_model(item, child, seen) or has_float
        else:
            raise SlowPath
    return has_float


class _Decoder:
    """Recursive descent over one CBOR item; nesting is bounded by CBOR_MAX_DEPTH."""

    def __init__(self, data: bytes, what: str):
        self.data = data
        self.pos = 0
        self.what = what
        self.duplicate: str | None = None  # first repeated map key, reported after phase 1

    def fail(self, why: str) -> NoReturn:
        raise ProtocolError(
            ErrorCode.MALFORMED_HEADER,
            f"the {self.what} is not valid CBOR for protocol v1: {why} (byte {self.pos}); use "
            "definite-length canonical CBOR without tags (maps with text keys, arrays, text, "
            "bytes, 64-bit ints, floats, booleans, null)",
        )

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:  # checked before slicing: no allocation from a claim
            self.fail(f"an item claims {n} bytes but only {len(self.data) - self.pos} remain")
        start = self.pos
        self.pos += n
        return self.data[start : self.pos]

    def head(self) -> tuple[int, int, int]:
        (initial,) = self.take(1)
        major, info = initial >> 5, initial & 0x1F
        if info < 24:
            return major, info, info
        if info <= 27:
            return major, info, int.from_bytes(self.take(1 << (info - 24)), "big")
        if info == 31:
            self.fail("indefinite-length items and 'break' are not allowed")
        self.fail(f"reserved additional information {info}")

    def item(self, level: int) -> Any:
        if level > CBOR_MAX_DEPTH:
            self.fail(f"an item is nested deeper than level {CBOR_MAX_DEPTH}")
        start = self.pos
        major, info, arg = self.head()
        if major == 0:
            return arg
        if major == 1:
            return -1 - arg
        if major == 2:
            return self.take(arg)
        if major == 3:
            raw = self.take(arg)
            try:
                return raw.decode("utf-8")  # strict: also refuses encoded surrogates
            except UnicodeDecodeError:
                pass
            self.pos = start
            self.fail("a text string is not valid UTF-8")
        if major == 4:
            if arg > len(self.data) - self.pos:  # every element needs at least one byte
                self.fail(f"an array claims {arg} elements but only {len(self.data) - self.pos} bytes remain")
            return [self.item(level + 1) for _ in range(arg)]
        if major == 5:
            return self.map(arg, level)
        if major == 6:
            self.pos = start
            self.fail(f"semantic tag {arg} (no tags are allowed)")
        return self.simple(info, arg, start)

    def map(self, count: int, level: int) -> dict[str, Any]:
        if 2 * count > len(self.data) - self.pos:  # every pair needs at least two bytes
            self.fail(f"a map claims {count} pairs but only {len(self.data) - self.pos} bytes remain")
        out: dict[str, Any] = {}
        for _ in range(count):
            key_at = self.pos
            key = self.item(level + 1)
            if type(key) is not str:
                self.pos = key_at
                self.fail(f"a map key of type {type(key).__name__} (only text keys are allowed)")
            value = self.item(level + 1)
            if key in out and self.duplicate is None:
                self.duplicate = key
            out[key] = value
        return out

    def simple(self, info: int, arg: int, start: int) -> Any:
        if info == 25:
            return _HALF.unpack(arg.to_bytes(2, "big"))[0]
        if info == 26:
            return _SINGLE.unpack(arg.to_bytes(4, "big"))[0]
        if info == 27:
            return _DOUBLE.unpack(arg.to_bytes(8, "big"))[0]
        if info < 24 and arg in _SIMPLE:
            return _SIMPLE[arg]
        self.pos = start
        self.fail("undefined" if arg == 23 and info < 24 else f"simple value {arg}")


def normalize_meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """Turn caller-supplied meta into the wire data model, or raise ProtocolError saying why.

    Tuples become lists and numpy scalars become Python scalars (parties often put metric
    values computed with numpy there); arrays are refused: they belong in Message.arrays.
    The depth rule is the receiver's (PROTOCOL.md §3.1): a value at meta depth
    MAX_META_DEPTH + 1 would sit above CBOR_MAX_DEPTH in the header.
    """
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise ProtocolError(ErrorCode.MALFORMED_HEADER, f"meta must be a mapping, got {type(meta).__name__}")
    flat = _flat_meta(meta)
    return flat[0] if flat is not None else _normalize(meta, 0, "meta")


def encode_meta(meta: Mapping[str, Any] | None) -> bytes:
    """`dumps(normalize_meta(meta))`, with one walk instead of three for flat meta."""
    flat = _flat_meta(meta) if type(meta) is dict else None
    if flat is None:
        return dumps(normalize_meta(meta))
    ordered, has_float = flat
    return encode_checked(ordered, has_float)


def _flat_meta(meta: Mapping[str, Any]) -> tuple[dict[str, Any], bool] | None:
    """The common case, fast: a map of text keys to None, bools, ints in range, floats and
    text (each valid Unicode); its copy in canonical key order, and whether it holds a float.
    None: `_normalize` decides."""
    has_float = False
    for key, value in meta.items():
        if type(key) is not str or not key.isascii():
            return None
        kind = type(value)
        if kind is str:
            if not value.isascii():
                return None
        elif kind is int:
            if not _INT_MIN <= value <= U64_MAX:
                return None
        elif kind is float:
            has_float = True
        elif not (kind is bool or value is None):
            return None
    return canonical_order(dict(meta)), has_float


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
        return canonical_order(out)
    if isinstance(value, (list, tuple)):
        return [_normalize(item, depth + 1, f"{path}[{i}]") for i, item in enumerate(value)]
    raise ProtocolError(
        ErrorCode.MALFORMED_HEADER,
        f"{path}: values of type {type(value).__name__} cannot go in meta "
        "(allowed: dict with str keys, list, str, bytes, int, float, bool, None)",
    )
