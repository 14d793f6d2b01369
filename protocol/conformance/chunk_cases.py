"""endpoint_secure.json, last group: the 16 MiB AEAD chunks of §7.5 and impossible body lengths.

These envelopes are over 16 MiB, so the file records them by SHA-256 (forms.BIG) and builds
the arrays from a repeated pattern.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .constructions import CHUNK, canonical, inner_plaintext, manifest_of, safetensors_body
from .forms import value_to_json
from .writer import VectorFile, establish, secure_header

PATTERN = bytes(range(7, 256, 16))  # 16 bytes, repeated to fill the arrays


def _sized_message(inner_length: int) -> tuple[dict[str, Any], int]:
    """An artifact with one uint8 array whose §7.5 inner plaintext is exactly `inner_length` bytes."""
    n = inner_length - 64
    for _ in range(8):  # the size grows one byte per element except where n gains a digit
        arrays = {"x": np.zeros(n, dtype=np.uint8)}
        size = len(inner_plaintext(safetensors_body(arrays), manifest_of(arrays)))
        if size == inner_length:
            break
        n += inner_length - size
    else:
        raise AssertionError(f"no single uint8 array gives an inner plaintext of {inner_length} bytes")
    spec = {"dtype": "uint8", "shape": [n], "repeat": PATTERN.hex()}
    return {
        "type": "artifact",
        "sender": "source",
        "receiver": "target",
        "round": 0,
        "reply_to": None,
        "meta": {},
        "arrays": {"x": spec},
    }, n


def add_groups(vf: VectorFile) -> None:
    g = vf.conversation("secure", "§7.5 chunking: 16 MiB chunks, the multi-chunk path, impossible ciphertext lengths", seed="chunks/")
    establish(g, "source", "target")
    g.add("keys", "traffic keys of source towards target", party="source", peer="target")
    st = g.state("source", "target")
    one, _ = _sized_message(CHUNK)
    two, _ = _sized_message(CHUNK + 1)
    s1 = g.add("send", "inner plaintext of exactly 16 MiB: one chunk, body_length = 2^24 + 16", party="source", message=one)
    g.deliver(s1, "target", "target opens it")
    s2 = g.add("send", "inner plaintext of 16 MiB + 1: two chunks (2^24 and 1 bytes), body_length = 2^24 + 33", party="source", message=two)
    g.deliver(s2, "target", "target opens it")
    hdr = secure_header(type="artifact", sender="source", receiver="target", session_id=st.session_id, epoch=0, seq=st.send.seq + 3)

    def sealed(message: dict, chunk_lengths: list[int], body_length: int) -> dict[str, Any]:
        header = value_to_json(dict(hdr, body_length=body_length))
        return {
            "kind": "seal",
            "key": st.send.key.hex(),
            "iv": st.send.iv.hex(),
            "message": message,
            "header": header,
            "chunk_lengths": chunk_lengths,
        }

    g.reject(
        "target",
        "authentic 16 MiB inner sealed as a full chunk plus an empty one: a final chunk of only a tag is refused",
        "AUTH_FAILED",
        sealed(one, [CHUNK, 0], CHUNK + 32),
    )
    g.reject(
        "target",
        "authentic 16 MiB inner sealed as chunks of 2^24 - 1 and 1 bytes: chunk boundaries are fixed",
        "AUTH_FAILED",
        sealed(one, [CHUNK - 1, 1], CHUNK + 32),
    )

    def frame(body_length: int) -> dict[str, Any]:
        header = dict(hdr, body_length=body_length)
        return {"kind": "frame", "flags": 1, "header_cbor": canonical(header).hex(), "body_repeat": {"hex": "00", "length": body_length}}

    for length, why in [
        (0, "an empty body"),
        (15, "a body shorter than one tag"),
        (CHUNK + 16 + 5, "a last chunk of 5 bytes, shorter than a tag"),
    ]:
        g.reject("target", f"impossible ciphertext length {length}: {why}", "AUTH_FAILED", frame(length))
