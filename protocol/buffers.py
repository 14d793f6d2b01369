"""Scratch and output buffers for sealing large envelopes without extra copies.

A sealed envelope is one `bytes` object (what every runtime carries). Building it with
`b"".join` after encrypting costs a full copy of the body; instead the AEAD writes each
chunk's ciphertext straight into a new `bytes` object, as CPython's own C code fills a
`bytes` it has just created (`PyBytes_FromStringAndSize(NULL, n)`, then write, then share).
The object is written only before anyone else holds it; `fresh_bytes` checks at first use
that this interpreter lays `bytes` out as expected and otherwise falls back to a `bytearray`
and one copy (e.g. on another Python implementation). The plaintext of one chunk is gathered
from its pieces (safetensors header, arrays, inner header) into a per-thread scratch buffer
that is reused from one envelope to the next.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

_local = threading.local()
_factory: Callable[[int], tuple[bytes | bytearray, memoryview]] | None = None


def scratch(n: int) -> memoryview:
    """A writable view of at least `n` bytes, private to this thread, reused across calls
    (its contents are garbage; the next call may overwrite them)."""
    buf = getattr(_local, "buf", None)
    if buf is None or len(buf) < n:
        buf = _local.buf = bytearray(n)
    return memoryview(buf)[:n]


def fresh_bytes(n: int) -> tuple[bytes | bytearray, memoryview]:
    """(a new object of n bytes, a writable view of all of it). Fill the view completely,
    release it, then use `finish(obj)` as the envelope."""
    global _factory
    if _factory is None:
        _factory = _probe()
    return _factory(n)


def finish(obj: bytes | bytearray) -> bytes:
    """The filled object as `bytes` (a copy only on the fallback path)."""
    return obj if type(obj) is bytes else bytes(obj)


def _fallback(n: int) -> tuple[bytearray, memoryview]:
    buf = bytearray(n)
    return buf, memoryview(buf)


def _probe() -> Callable[[int], tuple[bytes | bytearray, memoryview]]:
    """The writable-`bytes` factory if this interpreter supports it (checked), else the fallback."""
    try:
        import ctypes
        import sys

        if sys.implementation.name != "cpython":
            return _fallback
        new = ctypes.pythonapi.PyBytes_FromStringAndSize
        new.restype, new.argtypes = ctypes.py_object, (ctypes.c_void_p, ctypes.c_ssize_t)
        offset = bytes.__basicsize__ - 1  # ob_sval follows the object header

        def make(n: int) -> tuple[bytes | bytearray, memoryview]:
            if n < 2:  # CPython shares the empty and one-byte objects: never write those
                return _fallback(n)
            obj = new(None, n)
            return obj, memoryview((ctypes.c_char * n).from_address(id(obj) + offset)).cast("B")

        obj, view = make(64)
        view[:] = bytes(range(64))
        view.release()
        if obj != bytes(range(64)) or hash(obj) != hash(bytes(range(64))):
            return _fallback
        return make
    except Exception:  # no ctypes, or an unexpected layout: copy once instead
        return _fallback
