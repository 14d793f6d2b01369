"""The array body: canonical safetensors bytes (no __metadata__), built and checked zero-copy.

With at least one array the body is exactly what `safetensors.numpy.save(arrays)` produces
(a test checks this byte for byte); with none it is empty, not save({})'s 16 bytes. We write
it ourselves only to avoid copies: the encoder hands numpy buffers
straight to `bytes.join`/the AEAD, and the decoder compares the body's safetensors header
with the header the manifest implies (so nothing untrusted is parsed and sizes are known
before anything is allocated) and then views the data in place.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

import cbor2
import numpy as np

from .errors import ErrorCode, ProtocolError
from .wire import DTYPE_RANK, DTYPES, MAX_NAME_LEN, MAX_NDIM, U64_MAX, Limits

_U64LE = struct.Struct("<Q")

ManifestEntry = tuple[str, str, tuple[int, ...]]


@dataclass(frozen=True)
class Layout:
    """Where every array lives in a canonical safetensors body."""

    entries: tuple[ManifestEntry, ...]  # in body order
    header: bytes  # 8-byte length prefix + JSON + space padding
    offsets: tuple[tuple[int, int], ...]  # byte ranges relative to the start of the body
    size: int  # total body length (0 when there are no arrays)

    def manifest(self) -> list[list[Any]]:
        return [[name, dtype, list(shape)] for name, dtype, shape in self.entries]

    @cached_property
    def manifest_cbor(self) -> bytes:
        """The manifest's canonical CBOR, encoded once per layout (layouts are cached)."""
        return cbor2.dumps(self.manifest())  # lists, text and unsigned ints: the plain encoder is canonical

    @cached_property
    def views(self) -> tuple[tuple[str, np.dtype, int, int, tuple[int, ...]], ...]:
        """(name, wire dtype, element count, start, shape) of each array, for `arrays_from_buffer`."""
        out = []
        for (name, dtype, shape), (start, end) in zip(self.entries, self.offsets):
            wire = DTYPES[dtype][1]
            out.append((name, wire, (end - start) // wire.itemsize, start, shape))
        return tuple(out)


def _sort_key(entry: ManifestEntry) -> tuple[int, str]:
    # safetensors orders tensors by dtype (descending) then by name; DTYPE_RANK encodes that.
    return (DTYPE_RANK[entry[1]], entry[0])


def check_array_name(name: Any, *, code: ErrorCode = ErrorCode.MALFORMED_HEADER) -> str:
    if type(name) is not str or not name or len(name) > MAX_NAME_LEN or name == "__metadata__":
        raise ProtocolError(
            code,
            f"array name {name!r} is not allowed: use a non-empty str of at most {MAX_NAME_LEN} characters other than '__metadata__'",
        )
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError(code, f"array name {name!r} is not valid Unicode") from None
    return name


def layout(entries: list[ManifestEntry] | tuple[ManifestEntry, ...]) -> Layout:
    """The canonical layout of arrays described by (name, dtype, shape) entries (any order)."""
    return _layout(tuple((name, dtype, tuple(shape)) for name, dtype, shape in entries), json_name)


@lru_cache(maxsize=1024)
def _layout(entries: tuple[ManifestEntry, ...], json_name: Any) -> Layout:
    # A pure function of its arguments, so computed once per distinct manifest; the name
    # writer is part of the key, so that a different one is never served a stale layout.
    ordered = tuple(sorted(entries, key=_sort_key))
    if not ordered:
        return Layout((), b"", (), 0)
    parts = []
    offsets = []
    pos = 0
    for name, dtype, shape in ordered:
        nbytes = DTYPES[dtype][1].itemsize
        for dim in shape:
            nbytes *= dim
        offsets.append((pos, pos + nbytes))
        dims = ",".join(str(d) for d in shape)
        parts.append(f'{json_name(name)}:{{"dtype":"{DTYPES[dtype][0]}","shape":[{dims}],"data_offsets":[{pos},{pos + nbytes}]}}')
        pos += nbytes
    text = ("{" + ",".join(parts) + "}").encode("utf-8")
    text += b" " * (-len(text) % 8)  # safetensors pads the JSON with spaces to 8-byte alignment
    header = _U64LE.pack(len(text)) + text
    data_start = len(header)
    return Layout(
        ordered,
        header,
        tuple((data_start + a, data_start + b) for a, b in offsets),
        data_start + pos,
    )


def json_name(name: str) -> str:
    """A name as a JSON string the way safetensors writes it (PROTOCOL.md §4): `"` `\\` and
    U+0000-U+001F escaped (short forms where JSON has them, else \\u00xx in lower-case hex),
    everything else, DEL and non-ASCII included, as raw UTF-8."""
    return json.dumps(name, ensure_ascii=False)


def prepare_arrays(arrays: Mapping[str, Any], limits: Limits | None = None) -> tuple[Layout, list[memoryview]]:
    """Validate arrays for sending; return their layout and the body as a list of buffers."""
    if not isinstance(arrays, Mapping):
        raise ProtocolError(ErrorCode.MALFORMED_HEADER, f"arrays must be a mapping of name -> ndarray, got {type(arrays).__name__}")
    if limits is not None and len(arrays) > limits.max_arrays:
        raise ProtocolError(
            ErrorCode.OVERSIZED,
            f"{len(arrays)} arrays in one message; receivers accept at most Limits.max_arrays={limits.max_arrays}; send fewer per message",
        )
    entries: list[ManifestEntry] = []
    data: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        check_array_name(name)
        if type(value) is np.ndarray and value.ndim <= MAX_NDIM and value.flags.c_contiguous:
            # The common case: already a C-ordered array of a wire dtype (little-endian), sent as is.
            dtype_name = _WIRE_DTYPE_NAMES.get(value.dtype)
            if dtype_name is not None:
                entries.append((name, dtype_name, value.shape))
                data[name] = value
                continue
        arr = np.asarray(value)
        dtype_name = _dtype_name(arr.dtype)
        if dtype_name is None:
            raise ProtocolError(
                ErrorCode.DISALLOWED_DTYPE,
                f"array {name!r} has dtype {arr.dtype}; allowed: {', '.join(DTYPES)} (convert it, e.g. with arr.astype(np.float32))",
            )
        if arr.ndim > MAX_NDIM:
            raise ProtocolError(ErrorCode.MALFORMED_HEADER, f"array {name!r} has {arr.ndim} dimensions; at most {MAX_NDIM}")
        wire_dtype = DTYPES[dtype_name][1]
        # C order, little-endian: what safetensors stores; no copy when it already is.
        arr = np.asarray(arr, dtype=wire_dtype, order="C")  # keeps 0-d arrays 0-d
        entries.append((name, dtype_name, tuple(int(d) for d in arr.shape)))
        data[name] = arr
    lay = layout(entries)
    buffers = [memoryview(lay.header)] if lay.entries else []
    for name, _, _ in lay.entries:
        buffers.append(memoryview(data[name].reshape(-1).view(np.uint8)))
    return lay, buffers


_WIRE_DTYPE_NAMES = {wire: name for name, (_, wire) in DTYPES.items()}


@lru_cache(maxsize=64)
def _dtype_name(dtype: np.dtype) -> str | None:
    if dtype.kind == "b" and dtype.itemsize == 1:
        return "bool"
    for name, (_, wire) in DTYPES.items():
        if dtype.kind == wire.kind and dtype.itemsize == wire.itemsize and dtype.kind in "iuf":
            return name
    return None


def manifest_entries(manifest: Any, *, max_arrays: int) -> list[ManifestEntry]:
    """Structural check of a decoded manifest (list of [name, dtype, shape])."""
    if type(manifest) is not list:
        raise ProtocolError(ErrorCode.MALFORMED_HEADER, "manifest must be an array of [name, dtype, shape] entries")
    if len(manifest) > max_arrays:
        raise ProtocolError(
            ErrorCode.OVERSIZED,
            f"manifest lists {len(manifest)} arrays; this receiver accepts at most {max_arrays} "
            "(Limits.max_arrays); send fewer arrays per message",
        )
    entries: list[ManifestEntry] = []
    for i, item in enumerate(manifest):
        if type(item) is not list or len(item) != 3:
            raise ProtocolError(ErrorCode.MALFORMED_HEADER, f"manifest entry {i} must be [name, dtype, shape]")
        name, dtype, shape = item
        check_array_name(name)
        if type(dtype) is not str:
            raise ProtocolError(ErrorCode.MALFORMED_HEADER, f"manifest entry {i}: dtype must be text")
        if type(shape) is not list or len(shape) > MAX_NDIM or any(type(d) is not int or not 0 <= d <= U64_MAX for d in shape):
            raise ProtocolError(
                ErrorCode.MALFORMED_HEADER,
                f"manifest entry {i}: shape must be an array of at most {MAX_NDIM} unsigned ints",
            )
        entries.append((name, dtype, tuple(shape)))
    return entries


def check_body(entries: list[ManifestEntry] | tuple[ManifestEntry, ...], body: memoryview) -> Layout:
    """Check dtypes, then that the body is exactly the canonical layout of the manifest.

    Nothing is allocated from untrusted sizes: sizes come from the manifest and are compared
    with the actual body length before any array exists.
    """
    lay = _checked_entries(tuple(entries), layout, json_name)
    if lay.size != len(body):
        raise ProtocolError(
            ErrorCode.MANIFEST_MISMATCH,
            f"the manifest describes a {lay.size}-byte body but the body has {len(body)} bytes",
        )
    if lay.size and body[: len(lay.header)] != lay.header:
        raise ProtocolError(ErrorCode.MANIFEST_MISMATCH, _explain_header_mismatch(lay, body))
    return lay


@lru_cache(maxsize=1024)
def _checked_entries(entries: tuple[ManifestEntry, ...], layout_of: Any, json_name: Any) -> Layout:
    # What check_body checks of the manifest alone (a refusal raises, and is not cached); the
    # functions the layout comes from are part of the key, as the name writer is in _layout's.
    for name, dtype, _ in entries:
        if dtype not in DTYPES:
            raise ProtocolError(
                ErrorCode.DISALLOWED_DTYPE,
                f"array {name!r} has dtype {dtype!r}; allowed: {', '.join(DTYPES)}",
            )
    names = [e[0] for e in entries]
    if len(set(names)) != len(names):
        raise ProtocolError(ErrorCode.MANIFEST_MISMATCH, "the manifest names an array twice; names must be unique")
    lay = layout_of(entries)
    if lay.entries != entries:
        raise ProtocolError(
            ErrorCode.MANIFEST_MISMATCH,
            "manifest entries are not in body order (dtype rank, then name); list them in the order safetensors stores them",
        )
    return lay


# Canonical manifest CBOR -> its entries, for manifests that passed manifest_entries and
# check_body: a receiver seeing the same bytes again (every step of a training loop sends the
# same arrays) skips re-checking them. Bounded (at most 4096 manifests of at most 4 KiB, so
# 16 MiB whatever peers send); cleared whole when full.
_CHECKED_MANIFESTS: dict[bytes, tuple[ManifestEntry, ...]] = {}
_CHECKED_MANIFESTS_MAX = 4096
_CHECKED_MANIFEST_MAX_BYTES = 4096


def checked_manifest(manifest_cbor: bytes) -> tuple[ManifestEntry, ...] | None:
    """The entries of a manifest whose canonical CBOR is `manifest_cbor`, if it was checked before."""
    return _CHECKED_MANIFESTS.get(manifest_cbor)


def remember_checked_manifest(lay: Layout) -> None:
    """Record that `lay`'s manifest passed every check (call only after check_body accepted it)."""
    if len(lay.manifest_cbor) > _CHECKED_MANIFEST_MAX_BYTES:
        return
    if len(_CHECKED_MANIFESTS) >= _CHECKED_MANIFESTS_MAX:
        _CHECKED_MANIFESTS.clear()
    _CHECKED_MANIFESTS[lay.manifest_cbor] = lay.entries


def forget_checked_manifests() -> None:
    """Drop what `checked_manifest` remembers (for tests that change the rules it checked)."""
    _CHECKED_MANIFESTS.clear()
    _checked_entries.cache_clear()


def _explain_header_mismatch(lay: Layout, body: memoryview) -> str:
    # Only for the error message: say what differs if the body header is readable at all. The
    # claimed JSON length is untrusted: parse nothing much longer than the expected header.
    try:
        (n,) = _U64LE.unpack(body[:8])
        if n > 2 * len(lay.header) + 64:
            return f"the safetensors body claims a {n}-byte header; the manifest implies {len(lay.header) - 8}"
        found = json.loads(bytes(body[8 : 8 + min(n, len(body) - 8)]).decode("utf-8"))
        if "__metadata__" in found:
            return "the safetensors body carries __metadata__; v1 bodies have none (save without metadata)"
        for name, dtype, shape in lay.entries:
            got = found.get(name)
            if got is None:
                return f"the safetensors body has no tensor {name!r} listed in the manifest"
            if got.get("dtype") != DTYPES[dtype][0] or list(got.get("shape", [])) != list(shape):
                return f"tensor {name!r}: the body says {got.get('dtype')} {got.get('shape')} but the manifest says {dtype} {list(shape)}"
        extra = sorted(set(found) - {e[0] for e in lay.entries})
        if extra:
            return f"the safetensors body has tensors not in the manifest: {extra}"
    except Exception:
        return "the body is not a well-formed safetensors buffer for the manifest"
    return "the safetensors header of the body differs from the canonical header for the manifest"


def arrays_from_buffer(lay: Layout, buf: Any, base: int = 0, *, copy: bool) -> dict[str, np.ndarray]:
    """Arrays at the layout's offsets in `buf` (starting at byte `base`).

    copy=False returns views (only for a private, writable buffer such as a decrypted body);
    copy=True gives each array its own memory (the envelope bytes are read-only).
    """
    out: dict[str, np.ndarray] = {}
    for name, wire, count, start, shape in lay.views:
        arr = np.frombuffer(buf, dtype=wire, count=count, offset=base + start).reshape(shape)
        out[name] = arr.copy() if copy else arr
    return out
