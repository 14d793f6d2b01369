"""The conformance suite of wire protocol v1: golden vectors, their generator and their replayer.

    python -m protocol.conformance            # rewrite protocol/vectors/*.json
    python -m protocol.conformance --check    # fail if the files differ from a fresh generation

Vectors are Wycheproof-style JSON (PROTOCOL.md §12.1): each test has a `tcId`, a `comment`,
its inputs, the expected wire bytes, `result` ("valid"/"invalid") and, for invalid cases, the
`error_code`. Modules by responsibility:

- forms: JSON forms of values, messages, arrays and envelopes;
- constructions: how an input envelope is rebuilt (from the specification, not the codec);
- runner: executes steps against the implementation and compares (`replay`);
- writer: builds files step by step, plus the helpers the case modules share;
- codec_cases, codec_rules, plaintext_cases, secure_cases, secure_rules, chunk_cases: the cases;
- build: builds every file, self-checks it and writes or compares it.
"""

from .build import FILES, VECTOR_DIR, build_all, dump, main
from .constructions import mutate, raw_cbor_map, split_frame
from .runner import Executor, VectorMismatch, replay
from .writer import PARTY_KEYS

__all__ = [
    "FILES",
    "PARTY_KEYS",
    "VECTOR_DIR",
    "Executor",
    "VectorMismatch",
    "build_all",
    "dump",
    "main",
    "mutate",
    "raw_cbor_map",
    "replay",
    "split_frame",
]
