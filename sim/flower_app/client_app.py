"""The ClientApp: a Flower node that hosts one party (source or target).

Which party a node plays comes from its node config (`--node-config 'role="source"'`) or, when
the config names none (simulation), from the coordinator's role handshake: the spec it sends
names the party, and the node keeps that role for the rest of the run.

A party must survive from one message to the next, but a ClientApp is not a long-lived object:
in deployment every message starts a fresh ClientApp process, and in simulation virtual nodes
share Ray worker processes. So the party's durable state is its history, kept in
`Context.state`: the envelopes it has handled in this generation (one generation per variant
run) and a digest of what it answered. A node rebuilds the party from its JSON-able spec and
replays that history (parties are deterministic given the seed); the digest proves the replay
gave the same answers. A process-level cache keyed by (run id, node id) skips the replay when
the same process already holds the party at exactly that point of its history.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from typing import Any

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from sim.flower_app.records import (
    PARTITION_KEY,
    ROLE_KEY,
    DeliverReply,
    DeliverRequest,
    Hello,
    Outcome,
)

STATE_KEY = "cdrsim.party"
# Party factories a node accepts: the coordinator names one in each spec, and a node must not
# import and call whatever a (possibly foreign) ServerApp asks for.
ALLOWED_FACTORIES = frozenset({"sim.world:build_party"})
_GENESIS = hashlib.sha256(b"cdrsim-flower/history").hexdigest()


class NodeError(RuntimeError):
    """The node cannot serve this request; Flower returns it to the coordinator as an error reply."""


@dataclass
class _Hosted:
    generation: str
    party: Any
    handled: int
    digest: str


# Process-level cache of built parties, keyed by (run id, node id) because virtual nodes of a
# simulation share worker processes. Only an optimisation: a miss rebuilds from Context.state.
_HOSTED: dict[tuple[int, int], _Hosted] = {}


def pinned_role(node_config: dict[str, Any]) -> str:
    return str(node_config.get(ROLE_KEY, "") or "")


def hello_reply(node_config: dict[str, Any]) -> Hello:
    return Hello(role=pinned_role(node_config), partition=int(node_config.get(PARTITION_KEY, -1)), pid=os.getpid())


def serve(request: DeliverRequest, state: RecordDict, *, host_key: tuple[int, int], node_config: dict[str, Any]) -> DeliverReply:
    """Hand a batch of envelopes to the party, in order; return what it put on the wire."""
    started = time.perf_counter()
    role = pinned_role(node_config)
    if role and request.party != role:
        raise NodeError(f"this SuperNode plays {role!r} (its --node-config role) but was sent envelopes for {request.party!r}")
    if request.factory not in ALLOWED_FACTORIES:
        raise NodeError(f"refusing party factory {request.factory!r}: this ClientApp builds parties only with {sorted(ALLOWED_FACTORIES)}")

    saved = state.config_records.get(STATE_KEY)
    if saved is not None and str(saved["party"]) != request.party:
        raise NodeError(f"this node already plays {saved['party']!r} in this run; it cannot also play {request.party!r}")
    if saved is None or str(saved["generation"]) != request.generation:
        history: list[bytes] = []
        digest, views_sent = _GENESIS, 0
    else:
        history = list(saved["history"])
        digest, views_sent = str(saved["digest"]), int(saved["views_sent"])

    if request.torch_threads > 0:
        import torch

        if torch.get_num_threads() != request.torch_threads:
            torch.set_num_threads(request.torch_threads)

    hosted = _HOSTED.get(host_key)
    replayed = 0
    if hosted is None or (hosted.generation, hosted.handled, hosted.digest) != (request.generation, len(history), digest):
        hosted = _rebuild(request, history, digest)
        replayed = len(history)
    _HOSTED.pop(host_key, None)  # a failure below leaves the party half-advanced: never reuse it

    outcomes = []
    for envelope in request.envelopes:
        outcome = _handle(hosted.party, envelope)
        hosted.digest = _chain(hosted.digest, envelope, outcome)
        hosted.handled += 1
        history.append(bytes(envelope))
        outcomes.append(outcome)
    views = hosted.party.receiver_view()
    new_views = [bytes(v) for v in views[views_sent:]]

    state[STATE_KEY] = ConfigRecord(
        {
            "generation": request.generation,
            "party": request.party,
            "history": history,
            "digest": hosted.digest,
            "views_sent": len(views),
        }
    )
    _HOSTED[host_key] = hosted
    return DeliverReply(
        generation=request.generation,
        outcomes=outcomes,
        views=new_views,
        replayed=replayed,
        seconds=time.perf_counter() - started,
    )


def _rebuild(request: DeliverRequest, history: list[bytes], digest: str) -> _Hosted:
    from protocol import seeded_rng
    from sim.runtimes.base import PartySpec

    party = PartySpec(request.party, request.factory, request.config).build()
    endpoint = party.endpoint
    # A replay must reproduce the session the peers saw, so the endpoint's randomness (session
    # ids, ephemeral X25519 keys) is derived per generation from a secret only this party
    # holds: its identity private key (the plaintext suite draws no randomness).
    secret = endpoint.identity.private_bytes() if endpoint.identity is not None else b""
    endpoint.rng = seeded_rng(
        hashlib.sha256(b"cdrsim-flower/rng\x00" + request.generation.encode() + b"\x00" + party.name.encode() + b"\x00" + secret).digest()
    )
    hosted = _Hosted(request.generation, party, 0, _GENESIS)
    for envelope in history:
        hosted.digest = _chain(hosted.digest, envelope, _handle(party, envelope))
        hosted.handled += 1
    if hosted.digest != digest:
        raise NodeError(
            f"rebuilding party {request.party!r} by replaying its {len(history)} envelopes gave different answers "
            "than the first time: the party is not deterministic given its seed, so its state cannot be restored"
        )
    return hosted


def _handle(party: Any, envelope: bytes) -> Outcome:
    from protocol import ProtocolError

    try:
        out = party.handle(bytes(envelope))
    except ProtocolError as exc:  # a rejection is data for the relay, not a failure of the node
        return Outcome(code=exc.code.value, detail=exc.detail, sender=exc.sender or "")
    return Outcome(out=[bytes(e) for e in out])


def _chain(digest: str, envelope: bytes, outcome: Outcome) -> str:
    h = hashlib.sha256(bytes.fromhex(digest))
    h.update(hashlib.sha256(envelope).digest())
    h.update(outcome.code.encode() + b"\x00")
    for e in outcome.out:
        h.update(len(e).to_bytes(8, "big") + hashlib.sha256(e).digest())
    return h.hexdigest()


# ----------------------------------------------------------------------------- Flower glue
app = ClientApp()


@app.query("hello")
def _hello(msg: Message, context: Context) -> Message:
    return Message(hello_reply(context.node_config).to_content(), reply_to=msg)


@app.query("deliver")
def _deliver(msg: Message, context: Context) -> Message:
    request = DeliverRequest.from_content(msg.content)
    reply = serve(request, context.state, host_key=(context.run_id, context.node_id), node_config=context.node_config)
    return Message(reply.to_content(), reply_to=msg)
