"""`FlowerRuntime`: the engine's Runtime over Flower nodes, used inside the ServerApp.

Each party runs on its own Flower node, in that node's resident party host; this runtime only
moves requests and envelopes through the Exchange (the Grid):

- `start(specs)`: one `query.start` per party node, sent at once; each node builds its party
  from the JSON-able spec where it runs and answers with the party's identity PUBLIC key
  (checked against `expected_public_keys` when the launcher pinned them).
- `install_registry(registry)`: kept here and handed to each party with its first batch of
  envelopes (one round trip fewer per task); the party pins it before it opens any envelope.
- `call(party, envelope, link)`: one `query.deliver`. Round trips are what costs on Flower, so
  one call carries, in one exchange, every envelope the relay will deliver next that no
  coordinator step can come between (below): artifact chunks to one receiver go in one
  message, and a server's requests to many clients, or many clients' answers to a server, go
  to all their nodes at once. The answers are handed to the relay one by one, in the order it
  asks for them, and the relay still sees, taps and records each envelope. The receiver-view
  envelopes ride along with each reply.

  Why that is the order the relay would deliver in: the relay handles one FIFO queue. The
  envelopes parties return are mirrored here (the shadow), each tagged with a *run* number
  that changes whenever the coordinator may have acted (it handled an envelope addressed to
  it, or sent one of its own). Envelopes of one run sit next to each other in the relay's
  queue with only envelopes of the same run between them, and everything ahead of the one
  the relay delivers now is done: so each party's envelopes of that run can be delivered now,
  in their order, and the parties see exactly what they would see one envelope at a time.
- `stop()`: forgets the task; each node replaces its party at the next `start`.
- `close()`: `query.close` to every node: their party hosts end.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from protocol import ErrorCode, ProtocolError, peek_header
from sim.flower_app.records import (
    CLOSE,
    DELIVER,
    START,
    CarrierError,
    Closed,
    DeliverReply,
    DeliverRequest,
    EnvelopeOutcome,
    StartReply,
    StartRequest,
    close_request,
)

from ...coordinator import party_link
from ...errors import RunError
from ..base import PartySpec, Runtime
from .exchange import Exchange, NodeReply
from .nodes import NodeInfo
from .settings import DEFAULT_CALL_TIMEOUT, DEFAULT_CLOSE_TIMEOUT, DEFAULT_HOST_IDLE_TIMEOUT


@dataclass
class _Returned:
    """An envelope this runtime handed back to the relay: who produced it, in which run."""

    run: int
    envelope: bytes
    producer: str  # the party whose call returned it (the relay forwards it over party:<producer>)
    receiver: str | None
    sent: bool = False  # already delivered ahead of the relay (its outcome waits in _prefetched)


@dataclass
class FlowerStats:
    round_trips: int = 0  # exchanges with the nodes (start, deliver, close); the nodes of one exchange answer in parallel
    messages: int = 0  # Flower messages sent to nodes
    envelopes: int = 0  # envelopes delivered to parties
    batched: int = 0  # envelopes that travelled in a message with an earlier envelope
    fanned_out: int = 0  # messages that travelled in an exchange with a message to another node
    bytes_to_nodes: int = 0  # envelope bytes
    bytes_from_nodes: int = 0  # envelope and receiver-view bytes
    seconds: float = 0.0  # wall time inside the exchanges (Flower's send and receive)
    node_seconds: float = 0.0  # time the party hosts reported spending on requests (the slowest node per exchange)
    start_seconds: float = 0.0  # wall time of the start round trips (parties built on their nodes)

    def as_timing(self) -> dict[str, float]:
        return {f"flower_{k}": float(v) for k, v in self.__dict__.items()}


class FlowerRuntime(Runtime):
    """Parties on Flower nodes; `call` relays one envelope (or a batch) with the Grid."""

    name = "flower"

    def __init__(
        self,
        exchange: Exchange,
        nodes: dict[str, NodeInfo],
        *,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        host_idle_timeout: float = DEFAULT_HOST_IDLE_TIMEOUT,
        torch_threads: int = 0,
        run_token: str | None = None,
        batch: bool = True,
        expected_public_keys: dict[str, bytes] | None = None,
    ):
        self.exchange = exchange
        self.nodes = dict(nodes)
        self.call_timeout = float(call_timeout)
        self.close_timeout = float(close_timeout)
        self.host_idle_timeout = float(host_idle_timeout)
        self.torch_threads = int(torch_threads)
        self.run_token = run_token or secrets.token_hex(8)
        self.batch = batch
        self.expected_public_keys = dict(expected_public_keys or {})
        self.stats = FlowerStats()
        self.host_pids: dict[str, int] = {n.role: n.host_pid for n in self.nodes.values() if n.host_pid}
        self._started = 0
        self._generation = ""
        self._parties: set[str] = set()
        self._registry: dict[str, str] = {}  # party -> registry still to hand over with its first batch
        self._views: dict[str, list[bytes]] = {}
        self._prefetched: dict[str, deque[tuple[bytes, str, EnvelopeOutcome]]] = {}
        self._shadow: deque[_Returned] = deque()
        self._run = 0  # changes whenever the coordinator may have acted (see the module docstring)
        self._closed = False

    # ----------------------------------------------------------------- Runtime
    def start(self, specs: list[PartySpec]) -> dict[str, bytes]:
        missing = [s.name for s in specs if s.name not in self.nodes]
        if missing:
            raise RunError(f"no Flower node plays {', '.join(missing)}; nodes: {sorted(self.nodes)}")
        self.stop()
        self._started += 1
        self._generation = f"{self.run_token}/{self._started}"
        requests = {
            s.name: StartRequest(self._generation, s.name, s.factory, s.config, self.torch_threads, self.host_idle_timeout).to_content()
            for s in specs
        }
        started = time.perf_counter()
        replies = self._round(requests, START, "start")
        self.stats.start_seconds += time.perf_counter() - started
        public: dict[str, bytes] = {}
        building = 0.0  # the nodes build their parties at the same time
        for spec in specs:
            reply = self._decode(spec.name, replies[spec.name], StartReply.from_content)
            if reply.generation != self._generation:
                raise RunError(f"{self._where(spec.name)} started task {reply.generation!r}, expected {self._generation!r}")
            expected = self.expected_public_keys.get(spec.name)
            if reply.public_key and expected is not None and reply.public_key != expected:
                raise RunError(
                    f"{self._where(spec.name)} reported identity public key {reply.public_key.hex()}, but the key pinned for it "
                    f"is {expected.hex()}: the node runs with another key file, or something between the coordinator and the "
                    "node replaced the key"
                )
            self.host_pids[spec.name] = reply.host_pid
            building = max(building, reply.seconds)
            public[spec.name] = reply.public_key
        self.stats.node_seconds += building
        self._parties = {s.name for s in specs}
        self._views = {s.name: [] for s in specs}
        self._prefetched = {s.name: deque() for s in specs}
        return public

    def install_registry(self, registry_json: str) -> None:
        self._registry = {party: registry_json for party in self._parties}

    def call(self, party: str, envelope: bytes, link: str = "") -> list[bytes]:
        if party not in self._parties:
            raise RunError(f"no party named {party!r} in this run; parties: {sorted(self._parties)}")
        entry = self._reach(party, envelope, link)
        pending = self._prefetched[party]
        if pending:
            expected, expected_link, outcome = pending[0]
            if (expected is not envelope and expected != envelope) or expected_link != link:
                raise RunError(
                    f"the relay delivered envelopes to {party!r} in a different order (or over another link) than they were "
                    "batched (a bug in the Flower runtime; the setting 'batch': false turns batching off)"
                )
            pending.popleft()
            return self._result(party, outcome)
        if entry is not None and entry.sent:
            raise RunError(f"an envelope to {party!r} was sent ahead of the relay but its outcome is gone (a bug in the Flower runtime)")
        groups = self._take_batch(party, envelope, link, entry)
        replies = self._deliver(groups)
        for receiver, (batch, links) in groups.items():
            outcomes = replies[receiver].outcomes
            start = 1 if receiver == party else 0
            self._prefetched[receiver].extend(zip(batch[start:], links[start:], outcomes[start:]))
        return self._result(party, replies[party].outcomes[0])

    def receiver_view(self, party: str) -> list[bytes]:
        if party not in self._views:
            raise RunError(f"no party named {party!r} in this run; parties: {sorted(self._views)}")
        return list(self._views[party])

    def stop(self) -> None:
        self._parties = set()
        self._registry.clear()
        self._prefetched.clear()
        self._shadow.clear()

    def close(self) -> None:
        """End of the run: every node's party host ends (best effort: a node that is gone
        cannot answer, and its host ends with its SuperNode or after its idle timeout)."""
        self.stop()
        if self._closed:
            return
        self._closed = True
        requests = [(info.node_id, CLOSE, close_request()) for info in self.nodes.values()]
        started = time.perf_counter()
        try:
            replies = self.exchange.exchange(requests, self.close_timeout)
        except Exception:  # the run is over either way (e.g. the launcher already gave up)
            return
        self.stats.seconds += time.perf_counter() - started
        self.stats.round_trips += 1
        self.stats.messages += len(requests)
        for reply in replies.values():
            if reply.error is None:
                try:
                    Closed.from_content(reply.content)
                except (CarrierError, KeyError, TypeError, ValueError):
                    pass

    # ----------------------------------------------------------------- internals
    def _reach(self, party: str, envelope: bytes, link: str) -> _Returned | None:
        """The relay now delivers `envelope`: find its shadow entry (None: it came from the
        coordinator, or was injected) and drop every entry ahead of it (the relay handled
        them). A new run starts when the coordinator may have acted since the last call."""
        shadow = self._shadow
        mine = [i for i, r in enumerate(shadow) if r.receiver == party and party_link(r.producer) == link]
        index = next((i for i in mine if shadow[i].envelope is envelope), None)
        if index is None:
            index = next((i for i in mine if shadow[i].envelope == envelope), None)
        if index is None:
            self._run += 1  # the coordinator sent it (or an attacker injected it)
            return None
        for _ in range(index):
            if shadow.popleft().receiver not in self._parties:
                self._run += 1  # the coordinator handled an envelope addressed to it
        return shadow.popleft()

    def _take_batch(self, party: str, envelope: bytes, link: str, entry: _Returned | None) -> dict[str, tuple[list[bytes], list[str]]]:
        """`envelope` plus, per party, the envelopes of its run the relay will deliver next
        (in order): what one exchange carries."""
        groups: dict[str, tuple[list[bytes], list[str]]] = {party: ([envelope], [link])}
        if entry is None or not self.batch:
            return groups
        for nxt in self._shadow:
            if nxt.run != entry.run:
                break
            if nxt.sent or nxt.receiver not in self._parties:
                continue
            batch, links = groups.setdefault(nxt.receiver, ([], []))
            batch.append(nxt.envelope)
            links.append(party_link(nxt.producer))
            nxt.sent = True
        return groups

    def _result(self, party: str, outcome: EnvelopeOutcome) -> list[bytes]:
        if outcome.code:
            raise ProtocolError(
                ErrorCode(outcome.code), outcome.detail, sender=outcome.sender or None, charged_to=outcome.charged_to or None
            )
        out = [bytes(e) for e in outcome.out]
        self._shadow.extend(_Returned(self._run, e, party, _receiver(e)) for e in out)
        return out

    def _deliver(self, groups: dict[str, tuple[list[bytes], list[str]]]) -> dict[str, DeliverReply]:
        requests = {
            party: DeliverRequest(self._generation, batch, links, registry=self._registry.pop(party, "")).to_content()
            for party, (batch, links) in groups.items()
        }
        replies = self._round(requests, DELIVER, "deliver")
        out: dict[str, DeliverReply] = {}
        slowest = 0.0
        for party, (envelopes, _) in groups.items():
            self.stats.envelopes += len(envelopes)
            self.stats.batched += len(envelopes) - 1
            self.stats.bytes_to_nodes += sum(len(e) for e in envelopes)
            decoded = self._decode(party, replies[party], DeliverReply.from_content)
            if decoded.generation != self._generation or len(decoded.outcomes) != len(envelopes):
                raise RunError(
                    f"{self._where(party)} answered task {decoded.generation!r} with {len(decoded.outcomes)} outcomes; "
                    f"expected {self._generation!r} with {len(envelopes)}"
                )
            self._views[party].extend(decoded.views)
            slowest = max(slowest, decoded.seconds)  # the nodes of one exchange work at the same time
            self.stats.bytes_from_nodes += sum(len(e) for o in decoded.outcomes for e in o.out) + sum(len(v) for v in decoded.views)
            out[party] = decoded
        self.stats.node_seconds += slowest
        self.stats.fanned_out += len(groups) if len(groups) > 1 else 0
        return out

    def _round(self, requests: dict[str, Any], mtype: str, what: str) -> dict[str, NodeReply]:
        """One exchange: a request to each named party's node at once; every reply, or RunError."""
        started = time.perf_counter()
        replies = self.exchange.exchange([(self.nodes[p].node_id, mtype, content) for p, content in requests.items()], self.call_timeout)
        self.stats.seconds += time.perf_counter() - started
        self.stats.round_trips += 1
        self.stats.messages += len(requests)
        out: dict[str, NodeReply] = {}
        for party in requests:
            reply = replies.get(self.nodes[party].node_id)
            if reply is None:
                raise RunError(
                    f"{self._where(party)} sent no reply to {what!r} within {self.call_timeout:.0f}s; its SuperNode may have "
                    "stopped, or the step needs more time (raise the call timeout)"
                )
            if reply.error:
                raise RunError(f"{self._where(party)} failed at {what!r}: {reply.error}")
            out[party] = reply
        return out

    def _decode(self, party: str, reply: NodeReply, parse: Any) -> Any:
        try:
            return parse(reply.content)
        except (CarrierError, KeyError, TypeError, ValueError) as exc:
            raise RunError(f"{self._where(party)} sent an unreadable reply: {exc}") from exc

    def _where(self, party: str) -> str:
        return f"party {party!r} (Flower node {self.nodes[party].node_id})"


def _receiver(envelope: bytes) -> str | None:
    try:
        return str(peek_header(envelope)["receiver"])
    except (ProtocolError, KeyError):
        return None
