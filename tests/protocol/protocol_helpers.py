"""Shared helpers for the protocol tests: fixed identities, endpoints, a FIFO network."""

from __future__ import annotations

import os
from collections import Counter, deque

import numpy as np

from protocol import Endpoint, Identity, Limits, Message, ProtocolError, Registry, peek_header, seeded_rng

PARTIES = ("coordinator", "source", "target")
# Figures the suite prints at the end (conftest.py): the mutation table and the fuzzers' counts.
REPORT: dict = {"mutations": [], "fuzz": {}}


def fuzz_examples(default: int) -> int:
    """max_examples of a fuzzer: CDRSIM_FUZZ_EXAMPLES=N runs every fuzzer with N examples."""
    return int(os.environ.get("CDRSIM_FUZZ_EXAMPLES", default))


class FuzzStats:
    """Counts what a fuzzer tried; anything but ProtocolError propagates and fails the test."""

    def __init__(self, name: str):
        self.name, self.tried, self.rejected, self.outcomes = name, 0, 0, Counter()
        REPORT["fuzz"][name] = self

    def attempt(self, fn, data):
        self.tried += 1
        try:
            result = fn(data)
        except ProtocolError as exc:
            self.rejected += 1
            self.outcomes[exc.code.value] += 1
            return exc
        self.outcomes["accepted"] += 1
        return result


def identities() -> dict[str, Identity]:
    # Fixed private keys: reproducible envelopes in every test.
    return {n: Identity.from_private_bytes(bytes([i + 1]) * 32, name=n) for i, n in enumerate(PARTIES)}


def registry(ids: dict[str, Identity] | None = None) -> Registry:
    ids = ids or identities()
    return Registry({n: i.public_bytes() for n, i in ids.items()})


def secure_endpoints(*, limits: Limits = Limits(), rekey_every: int | None = None, seed: str = "t") -> dict[str, Endpoint]:
    ids = identities()
    reg = registry(ids)
    return {
        n: Endpoint(n, identity=ids[n], registry=reg, limits=limits, rng=seeded_rng(f"{seed}/{n}"), rekey_every=rekey_every)
        for n in PARTIES
    }


def plaintext_endpoints(*, limits: Limits = Limits(), session_seed: bytes = b"seed", rekey_every: int | None = None) -> dict[str, Endpoint]:
    return {n: Endpoint(n, suite="plaintext", limits=limits, session_seed=session_seed, rekey_every=rekey_every) for n in PARTIES}


def run(endpoints: dict[str, Endpoint], envelopes: list[bytes], *, tap: list | None = None, link: str | None = None) -> list[Message]:
    """Deliver envelopes FIFO until the network is quiet; return every delivered message.

    Each envelope arrives over the link "party:<sender>" unless `link` names one for all."""
    queue = deque(envelopes)
    delivered: list[Message] = []
    while queue:
        env = queue.popleft()
        if tap is not None:
            tap.append(env)
        header = peek_header(env)
        got, out = endpoints[header["receiver"]].receive(env, link=link if link is not None else f"party:{header['sender']}")
        delivered.extend(got)
        queue.extend(out)
    return delivered


def msg(sender: str = "source", receiver: str = "target", type: str = "artifact", n: int = 4, **kw) -> Message:
    arrays = kw.pop("arrays", {"emb": np.arange(n * 3, dtype=np.float32).reshape(n, 3), "user_ids": np.arange(n, dtype=np.int64)})
    return Message(type=type, sender=sender, receiver=receiver, arrays=arrays, meta=kw.pop("meta", {"kind": "emb"}), **kw)


def established(endpoints: dict[str, Endpoint], a: str = "source", b: str = "target") -> list[bytes]:
    """Run a handshake a->b carrying one message; return the wire transcript."""
    tap: list[bytes] = []
    run(endpoints, endpoints[a].send(msg(a, b, type="control", arrays={}, meta={"op": "hello"})), tap=tap)
    return tap
