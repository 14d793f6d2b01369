"""The secure suite's building blocks: AEAD sealing with chunking, handshake messages, keys.

Pure functions over bytes; `protocol.endpoint` holds the state and decides when to call them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cbor2
import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import buffers, cbor, tensors
from .codec import Frame, check_message, frame_prefix, make_header
from .errors import ErrorCode, ProtocolError
from .keys import Identity
from .message import Message
from .tensors import Layout, ManifestEntry, arrays_from_buffer, check_body, manifest_entries, prepare_arrays
from .wire import (
    AEAD_KEY_LEN,
    AEAD_NONCE_LEN,
    AEAD_TAG_LEN,
    CHUNK_SIZE,
    ED25519_SIG_LEN,
    FLAG_ENCRYPTED_BODY,
    HANDSHAKE_MAX_OFFERS,
    HANDSHAKE_PAYLOADS,
    INNER_TRAILER,
    LOW_ORDER_PROBE_KEY,
    MAX_CHUNKS,
    TRAFFIC_KEY_INFO,
    U64_MAX,
    X25519_KEY_LEN,
    Limits,
)

# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class TrafficKeys:
    """Per-direction keys and IVs of one epoch, from the initiator's point of view."""

    i2r_key: bytes
    r2i_key: bytes
    i2r_iv: bytes
    r2i_iv: bytes


def derive_traffic_keys(shared_secret: bytes, th2: bytes) -> TrafficKeys:
    """HKDF-SHA256(ikm = X25519 shared secret, salt = TH2, info = TRAFFIC_KEY_INFO), 88 bytes."""
    n = 2 * AEAD_KEY_LEN + 2 * AEAD_NONCE_LEN
    okm = HKDF(algorithm=hashes.SHA256(), length=n, salt=th2, info=TRAFFIC_KEY_INFO).derive(shared_secret)
    k = AEAD_KEY_LEN
    return TrafficKeys(okm[0:k], okm[k : 2 * k], okm[2 * k : 2 * k + 12], okm[2 * k + 12 : 2 * k + 24])


def nonce(iv: bytes, seq: int, chunk: int) -> bytes:
    """iv XOR (u64be(seq) || u32be(chunk)): unique per (direction key, seq, chunk)."""
    return (int.from_bytes(iv, "big") ^ (seq << 32 | chunk)).to_bytes(AEAD_NONCE_LEN, "big")


@lru_cache(maxsize=64)
def _aead(key: bytes) -> ChaCha20Poly1305:
    """The AEAD of one traffic key (its key schedule computed once, not per envelope)."""
    return ChaCha20Poly1305(key)


def x25519_shared(private: bytes, peer_public: bytes) -> bytes:
    try:
        return X25519PrivateKey.from_private_bytes(private).exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:  # all-zero output: the peer sent a low-order point
        raise ProtocolError(ErrorCode.HANDSHAKE_FAILED, f"the peer's ephemeral X25519 key is invalid or of low order ({exc})") from None


def check_peer_ephemeral(peer_public: bytes) -> None:
    """Reject low-order keys before any randomness is drawn (the zero result does not depend on our key)."""
    x25519_shared(LOW_ORDER_PROBE_KEY, peer_public)


def x25519_public(private: bytes) -> bytes:
    return (
        X25519PrivateKey.from_private_bytes(private).public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


def th_next(previous: bytes, envelope: bytes) -> bytes:
    return hashlib.sha256(previous + envelope).digest()


# --------------------------------------------------------------------------- application messages

# From this plaintext size on, seal writes ciphertext straight into the envelope (below it a
# join is as cheap and simpler).
DIRECT_SEAL_BYTES = 64 * 1024


def _chunks(segments: list[memoryview], total: int) -> Iterator[list[memoryview]]:
    """The pieces (views into `segments`) of each CHUNK_SIZE chunk of their concatenation."""
    seg_i, seg_off = 0, 0
    remaining = total
    while True:
        want = min(CHUNK_SIZE, remaining)
        pieces: list[memoryview] = []
        need = want
        while need:
            seg = segments[seg_i]
            take = min(need, len(seg) - seg_off)
            if take:
                pieces.append(seg[seg_off : seg_off + take])
            seg_off += take
            need -= take
            if seg_off == len(seg):
                seg_i, seg_off = seg_i + 1, 0
        yield pieces
        remaining -= want
        if remaining <= 0:
            return


def _gathered(pieces: list[memoryview]) -> memoryview | bytes:
    """One chunk's plaintext as one buffer: the piece itself, or the pieces copied into this
    thread's scratch buffer (large chunks) or joined (small ones)."""
    if len(pieces) == 1:
        return pieces[0]
    size = sum(len(p) for p in pieces)
    if size < DIRECT_SEAL_BYTES:
        return b"".join(pieces)
    out = buffers.scratch(size)
    pos = 0
    for piece in pieces:
        out[pos : pos + len(piece)] = piece
        pos += len(piece)
    return out


_INNER_KEYS = ("meta", "manifest")  # canonical order
_INNER_HEAD = b"\xa2" + cbor2.dumps("meta")  # a map of two pairs, then the first key
_MANIFEST_KEY = cbor2.dumps("manifest")


def sealed_body_length(plain_length: int) -> int:
    n = max(1, -(-plain_length // CHUNK_SIZE))
    return plain_length + n * AEAD_TAG_LEN


def prepare_inner(msg: Message, limits: Limits | None = None, *, checked: bool = False) -> tuple[list[memoryview], int, Layout]:
    """Validate `msg` and return the plaintext of its secure body as buffers (not yet joined).

    Inner plaintext = canonical safetensors body || CBOR {manifest, meta} || u32be(len(CBOR)).
    The arrays come first so that, once decrypted, they sit 8-byte aligned at offset 0. With
    `limits`, an inner header the receiver would refuse (OVERSIZED) is refused here.
    """
    if not checked:  # the caller ran check_message already
        check_message(msg)
    lay, arrays = prepare_arrays(msg.arrays, limits)
    # The canonical CBOR of {"meta": ..., "manifest": ...} (keys in canonical order), written
    # piece by piece so that the manifest's encoding is the layout's cached one.
    inner = _INNER_HEAD + cbor.encode_meta(msg.meta) + _MANIFEST_KEY + lay.manifest_cbor
    if limits is not None and len(inner) > limits.max_header_bytes:
        raise ProtocolError(
            ErrorCode.OVERSIZED,
            f"the inner header (manifest and meta) would be {len(inner)} bytes, over Limits.max_header_bytes={limits.max_header_bytes}",
        )
    trailer = inner + INNER_TRAILER.pack(len(inner))
    segments = [*arrays, memoryview(trailer)]
    return segments, lay.size + len(trailer), lay


def seal(msg: Message, *, session_id: bytes, epoch: int, seq: int, key: bytes, iv: bytes, prepared: Any = None) -> bytes:
    """A secure-suite envelope for `msg`: cleartext header, then the chunked AEAD body."""
    segments, plain_length, _ = prepared if prepared is not None else prepare_inner(msg)
    n_chunks = max(1, -(-plain_length // CHUNK_SIZE))
    if n_chunks > MAX_CHUNKS or seq > U64_MAX:
        raise ProtocolError(ErrorCode.OVERSIZED, "message too large for the AEAD chunk counter")
    header = make_header(
        suite="secure",
        type=msg.type,
        session_id=session_id,
        sender=msg.sender,
        receiver=msg.receiver,
        epoch=epoch,
        seq=seq,
        round=msg.round,
        reply_to=msg.reply_to,
        body_length=plain_length + n_chunks * AEAD_TAG_LEN,
    )
    return seal_frame(header, segments, plain_length, key=key, iv=iv)


def seal_frame(header: dict[str, Any], segments: list[memoryview], plain_length: int, *, key: bytes, iv: bytes) -> bytes:
    """Frame `header` and encrypt the plaintext (given as buffers) in CHUNK_SIZE chunks.

    Small bodies: encrypt, then join with the prefix. From DIRECT_SEAL_BYTES on, each chunk's
    ciphertext is written straight into the envelope (protocol.buffers): the plaintext is read
    in place when a chunk lies in one buffer, else gathered once into a scratch buffer.
    """
    prefix = frame_prefix(header, FLAG_ENCRYPTED_BODY)
    aead = _aead(key)
    seq = header["seq"]
    if plain_length < DIRECT_SEAL_BYTES and plain_length <= CHUNK_SIZE:  # one small chunk
        plain = segments[0] if len(segments) == 1 else b"".join(segments)
        return prefix + aead.encrypt(nonce(iv, seq, 0), plain, prefix)
    chunks = _chunks(segments, plain_length)
    n_chunks = max(1, -(-plain_length // CHUNK_SIZE))
    envelope, out = buffers.fresh_bytes(len(prefix) + plain_length + n_chunks * AEAD_TAG_LEN)
    with out:
        out[: len(prefix)] = prefix
        pos = len(prefix)
        for i, pieces in enumerate(chunks):
            plain = _gathered(pieces)
            end = pos + len(plain) + AEAD_TAG_LEN
            aead.encrypt_into(nonce(iv, seq, i), plain, prefix, out[pos:end])
            pos = end
    return buffers.finish(envelope)


def open_body(frame: Frame, *, key: bytes, iv: bytes) -> bytearray | np.ndarray:
    """Decrypt and authenticate every chunk (every header byte is associated data)."""
    body = frame.body
    total = len(body)
    step = CHUNK_SIZE + AEAD_TAG_LEN
    n_chunks = max(1, -(-total // step))
    last = total - (n_chunks - 1) * step
    if total < AEAD_TAG_LEN or last < AEAD_TAG_LEN or (n_chunks > 1 and last == AEAD_TAG_LEN):
        raise ProtocolError(ErrorCode.AUTH_FAILED, f"a {total}-byte body cannot be a sealed body (chunks of {CHUNK_SIZE} + 16-byte tags)")
    size = total - n_chunks * AEAD_TAG_LEN
    # Every byte is written by a successful decryption (a failure discards the buffer): a large
    # one is not zeroed first.
    plain = bytearray(size) if size < DIRECT_SEAL_BYTES else np.empty(size, dtype=np.uint8)
    out = memoryview(plain)
    aad = frame.aad
    seq = frame.header["seq"]
    aead = _aead(key)
    try:
        for i in range(n_chunks):
            ct = body[i * step : min(total, (i + 1) * step)]
            aead.decrypt_into(nonce(iv, seq, i), ct, aad, out[i * CHUNK_SIZE : i * CHUNK_SIZE + len(ct) - AEAD_TAG_LEN])
    except InvalidTag:
        raise ProtocolError(
            ErrorCode.AUTH_FAILED,
            "AEAD tag check failed: the envelope was altered in transit or sealed with other keys",
        ) from None
    return plain


def parse_inner(plain: bytearray | np.ndarray, limits: Limits) -> tuple[Layout, dict, dict]:
    """Manifest and dtype checks of a decrypted body; returns layout, arrays (views), meta."""
    n = len(plain)
    view = memoryview(plain)
    if n < INNER_TRAILER.size:
        raise ProtocolError(ErrorCode.MALFORMED_HEADER, "decrypted body is shorter than its 4-byte trailer")
    (inner_len,) = INNER_TRAILER.unpack_from(view, n - INNER_TRAILER.size)
    if inner_len > limits.max_header_bytes:
        raise ProtocolError(
            ErrorCode.OVERSIZED,
            f"inner header of {inner_len} bytes exceeds Limits.max_header_bytes={limits.max_header_bytes}",
        )
    start = n - INNER_TRAILER.size - inner_len
    if start < 0:
        raise ProtocolError(ErrorCode.MALFORMED_HEADER, "inner header length points before the start of the body")
    raw = view[start : n - INNER_TRAILER.size]
    fast = _inner_fast(raw, limits.max_arrays)
    if fast is not None:
        meta, entries, known = fast
        lay = check_body(entries, view[:start])
        if not known:
            tensors.remember_checked_manifest(lay)
        return lay, arrays_from_buffer(lay, plain, 0, copy=False), meta
    inner = cbor.loads(raw, what="inner header")
    if type(inner) is not dict or set(inner) != {"manifest", "meta"} or type(inner["meta"]) is not dict:
        raise ProtocolError(ErrorCode.MALFORMED_HEADER, "inner header must be a map with exactly 'manifest' and 'meta' (a map)")
    lay = check_body(manifest_entries(inner["manifest"], max_arrays=limits.max_arrays), view[:start])
    return lay, arrays_from_buffer(lay, plain, 0, copy=False), inner["meta"]


def _inner_fast(raw: memoryview, max_arrays: int) -> tuple[dict, tuple[ManifestEntry, ...], bool] | None:
    """(meta, manifest entries, whether the manifest was checked before) when `raw` is the
    canonical encoding of an inner header whose manifest passes `manifest_entries`; else None,
    and the strict decoder decides, in the order of §3.1 and §9.

    cbor2's C decoder reads the item; `raw` must then be, byte for byte, the map head and the
    "meta" key, the canonical encoding of the decoded meta (a data-model map: the generic
    walk), the "manifest" key and the canonical encoding of the decoded manifest. CBOR items
    are self-delimiting, so this also proves nothing follows the map. A manifest seen before
    is recognised by its bytes (`tensors.checked_manifest`) instead of being walked again.
    """
    try:
        value = cbor2.loads(raw)
    except Exception:  # any decoding problem: the strict decoder names it
        return None
    if type(value) is not dict or tuple(value) != _INNER_KEYS or type(value["meta"]) is not dict:
        return None
    meta = value["meta"]
    try:
        encoded_meta = cbor.encode_checked(meta, cbor.holds_float(meta, 1))
    except Exception:  # SlowPath: outside the data model, or an item cbor2 cannot encode
        return None
    head = len(_INNER_HEAD)
    middle = head + len(encoded_meta)
    tail = middle + len(_MANIFEST_KEY)
    if raw[:head] != _INNER_HEAD or raw[head:middle] != encoded_meta or raw[middle:tail] != _MANIFEST_KEY:
        return None
    manifest_cbor = bytes(raw[tail:])
    entries = tensors.checked_manifest(manifest_cbor)
    if entries is not None:
        return (meta, entries, True) if len(entries) <= max_arrays else None
    try:
        checked = manifest_entries(value["manifest"], max_arrays=max_arrays)
    except ProtocolError:
        return None
    # Text, lists and ints in range only: the plain encoder writes their canonical form.
    if cbor2.dumps(value["manifest"]) != manifest_cbor:
        return None
    return meta, tuple(checked), False


# --------------------------------------------------------------------------- handshake


def build_handshake(
    type: str,
    *,
    session_id: bytes,
    sender: str,
    receiver: str,
    epoch: int,
    payload: dict[str, Any],
    signer: Identity | None = None,
    context: bytes = b"",
    transcript: bytes = b"",
) -> bytes:
    """A handshake envelope: cleartext header, CBOR payload, then (if signed) a signature over
    context || transcript hash || every byte before the signature."""
    raw = cbor.dumps(payload)
    signed = HANDSHAKE_PAYLOADS[type][1]
    header = make_header(
        suite="secure",
        type=type,
        session_id=session_id,
        sender=sender,
        receiver=receiver,
        epoch=epoch,
        seq=0,
        round=0,
        reply_to=None,
        body_length=len(raw) + (ED25519_SIG_LEN if signed else 0),
    )
    unsigned = frame_prefix(header, 0) + raw
    if not signed:
        return unsigned
    if signer is None:  # pragma: no cover - endpoint always passes its identity
        raise ValueError(f"{type} must be signed")
    return unsigned + signer.sign(context + transcript + unsigned)


def parse_handshake(frame: Frame, limits: Limits) -> tuple[dict[str, Any], bytes, bytes]:
    """(payload, signed bytes without the signature, signature) of a handshake frame.

    Order (PROTOCOL.md §9 step 16): header fields, room for the signature (HANDSHAKE_FAILED),
    payload size (OVERSIZED), then payload CBOR and schema: every CBOR error, DUPLICATE_KEY
    included, is HANDSHAKE_FAILED here.
    """
    h = frame.header
    mtype = h["type"]
    if h["seq"] != 0 or h["round"] != 0 or h["reply_to"] is not None:
        raise ProtocolError(ErrorCode.HANDSHAKE_FAILED, f"{mtype}: seq and round must be 0 and reply_to null")
    fields, signed = HANDSHAKE_PAYLOADS[mtype]
    body = frame.body
    sig_len = ED25519_SIG_LEN if signed else 0
    if len(body) < sig_len:
        raise ProtocolError(ErrorCode.HANDSHAKE_FAILED, f"{mtype}: body too short to hold a signature")
    if len(body) - sig_len > limits.max_header_bytes:  # decoded like a header, so bounded like one
        raise ProtocolError(
            ErrorCode.OVERSIZED,
            f"{mtype}: payload of {len(body) - sig_len} bytes exceeds Limits.max_header_bytes={limits.max_header_bytes}",
        )
    sig = bytes(body[len(body) - sig_len :])
    try:
        payload = cbor.loads(body[: len(body) - sig_len], what=f"{mtype} payload")
    except ProtocolError as exc:
        raise ProtocolError(ErrorCode.HANDSHAKE_FAILED, f"{mtype}: {exc.code.value}: {exc.detail}") from None
    if type(payload) is not dict or set(payload) != {name for name, _ in fields}:
        raise ProtocolError(ErrorCode.HANDSHAKE_FAILED, f"{mtype}: payload must be a map with exactly {sorted(n for n, _ in fields)}")
    for name, kind in fields:
        value = payload[name]
        if kind == "bstr32":
            ok = type(value) is bytes and len(value) == X25519_KEY_LEN
        elif kind == "tstr":
            ok = type(value) is str
        elif kind == "uint8":
            ok = type(value) is int and 0 <= value <= 255
        elif kind == "tstr[]":
            ok = type(value) is list and 0 < len(value) <= HANDSHAKE_MAX_OFFERS and all(type(v) is str for v in value)
        elif kind == "uint8[]":
            ok = type(value) is list and 0 < len(value) <= HANDSHAKE_MAX_OFFERS and all(type(v) is int and 0 <= v <= 255 for v in value)
        else:  # pragma: no cover
            raise AssertionError(kind)
        if not ok:
            raise ProtocolError(ErrorCode.HANDSHAKE_FAILED, f"{mtype}: payload field {name!r} must be {kind}")
    signed_part = bytes(frame.data[: len(frame.data) - len(sig)])
    return payload, signed_part, sig


def verify_signature(public: bytes, signature: bytes, data: bytes, what: str) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, data)
    except InvalidSignature:
        raise ProtocolError(
            ErrorCode.HANDSHAKE_FAILED,
            f"{what}: signature does not verify against the pinned key (wrong identity, altered "
            "message, or a transcript that differs from what we sent)",
        ) from None
