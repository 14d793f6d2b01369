"""Mutants of the protocol implementation for tests/protocol/test_vector_mutations.py.

Each function patches (through a pytest MonkeyPatch) one rule of PROTOCOL.md in the codec or
the endpoint, never in protocol.conformance, which rebuilds the vectors' inputs by itself.
"""

from __future__ import annotations

from types import SimpleNamespace

import protocol.cbor as pcbor
import protocol.codec as codec
import protocol.secure as secure
import protocol.session as session
import protocol.tensors as tensors
from protocol import ErrorCode, Limits, ProtocolError
from protocol.endpoint import Endpoint
from protocol.session import ReplayWindow
from protocol.wire import AEAD_TAG_LEN


def fail(code: ErrorCode) -> None:
    raise ProtocolError(code, "mutant")


# --------------------------------------------------------------------------- patches


def set_attr(obj, name, value):
    return lambda mp: mp.setattr(obj, name, value)


def window_keeps_old_bits(mp):
    original = ReplayWindow.accept

    def accept(self, seq):
        if seq - self.top >= session.REPLAY_WINDOW:
            return ReplayWindow(seq, self.bits | 1)  # forgets to move the bitmap
        return original(self, seq)

    mp.setattr(ReplayWindow, "accept", accept)


def empty_final_chunk_allowed(mp):
    def open_body(frame, *, key, iv):  # §7.5 without the "last chunk is only a tag" check
        body, step = frame.body, secure.CHUNK_SIZE + AEAD_TAG_LEN
        n = max(1, -(-len(body) // step))
        plain = bytearray(len(body) - n * AEAD_TAG_LEN)
        aead = secure.ChaCha20Poly1305(key)
        for i in range(n):
            ct = bytes(body[i * step : (i + 1) * step])
            plain[i * secure.CHUNK_SIZE : i * secure.CHUNK_SIZE + len(ct) - AEAD_TAG_LEN] = aead.decrypt(
                secure.nonce(iv, frame.header["seq"], i), ct, bytes(frame.aad)
            )
        return plain

    mp.setattr(secure, "open_body", open_body)


def escape_names(transform):
    original = tensors.json_name
    return lambda mp: mp.setattr(tensors, "json_name", lambda name: transform(original(name)))


def names_in_bytes(mp):
    original, original_fast = codec._check_field, codec._known_header

    def check_field(key, kind, value):
        if kind == "name" and type(value) is str and len(value.encode("utf-8")) > 256:
            fail(ErrorCode.MALFORMED_HEADER)
        original(key, kind, value)

    def known_header(h):  # the fast check leaves such names to the strict path, which the mutant refuses
        if type(h) is dict and any(type(h.get(k)) is str and len(h[k].encode("utf-8")) > 256 for k in ("sender", "receiver")):
            fail(ErrorCode.MALFORMED_HEADER)
        return original_fast(h)

    mp.setattr(codec, "_check_field", check_field)
    mp.setattr(codec, "_known_header", known_header)


def name_limit(n):
    def patch(mp):
        mp.setattr(codec, "MAX_NAME_LEN", n)
        mp.setattr(tensors, "MAX_NAME_LEN", n)

    return patch


def payload_code_passed_through(mp):
    original = secure.parse_handshake

    def parse(frame, limits):
        try:
            return original(frame, limits)
        except ProtocolError as exc:
            for code in (ErrorCode.DUPLICATE_KEY, ErrorCode.MALFORMED_HEADER):
                if f": {code.value}: " in exc.detail:
                    fail(code)
            raise

    mp.setattr(secure, "parse_handshake", parse)


def payload_unbounded(mp):
    original = secure.parse_handshake
    mp.setattr(secure, "parse_handshake", lambda frame, limits: original(frame, Limits(max_header_bytes=2**32 - 1)))


def duplicates_first(mp):
    original = pcbor._Decoder.map

    def map_(self, count, level):
        out = original(self, count, level)
        if self.duplicate is not None:
            fail(ErrorCode.DUPLICATE_KEY)  # reported as soon as the map ends, before later bytes
        return out

    mp.setattr(pcbor._Decoder, "map", map_)


def canonical_before_duplicates(mp):
    def loads(data, *, what="header"):
        raw = bytes(data)
        decoder = pcbor._Decoder(raw, what)
        obj = decoder.item(0)
        if decoder.pos != len(raw) or pcbor.dumps(obj) != raw:
            fail(ErrorCode.MALFORMED_HEADER)
        if decoder.duplicate is not None:
            fail(ErrorCode.DUPLICATE_KEY)
        return obj

    mp.setattr(pcbor, "loads", loads)


def pending_responder_ignored(mp):
    def needs(self, state):
        pending_ours = state.pending is not None and state.pending.role == "initiator"
        return not pending_ours and (state.send is None or self._rekey_due(state))

    mp.setattr(Endpoint, "_needs_handshake", needs)


def charge_to(redirect: str):
    original = Endpoint._charge

    def charge(self, exc, charged_to, counts, key):
        if redirect == "sender" and counts is self._charged_links and exc.sender is not None:
            return original(self, exc, exc.sender, self._charged_senders, exc.sender)
        if redirect == "link" and counts is self._charged_senders:
            return original(self, exc, "link:", self._charged_links, "")
        return original(self, exc, charged_to, counts, key)

    return lambda mp: mp.setattr(Endpoint, "_charge", charge)


def frame_check_first(check):
    def patch(mp):
        original = codec.parse_frame

        def parse(data, limits=codec._DEFAULT_LIMITS):
            check(bytes(data), limits)
            return original(data, limits)

        mp.setattr(codec, "parse_frame", parse)
        mp.setattr("protocol.endpoint.parse_frame", parse)

    return patch


def size_first(data, limits):
    if len(data) > limits.max_envelope_bytes:
        fail(ErrorCode.OVERSIZED)


def flags_first(data, limits):
    if len(data) >= 6 and data[5] & ~1:
        fail(ErrorCode.MALFORMED_HEADER)


def header_check_first(check):
    def patch(mp):
        original = codec._check_header

        def check_header(header, flags, limits):
            if type(header) is dict:
                check(header)
            original(header, flags, limits)

        mp.setattr(codec, "_check_header", check_header)

    return patch


def suite_first(header):
    if type(header.get("suite")) is str and header["suite"] not in ("plaintext", "secure"):
        fail(ErrorCode.UNSUPPORTED_SUITE)


def version_field_unsupported(header):
    if header.get("version") != 1:
        fail(ErrorCode.UNSUPPORTED_VERSION)


def open_secure_first(step):
    def patch(mp):
        original = Endpoint._open_secure

        def open_secure(self, frame, state):
            h = frame.header
            matched = self._match_epoch(state, h["epoch"]) if state.recv is not None else None
            step(self, frame, state, matched)
            return original(self, frame, state)

        mp.setattr(Endpoint, "_open_secure", open_secure)

    return patch


def epoch_first(self, frame, state, matched):
    if state.recv is not None and matched is None:
        fail(ErrorCode.WRONG_EPOCH)


def window_first(self, frame, state, matched):
    if matched is not None:
        self._check_window(matched[0], frame.header["seq"], frame.header["sender"])


def inner_first(self, frame, state, matched):
    if matched is not None:
        secure.parse_inner(secure.open_body(frame, key=matched[0].key, iv=matched[0].iv), self.limits)


def registry_first(mp):
    original = Endpoint._process

    def process(self, frame):
        if self.registry is not None and frame.header["sender"] not in self.registry:
            fail(ErrorCode.UNKNOWN_PEER)
        return original(self, frame)

    mp.setattr(Endpoint, "_process", process)


def empty_body_is_save_of_nothing(mp):
    empty = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "  # what safetensors writes for no tensors
    original_layout, original_prepare = tensors.layout, tensors.prepare_arrays

    def layout(entries):
        return original_layout(entries) if entries else tensors.Layout((), empty, (), len(empty))

    def prepare(arrays, limits=None):
        lay, buffers = original_prepare(arrays, limits)
        return (lay, buffers) if lay.entries else (lay, [memoryview(empty)])

    mp.setattr(tensors, "layout", layout)
    for module in (codec, secure):
        mp.setattr(module, "prepare_arrays", prepare)


def length_from_ciphertext(mp):
    original = secure.check_body
    mp.setattr(secure, "check_body", lambda entries, body: original(entries, memoryview(bytes(body) + bytes(AEAD_TAG_LEN))))


def inner_limit_ignored(mp):
    original = secure.parse_inner
    mp.setattr(secure, "parse_inner", lambda plain, limits: original(plain, Limits(max_header_bytes=2**32 - 1)))


def inner_meta_defaulted(mp):
    def loads(data, *, what="header"):
        value = pcbor.loads(data, what=what)
        if what == "inner header" and type(value) is dict:
            value.setdefault("meta", {})
        return value

    mp.setattr(secure, "cbor", SimpleNamespace(**{**vars(pcbor), "loads": loads}))


def rekey_off_by_one(mp):
    mp.setattr(
        Endpoint,
        "_rekey_due",
        lambda self, state: self.rekey_every is not None and state.send is not None and state.send.seq > self.rekey_every,
    )


def impossible_lengths_malformed(mp):
    original = secure.open_body

    def open_body(frame, *, key, iv):
        body, step = len(frame.body), secure.CHUNK_SIZE + AEAD_TAG_LEN
        last = body - (max(1, -(-body // step)) - 1) * step
        if body < AEAD_TAG_LEN or last < AEAD_TAG_LEN:
            fail(ErrorCode.MALFORMED_HEADER)  # a plausible other code for a length that cannot be
        return original(frame, key=key, iv=iv)

    mp.setattr(secure, "open_body", open_body)


def rekey_without_session_does_nothing(mp):
    original = Endpoint.rekey

    def rekey(self, peer):
        state = self.state_snapshot().get(peer)
        if self.suite == "secure" and (state is None or state.send is None):
            return []
        return original(self, peer)

    mp.setattr(Endpoint, "rekey", rekey)
