"""Envelope framing, header schema, and the stateless plaintext codec (encode/decode/peek)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cbor2

from . import cbor
from .errors import ErrorCode, ProtocolError
from .message import Message
from .tensors import Layout, ManifestEntry, arrays_from_buffer, check_body, manifest_entries, prepare_arrays
from .wire import (
    APPLICATION_TYPES,
    FLAG_ENCRYPTED_BODY,
    HANDSHAKE_TYPES,
    HEADER_FIELDS,
    KNOWN_FLAGS,
    MAGIC,
    MAX_NAME_LEN,
    MESSAGE_TYPES,
    PLAINTEXT_FIELDS,
    PREFIX,
    PREFIX_LEN,
    SECURE_FIELDS,
    SESSION_ID_LEN,
    SUITES,
    U32_MAX,
    U64_MAX,
    WIRE_VERSION,
    Limits,
)

_FIELD_TYPES = dict(HEADER_FIELDS)
_DEFAULT_LIMITS = Limits()
_SORTED_FIELDS = {"plaintext": tuple(sorted(PLAINTEXT_FIELDS)), "secure": tuple(sorted(SECURE_FIELDS))}
_PLAINTEXT_ORDER = tuple(cbor.canonical_order(dict.fromkeys(PLAINTEXT_FIELDS)))
_SECURE_ORDER = tuple(cbor.canonical_order(dict.fromkeys(SECURE_FIELDS)))


@dataclass(frozen=True)
class Frame:
    """A structurally valid envelope: cleartext header parsed, body located (not interpreted)."""

    data: memoryview  # the whole envelope
    flags: int
    header: dict[str, Any]
    body_offset: int  # = PREFIX_LEN + header length; bytes before it are the AEAD associated data

    @property
    def body(self) -> memoryview:
        return self.data[self.body_offset :]

    @property
    def aad(self) -> memoryview:
        return self.data[: self.body_offset]

    @property
    def sender(self) -> str:
        return self.header["sender"]


def _as_view(data: bytes | bytearray | memoryview) -> memoryview:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(ErrorCode.MALFORMED_HEADER, f"an envelope is bytes, got {type(data).__name__}")
    view = memoryview(data)
    if not view.c_contiguous:  # casting would fail; copying could double an oversized input
        raise ProtocolError(ErrorCode.MALFORMED_HEADER, "an envelope must be a contiguous buffer; pass bytes")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def parse_frame(data: bytes | bytearray | memoryview, limits: Limits = _DEFAULT_LIMITS) -> Frame:
    """Check framing and the cleartext header (PROTOCOL.md §9, steps 1-11)."""
    view = _as_view(data)
    n = len(view)
    k = min(n, len(MAGIC))
    if view[:k] != MAGIC[:k]:
        raise ProtocolError(ErrorCode.BAD_MAGIC, f"envelope does not start with {MAGIC!r}; this is not a cdrsim v1 envelope")
    if n < PREFIX_LEN:
        raise ProtocolError(ErrorCode.TRUNCATED, f"envelope has {n} bytes, shorter than the {PREFIX_LEN}-byte prefix")
    _, version, flags, header_len = PREFIX.unpack_from(view, 0)
    if version != WIRE_VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"wire version {version} is not supported (this implementation speaks {WIRE_VERSION}); "
            "upgrade the receiver or have the sender use version 1",
        )
    if n > limits.max_envelope_bytes:
        raise ProtocolError(
            ErrorCode.OVERSIZED,
            f"envelope of {n} bytes exceeds Limits.max_envelope_bytes={limits.max_envelope_bytes}; "
            "split the payload into smaller messages or raise the limit",
        )
    if flags & ~KNOWN_FLAGS:
        raise ProtocolError(ErrorCode.MALFORMED_HEADER, f"unknown flag bits 0x{flags & ~KNOWN_FLAGS:02x} are set; v1 defines only 0x01")
    if header_len > limits.max_header_bytes:
        raise ProtocolError(
            ErrorCode.OVERSIZED,
            f"header of {header_len} bytes exceeds Limits.max_header_bytes={limits.max_header_bytes}; move bulky meta into arrays",
        )
    body_offset = PREFIX_LEN + header_len
    if n < body_offset:
        raise ProtocolError(ErrorCode.TRUNCATED, f"envelope ends inside the header ({n} bytes, header needs {body_offset})")
    raw = view[PREFIX_LEN:body_offset]
    header = cbor.decode_fast(raw, _known_header)
    if header is cbor.SLOW or bool(flags & FLAG_ENCRYPTED_BODY) != (header["suite"] == "secure" and header["type"] in APPLICATION_TYPES):
        header = cbor.loads(raw, what="header")
        _check_header(header, flags, limits)
    elif header["suite"] == "plaintext":  # the last of _check_header's checks, which needs the limits
        manifest_entries(header["manifest"], max_arrays=limits.max_arrays)
    total = body_offset + header["body_length"]
    if total > limits.max_envelope_bytes:
        raise ProtocolError(
            ErrorCode.OVERSIZED,
            f"header announces a {header['body_length']}-byte body; the envelope would exceed "
            f"Limits.max_envelope_bytes={limits.max_envelope_bytes}",
        )
    if n < total:
        raise ProtocolError(ErrorCode.TRUNCATED, f"envelope has {n} bytes but its header announces {total}; the body was cut short")
    if n > total:
        raise ProtocolError(
            ErrorCode.MALFORMED_HEADER,
            f"envelope has {n - total} bytes after the body announced by body_length; remove them",
        )
    frame = object.__new__(Frame)  # the dataclass's __init__, without its per-field setattr calls
    frame.__dict__.update(data=view, flags=flags, header=header, body_offset=body_offset)
    return frame


def _check_header(header: Any, flags: int, limits: Limits) -> None:
    if type(header) is not dict:
        raise ProtocolError(ErrorCode.MALFORMED_HEADER, "the header must be a CBOR map")
    version = header.get("version")
    if type(version) is not int or version != WIRE_VERSION:
        raise ProtocolError(
            ErrorCode.MALFORMED_HEADER, f"header field 'version' is {version!r}; it must repeat the wire version {WIRE_VERSION}"
        )
    suite = header.get("suite")
    if type(suite) is not str:
        raise ProtocolError(ErrorCode.MALFORMED_HEADER, "header field 'suite' is missing or not text")
    if suite not in SUITES:
        raise ProtocolError(ErrorCode.UNSUPPORTED_SUITE, f"suite {suite[:64]!r} is not supported; v1 suites: {', '.join(SUITES)}")
    mtype = header.get("type")
    if type(mtype) is not str:
        raise ProtocolError(ErrorCode.MALFORMED_HEADER, "header field 'type' is missing or not text")
    if mtype not in MESSAGE_TYPES:
        raise ProtocolError(
            ErrorCode.UNKNOWN_MESSAGE_TYPE,
            f"message type {mtype[:64]!r} is unknown; v1 types: {', '.join(sorted(MESSAGE_TYPES))}",
        )
    expected = PLAINTEXT_FIELDS if suite == "plaintext" else SECURE_FIELDS
    if header.keys() != expected:
        keys = set(header)
        missing, extra = sorted(expected - keys), sorted(keys - expected)
        raise ProtocolError(
            ErrorCode.MALFORMED_HEADER,
            f"{suite} header fields wrong: missing {missing}, unexpected {[k[:64] for k in extra]}",
        )
    for key in _SORTED_FIELDS[suite]:
        _check_field(key, _FIELD_TYPES[key], header[key])
    if mtype in HANDSHAKE_TYPES and suite != "secure":
        raise ProtocolError(ErrorCode.MALFORMED_HEADER, f"{mtype} exists only in the secure suite")
    encrypted = suite == "secure" and mtype in APPLICATION_TYPES
    if bool(flags & FLAG_ENCRYPTED_BODY) != encrypted:
        raise ProtocolError(
            ErrorCode.MALFORMED_HEADER,
            f"flag 0x01 (encrypted body) must be {'set' if encrypted else 'clear'} for a {suite} {mtype} message",
        )
    if suite == "plaintext":
        manifest_entries(header["manifest"], max_arrays=limits.max_arrays)


def _known_header(h: Any) -> bool:
    """`cbor.decode_fast`'s check for the two header shapes v1 defines: raises SlowPath unless
    `h` is a secure or plaintext header with its fields in canonical order whose fields
    `_check_header` accepts (the flag bit and the manifest's entries aside, which `parse_frame`
    checks next). A secure header holds only text, bytes, ints in range and null: no float.
    A plaintext header's manifest and meta get the generic data-model walk, which says whether
    they hold a float. Anything else goes to the strict decoder and `_check_header`, which name
    the problem."""
    if type(h) is not dict:
        raise cbor.SlowPath
    keys = tuple(h)
    if keys == _SECURE_ORDER:
        suite = "secure"
    elif keys == _PLAINTEXT_ORDER:
        suite = "plaintext"
    else:
        raise cbor.SlowPath
    version, mtype, sid, sender, receiver = h["version"], h["type"], h["session_id"], h["sender"], h["receiver"]
    epoch, seq, rnd, reply_to, body_length = h["epoch"], h["seq"], h["round"], h["reply_to"], h["body_length"]
    if not (
        type(version) is int
        and version == WIRE_VERSION
        and h["suite"] == suite
        and type(mtype) is str
        and mtype in MESSAGE_TYPES
        and type(sid) is bytes
        and len(sid) == SESSION_ID_LEN
        and type(sender) is str
        and 0 < len(sender) <= MAX_NAME_LEN
        and type(receiver) is str
        and 0 < len(receiver) <= MAX_NAME_LEN
        and type(epoch) is int
        and 0 <= epoch <= U32_MAX
        and type(seq) is int
        and 0 <= seq <= U64_MAX
        and type(rnd) is int
        and 0 <= rnd <= U64_MAX
        and type(body_length) is int
        and 0 <= body_length <= U64_MAX
        and (reply_to is None or (type(reply_to) is int and 0 <= reply_to <= U64_MAX))
    ):
        raise cbor.SlowPath
    if suite == "secure":
        return False
    manifest, meta = h["manifest"], h["meta"]
    if mtype in HANDSHAKE_TYPES or type(manifest) is not list or type(meta) is not dict:
        raise cbor.SlowPath
    manifest_float = cbor.holds_float(manifest, 1)  # both walked: each must lie in the data model
    return cbor.holds_float(meta, 1) or manifest_float


def _check_field(key: str, kind: str, value: Any) -> None:
    if not _FIELD_CHECKS[kind](value):
        shown = repr(value)
        raise ProtocolError(
            ErrorCode.MALFORMED_HEADER,
            f"header field {key!r} must be {kind}, got {shown[:80]}",
        )


_FIELD_CHECKS = {  # limits are read when called (they are module-level names)
    "uint8": lambda v: type(v) is int and 0 <= v <= 255,
    "uint32": lambda v: type(v) is int and 0 <= v <= U32_MAX,
    "uint64": lambda v: type(v) is int and 0 <= v <= U64_MAX,
    "uint64?": lambda v: v is None or (type(v) is int and 0 <= v <= U64_MAX),
    "tstr": lambda v: type(v) is str,
    "name": lambda v: type(v) is str and 1 <= len(v) <= MAX_NAME_LEN,
    "bstr16": lambda v: type(v) is bytes and len(v) == SESSION_ID_LEN,
    "manifest": lambda v: type(v) is list,  # entries are checked by manifest_entries
    "meta": lambda v: type(v) is dict,  # values were checked by the strict CBOR decoder
}


# --------------------------------------------------------------------------- encoding


def check_message(msg: Message) -> None:
    """Caller-side validation of the fields a sender fills in."""
    if not isinstance(msg, Message):
        raise TypeError(f"expected a protocol.Message, got {type(msg).__name__}")
    if msg.type not in APPLICATION_TYPES:
        if msg.type in HANDSHAKE_TYPES:
            raise ProtocolError(ErrorCode.UNKNOWN_MESSAGE_TYPE, f"{msg.type!r} is a handshake type; only an Endpoint produces those")
        raise ProtocolError(
            ErrorCode.UNKNOWN_MESSAGE_TYPE,
            f"message type {msg.type!r} is unknown; use one of {', '.join(sorted(APPLICATION_TYPES))}",
        )
    for role in ("sender", "receiver"):
        name = getattr(msg, role)
        if type(name) is not str or not 1 <= len(name) <= MAX_NAME_LEN:
            raise ProtocolError(ErrorCode.MALFORMED_HEADER, f"{role} must be a str of 1..{MAX_NAME_LEN} characters, got {name!r}")
    if type(msg.round) is not int or not 0 <= msg.round <= U64_MAX:
        raise ProtocolError(ErrorCode.MALFORMED_HEADER, f"round must be an int in 0..2^64-1, got {msg.round!r}")
    if msg.reply_to is not None and (type(msg.reply_to) is not int or not 0 <= msg.reply_to <= U64_MAX):
        raise ProtocolError(ErrorCode.MALFORMED_HEADER, f"reply_to must be None or an int in 0..2^64-1, got {msg.reply_to!r}")


def make_header(
    *,
    suite: str,
    type: str,
    session_id: bytes,
    sender: str,
    receiver: str,
    epoch: int,
    seq: int,
    round: int,
    reply_to: int | None,
    body_length: int,
    manifest: list | None = None,
    meta: dict | None = None,
) -> dict[str, Any]:
    if suite == "secure":  # every envelope of a session: written in canonical key order at once
        header = {
            "seq": seq,
            "type": type,
            "epoch": epoch,
            "round": round,
            "suite": suite,
            "sender": sender,
            "version": WIRE_VERSION,
            "receiver": receiver,
            "reply_to": reply_to,
            "session_id": bytes(session_id),
            "body_length": body_length,
        }
        return header  # the order is _SECURE_ORDER (a test checks it): frame_prefix relies on it
    fields: dict[str, Any] = {
        "version": WIRE_VERSION,
        "suite": suite,
        "type": type,
        "session_id": bytes(session_id),
        "sender": sender,
        "receiver": receiver,
        "epoch": epoch,
        "seq": seq,
        "round": round,
        "reply_to": reply_to,
        "body_length": body_length,
        "manifest": manifest if manifest is not None else [],
        "meta": meta if meta is not None else {},
    }
    return {key: fields[key] for key in _PLAINTEXT_ORDER}


def frame_prefix(header: dict[str, Any], flags: int) -> bytes:
    """magic | version | flags | header length | canonical CBOR header."""
    # A secure header (make_header's) holds only text, bytes, ints in range and null, in
    # canonical key order: the plain encoder writes its canonical bytes without a check walk.
    raw = cbor2.dumps(header) if header["suite"] == "secure" else cbor.dumps(header)
    if len(raw) > U32_MAX:
        raise ProtocolError(ErrorCode.OVERSIZED, "header longer than 2^32-1 bytes")
    return PREFIX.pack(MAGIC, WIRE_VERSION, flags, len(raw)) + raw


def session_id_of(msg: Message) -> bytes:
    sid = bytes(msg.session_id)
    if sid == b"":
        return bytes(SESSION_ID_LEN)  # a message not yet bound to a session encodes as zeros
    if len(sid) != SESSION_ID_LEN:
        raise ProtocolError(ErrorCode.MALFORMED_HEADER, f"session_id must be {SESSION_ID_LEN} bytes (or empty), got {len(sid)}")
    return sid


def encode(msg: Message, *, limits: Limits | None = None) -> bytes:
    """The canonical plaintext envelope of `msg` (deterministic bytes).

    Always produces a plaintext-suite envelope, whatever `msg.suite` says; an empty
    `session_id` is written as 16 zero bytes. With `limits`, an envelope a receiver with
    those limits would refuse as OVERSIZED is refused here (PROTOCOL.md §10).
    """
    check_message(msg)
    for name, limit in (("epoch", U32_MAX), ("seq", U64_MAX)):
        value = getattr(msg, name)
        if type(value) is not int or not 0 <= value <= limit:
            raise ProtocolError(ErrorCode.MALFORMED_HEADER, f"{name} must be an int in 0..{limit}, got {value!r}")
    lay, buffers = prepare_arrays(msg.arrays, limits)
    header = make_header(
        suite="plaintext",
        type=msg.type,
        session_id=session_id_of(msg),
        sender=msg.sender,
        receiver=msg.receiver,
        epoch=msg.epoch,
        seq=msg.seq,
        round=msg.round,
        reply_to=msg.reply_to,
        body_length=lay.size,
        manifest=lay.manifest(),
        meta=cbor.normalize_meta(msg.meta),
    )
    prefix = frame_prefix(header, 0)
    if limits is not None:
        check_sizes(len(prefix) - PREFIX_LEN, len(prefix) + lay.size, limits)
    # One copy: numpy buffers go straight into the joined bytes.
    return b"".join([prefix, *buffers])


def check_sizes(header_length: int, envelope_length: int, limits: Limits) -> None:
    """Sender side of the OVERSIZED checks of §9 steps 4, 6 and 10."""
    if header_length > limits.max_header_bytes:
        raise ProtocolError(
            ErrorCode.OVERSIZED,
            f"the header would be {header_length} bytes, over Limits.max_header_bytes={limits.max_header_bytes}; move bulky meta into arrays",
        )
    if envelope_length > limits.max_envelope_bytes:
        raise ProtocolError(
            ErrorCode.OVERSIZED,
            f"the envelope would be {envelope_length} bytes, over Limits.max_envelope_bytes={limits.max_envelope_bytes}; split it into smaller messages",
        )


def message_from_frame(frame: Frame, lay: Layout, arrays: dict, meta: dict, suite: str) -> Message:
    h = frame.header
    # Every field comes from a checked header: fill them without running the dataclass's
    # __init__ (it validates nothing; per envelope it is part of the hot path).
    msg = object.__new__(Message)
    msg.__dict__.update(
        type=h["type"],
        sender=h["sender"],
        receiver=h["receiver"],
        arrays=arrays,
        meta=meta,
        round=h["round"],
        reply_to=h["reply_to"],
        session_id=h["session_id"],
        epoch=h["epoch"],
        seq=h["seq"],
        suite=suite,
    )
    return msg


def plaintext_body(frame: Frame, limits: Limits) -> tuple[Layout, dict]:
    """Manifest and dtype checks of a plaintext frame, then the arrays (copied out)."""
    entries: list[ManifestEntry] = manifest_entries(frame.header["manifest"], max_arrays=limits.max_arrays)
    lay = check_body(entries, frame.body)
    return lay, arrays_from_buffer(lay, frame.data, frame.body_offset, copy=True)


def decode(data: bytes | bytearray | memoryview, *, limits: Limits = _DEFAULT_LIMITS) -> Message:
    """Parse and validate a plaintext envelope (stateless). Secure envelopes raise ENCRYPTED."""
    return decode_frame(parse_frame(data, limits), limits)


def decode_frame(frame: Frame, limits: Limits = _DEFAULT_LIMITS) -> Message:
    """`decode` of an envelope already parsed by `parse_frame` (with the same limits): one
    parse for a reader that wants both the cleartext header and the message."""
    if frame.header["suite"] != "plaintext":
        raise ProtocolError(
            ErrorCode.ENCRYPTED,
            f"this is a {frame.header['suite']}-suite {frame.header['type']} envelope; only an Endpoint "
            "holding the session keys can open it (use peek_header for its cleartext fields)",
            sender=frame.sender,
        )
    lay, arrays = plaintext_body(frame, limits)
    return message_from_frame(frame, lay, arrays, frame.header["meta"], "plaintext")


def peek_header(data: bytes | bytearray | memoryview, *, limits: Limits = _DEFAULT_LIMITS) -> dict[str, Any]:
    """The cleartext header of any envelope: what a wire eavesdropper always sees.

    Runs the framing and header checks of §9 steps 1-11 (the same errors as `decode`) and
    nothing else: no body check, no decryption, any suite.
    """
    return dict(parse_frame(data, limits).header)
