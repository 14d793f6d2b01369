"""Shared helpers for the protocol tests: fixed identities, endpoints, a FIFO network."""

from __future__ import annotations

from collections import deque

import numpy as np

from protocol import Endpoint, Identity, Limits, Message, Registry, peek_header, seeded_rng

PARTIES = ("coordinator", "source", "target")


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


def run(endpoints: dict[str, Endpoint], envelopes: list[bytes], *, tap: list | None = None) -> list[Message]:
    """Deliver envelopes FIFO until the network is quiet; return every delivered message."""
    queue = deque(envelopes)
    delivered: list[Message] = []
    while queue:
        env = queue.popleft()
        if tap is not None:
            tap.append(env)
        receiver = peek_header(env)["receiver"]
        got, out = endpoints[receiver].receive(env)
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
