"""The Flower runtimes: parties as Flower ClientApps under a coordinating ServerApp.

`--runtime flower` runs the app in Flower's simulation engine (`run_simulation`, Ray
underneath, one virtual node per party); `--runtime flower-deployment` starts a real SuperLink
and one SuperNode per party as separate OS processes on localhost and runs the app with
`flwr run`. Both run the same ServerApp and ClientApp (`sim/flower_app/`).

Flower inverts control: the coordinator runs inside the ServerApp, so the ServerApp runs the
engine (`run_variant` for each seed and variant, exactly as `run_experiment` does) with a
`FlowerRuntime` whose `call(party, envelope)` relays the envelope to that party's node with
`grid.send_and_receive`, and writes the run directory itself. Routing is hub-and-spoke, so the
relay at the coordinator sees every envelope and the eavesdropper taps it there (the Relay's
tap), receiving the same bytes as on every other runtime.

What crosses Flower is the protocol's envelope bytes, one `bytes` value each in a
ConfigRecord (`sim/flower_app/records.py`); nothing is pickled. Round trips are what costs
(a SuperNode polls every 3 s and starts a fresh ClientApp process per message), so:
- a party's spec travels with its first envelope instead of in a set-up message;
- the receiver-view envelopes (curious-receiver instrument) ride along with each reply;
- envelopes a party puts on the wire back to back for the same receiver (artifact chunks)
  go to that receiver in one message, and their answers are handed to the relay one by one,
  in the order it asks for them.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from protocol import ErrorCode, ProtocolError, peek_header

from .base import PartySpec, RunError, Runtime

FLOWER_RUNTIMES = ("flower", "flower-deployment")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
APP_DIR = PROJECT_ROOT / "sim" / "flower_app"
DEFAULT_CALL_TIMEOUT = 900.0  # seconds one message to a party may take (a training step)
DEFAULT_NODES_TIMEOUT = 120.0  # seconds for every party's node to connect and answer the handshake
DEFAULT_STARTUP_TIMEOUT = 60.0  # seconds for the SuperLink and SuperNodes to listen
NODE_POLL_SECONDS = 0.5
# Environment for Flower and the Ray it starts (setdefault: a user's own settings win).
FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",  # never rebuild the environment with uv for workers
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",  # CPU only; silences a FutureWarning
}
# Small machine: one CPU per virtual node, a private two-CPU Ray, no dashboard.
SIMULATION_BACKEND = {
    "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
    "init_args": {"num_cpus": 2, "address": "local", "include_dashboard": False},
}
DEPLOYMENT_MARKER = "CDRSIM_FLOWER_DEPLOYMENT"  # env var that tags every process a deployment starts
CONNECTION = "cdrsim-local"

log = logging.getLogger(__name__)


# ============================================================================ exchange
@dataclass
class NodeReply:
    """One node's answer: the reply content, or Flower's error reason."""

    node_id: int
    content: Any = None  # flwr RecordDict
    error: str | None = None


class Exchange(Protocol):
    """How the coordinator reaches nodes (a Flower Grid, or an in-process stand-in for tests)."""

    def node_ids(self) -> list[int]: ...

    def exchange(self, requests: list[tuple[int, str, Any]], timeout: float) -> dict[int, NodeReply]:
        """Send (node id, message type, RecordDict) to each node at once; return the replies
        that came back within `timeout`, by node id (one request per node)."""


class GridExchange:
    """The Exchange over a Flower Grid: one `send_and_receive` per exchange.

    With `abort` (simulation), the same push-then-pull loop runs here instead, so that the
    ServerApp thread stops waiting as soon as the launcher gives up (Ctrl-C), rather than
    blocking interpreter exit until the call timeout."""

    def __init__(self, grid: Any, abort: threading.Event | None = None):
        self.grid = grid
        self.abort = abort

    def node_ids(self) -> list[int]:
        return [int(n) for n in self.grid.get_node_ids()]

    def exchange(self, requests: list[tuple[int, str, Any]], timeout: float) -> dict[int, NodeReply]:
        from flwr.app import Message

        messages = [Message(content, dst_node_id=node, message_type=mtype) for node, mtype, content in requests]
        if self.abort is None:
            received = self.grid.send_and_receive(messages, timeout=timeout)
        else:
            received = self._send_and_receive_abortable(messages, timeout)
        replies: dict[int, NodeReply] = {}
        for reply in received:
            node = int(reply.metadata.src_node_id)
            if reply.has_error():
                replies[node] = NodeReply(node, error=f"{reply.error.reason} (Flower error code {reply.error.code})")
            else:
                replies[node] = NodeReply(node, content=reply.content)
        return replies

    def _send_and_receive_abortable(self, messages: list[Any], timeout: float) -> list[Any]:
        assert self.abort is not None
        waiting = set(self.grid.push_messages(messages))
        deadline = time.monotonic() + timeout
        received: list[Any] = []
        while waiting and time.monotonic() < deadline:
            if self.abort.is_set():
                raise RunError("the run was stopped while waiting for a party's node")
            got = list(self.grid.pull_messages(waiting))
            received.extend(got)
            waiting.difference_update(m.metadata.reply_to_message_id for m in got)
            if waiting:
                time.sleep(0.05)
        return received


# ============================================================================ roles
@dataclass(frozen=True)
class NodeInfo:
    node_id: int
    role: str
    pinned: bool  # the role came from the node's own config
    pid: int


def discover_nodes(exchange: Exchange, roles: Iterable[str], *, timeout: float = DEFAULT_NODES_TIMEOUT) -> dict[str, NodeInfo]:
    """Wait for the nodes, run the role handshake, and map each role to one node.

    A node whose config pins a role (`--node-config 'role="source"'`) plays that role; the
    other roles go to the remaining nodes in partition-id order (simulation)."""
    from sim.flower_app.records import HELLO, Hello, hello_request

    roles = list(roles)
    deadline = time.monotonic() + timeout
    while True:
        ids = exchange.node_ids()
        if len(ids) >= len(roles):
            break
        if time.monotonic() > deadline:
            raise RunError(
                f"only {len(ids)} of {len(roles)} Flower nodes connected within {timeout:.0f}s; start one SuperNode "
                f"per party ({', '.join(roles)}), e.g. flower-supernode ... --node-config 'role=\"{roles[0]}\"'"
            )
        time.sleep(NODE_POLL_SECONDS)
    replies = exchange.exchange([(n, HELLO, hello_request()) for n in ids], max(1.0, deadline - time.monotonic()))
    hellos: dict[int, Hello] = {}
    for node in ids:
        reply = replies.get(node)
        if reply is None:
            raise RunError(f"Flower node {node} did not answer the role handshake within {timeout:.0f}s; its SuperNode may have stopped")
        if reply.error:
            raise RunError(f"Flower node {node} failed the role handshake: {reply.error}")
        hellos[node] = Hello.from_content(reply.content)
    assigned: dict[str, NodeInfo] = {}
    for node, hello in sorted(hellos.items()):
        if not hello.role:
            continue
        if hello.role not in roles:
            raise RunError(f"Flower node {node} (pid {hello.pid}) claims role {hello.role!r}; valid roles: {', '.join(roles)}")
        if hello.role in assigned:
            other = assigned[hello.role]
            raise RunError(f"Flower nodes {other.node_id} and {node} both claim role {hello.role!r}; give each SuperNode its own role")
        assigned[hello.role] = NodeInfo(node, hello.role, True, hello.pid)
    free = sorted((h.partition, node) for node, h in hellos.items() if not h.role)
    for role in roles:
        if role in assigned:
            continue
        if not free:
            raise RunError(f"no Flower node plays {role!r}; start a SuperNode with --node-config 'role=\"{role}\"'")
        _, node = free.pop(0)
        assigned[role] = NodeInfo(node, role, False, hellos[node].pid)
    return assigned


# ============================================================================ the runtime
@dataclass
class _Returned:
    """An envelope this runtime handed back to the relay, and which call produced it."""

    call: int
    envelope: bytes
    receiver: str | None


@dataclass
class FlowerStats:
    round_trips: int = 0  # deliver messages sent to nodes
    envelopes: int = 0  # envelopes delivered to parties
    batched: int = 0  # envelopes that travelled in a message with an earlier envelope
    replayed: int = 0  # envelopes nodes replayed to rebuild a party
    bytes_to_nodes: int = 0
    bytes_from_nodes: int = 0
    seconds: float = 0.0  # wall time inside send_and_receive
    node_seconds: float = 0.0  # time nodes reported spending on requests

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
        torch_threads: int = 0,
        run_token: str | None = None,
        batch: bool = True,
    ):
        self.exchange = exchange
        self.nodes = dict(nodes)
        self.call_timeout = float(call_timeout)
        self.torch_threads = int(torch_threads)
        self.run_token = run_token or secrets.token_hex(8)
        self.batch = batch
        self.stats = FlowerStats()
        self._started = 0
        self._generation = ""
        self._specs: dict[str, PartySpec] = {}
        self._views: dict[str, list[bytes]] = {}
        self._prefetched: dict[str, deque[tuple[bytes, Any]]] = {}
        self._shadow: deque[_Returned] = deque()
        self._calls = 0

    # ----------------------------------------------------------------- Runtime
    def start(self, specs: list[PartySpec]) -> None:
        missing = [s.name for s in specs if s.name not in self.nodes]
        if missing:
            raise RunError(f"no Flower node plays {', '.join(missing)}; nodes: {sorted(self.nodes)}")
        self._started += 1
        # A fresh generation makes each node start its party anew (no state from the last variant).
        self._generation = f"{self.run_token}/{self._started}"
        self._specs = {s.name: s for s in specs}
        self._views = {s.name: [] for s in specs}
        self._prefetched = {s.name: deque() for s in specs}
        self._shadow.clear()

    def call(self, party: str, envelope: bytes) -> list[bytes]:
        if party not in self._specs:
            raise RunError(f"no party named {party!r} in this run; parties: {sorted(self._specs)}")
        pending = self._prefetched[party]
        if pending:
            expected, outcome = pending[0]
            if expected is not envelope and expected != envelope:
                raise RunError(
                    f"the relay delivered envelopes to {party!r} in a different order than they were batched "
                    "(a bug in the Flower runtime; the settings key 'batch': false turns batching off)"
                )
            pending.popleft()
            return self._result(outcome)
        batch = self._take_batch(party, envelope)
        reply = self._deliver(party, batch)
        pending.extend(zip(batch[1:], reply.outcomes[1:]))
        return self._result(reply.outcomes[0])

    def receiver_view(self, party: str) -> list[bytes]:
        if party not in self._views:
            raise RunError(f"no party named {party!r} in this run; parties: {sorted(self._views)}")
        return list(self._views[party])

    def stop(self) -> None:
        self._specs.clear()
        self._prefetched.clear()
        self._shadow.clear()

    # ----------------------------------------------------------------- internals
    def _take_batch(self, party: str, envelope: bytes) -> list[bytes]:
        """`envelope` plus the envelopes the same call put on the wire right after it for the
        same party. The relay appends a call's output to its FIFO queue in one go, so nothing
        can come between them: the party sees them in the same order either way."""
        shadow = self._shadow
        index = next((i for i, r in enumerate(shadow) if r.envelope is envelope), None)
        if index is None:
            index = next((i for i, r in enumerate(shadow) if r.envelope == envelope), None)
        if index is None:  # from the coordinator itself
            return [envelope]
        for _ in range(index):  # ahead of it in the relay's FIFO queue: handled already
            shadow.popleft()
        head = shadow.popleft()
        batch = [envelope]
        while self.batch and shadow and shadow[0].call == head.call and shadow[0].receiver == party:
            batch.append(shadow.popleft().envelope)
        return batch

    def _result(self, outcome: Any) -> list[bytes]:
        if outcome.code:
            raise ProtocolError(ErrorCode(outcome.code), outcome.detail, sender=outcome.sender or None)
        out = [bytes(e) for e in outcome.out]
        self._calls += 1
        self._shadow.extend(_Returned(self._calls, e, _receiver(e)) for e in out)
        return out

    def _deliver(self, party: str, envelopes: list[bytes]) -> Any:
        from sim.flower_app.records import DELIVER, CarrierError, DeliverReply, DeliverRequest

        spec = self._specs[party]
        node = self.nodes[party].node_id
        request = DeliverRequest(
            generation=self._generation,
            party=party,
            factory=spec.factory,
            config=spec.config,
            envelopes=envelopes,
            torch_threads=self.torch_threads,
        )
        started = time.perf_counter()
        replies = self.exchange.exchange([(node, DELIVER, request.to_content())], self.call_timeout)
        self.stats.seconds += time.perf_counter() - started
        self.stats.round_trips += 1
        self.stats.envelopes += len(envelopes)
        self.stats.batched += len(envelopes) - 1
        self.stats.bytes_to_nodes += sum(len(e) for e in envelopes)
        reply = replies.get(node)
        if reply is None:
            raise RunError(
                f"party {party!r} (Flower node {node}) sent no reply within {self.call_timeout:.0f}s; its SuperNode "
                "may have stopped, or the step needs more time (raise the call timeout)"
            )
        if reply.error:
            raise RunError(f"party {party!r} (Flower node {node}) failed: {reply.error}")
        try:
            decoded = DeliverReply.from_content(reply.content)
        except (CarrierError, KeyError, TypeError, ValueError) as exc:
            raise RunError(f"party {party!r} (Flower node {node}) sent an unreadable reply: {exc}") from exc
        if decoded.generation != self._generation or len(decoded.outcomes) != len(envelopes):
            raise RunError(
                f"party {party!r} (Flower node {node}) answered generation {decoded.generation!r} with "
                f"{len(decoded.outcomes)} outcomes; expected {self._generation!r} with {len(envelopes)}"
            )
        self._views[party].extend(decoded.views)
        self.stats.replayed += decoded.replayed
        self.stats.node_seconds += decoded.seconds
        self.stats.bytes_from_nodes += sum(len(e) for o in decoded.outcomes for e in o.out) + sum(len(v) for v in decoded.views)
        return decoded


def _receiver(envelope: bytes) -> str | None:
    try:
        return str(peek_header(envelope)["receiver"])
    except (ProtocolError, KeyError):
        return None


# ============================================================================ the coordinator
def load_settings(path: str | os.PathLike) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunError(f"cannot read the Flower run settings {path}: {exc}") from exc


def load_keys(directory: str | os.PathLike):
    """The run's identity keys as `Keys.save` wrote them (registry.json + <party>.key)."""
    from protocol import Identity, Registry

    from ..engine import Keys

    directory = Path(directory)
    registry = Registry.load(directory / "registry.json")
    identities = {name: Identity.load(directory / f"{name}.key", name=name) for name in registry.names()}
    return Keys(identities, registry)


def coordinate(exchange: Exchange, settings: dict[str, Any]) -> dict[str, Any]:
    """The ServerApp's work: the engine's loop over seeds and variants with a FlowerRuntime,
    then every output file. On failure, writes what finished and raises RunError."""
    import torch

    from ..config import RunConfig
    from ..engine import PARTIES, ExperimentResult, run_variant, select_variants
    from ..report import write_outputs
    from ..scenarios import get_scenario
    from ..world import world

    main_started = time.time()
    config = RunConfig(**settings["config"])
    run_dir = Path(settings["run_dir"])
    scenario = get_scenario(config.scenario)
    result = ExperimentResult(config=config, scenario=scenario)
    timing: dict[str, float] = {"flower_startup_seconds": main_started - float(settings.get("launched_at", main_started))}
    runtime: FlowerRuntime | None = None
    progress = bool(settings.get("progress", True))
    say = (lambda text: print(f"cdrsim: {text}", file=sys.stderr, flush=True)) if progress else (lambda text: None)
    try:
        config.validate()
        variants = select_variants(scenario, config)
        keys = load_keys(settings["keys_dir"]) if settings.get("keys_dir") else None
        if config.channel == "secure" and keys is None:
            raise RunError("the secure channel needs the run's keys; settings name no keys_dir")
        torch.set_num_threads(max(1, int(config.torch_threads)))
        for seed in config.seeds:
            world(config.run_dict(seed))  # load and split the data before any party starts
        t = time.perf_counter()
        nodes = discover_nodes(exchange, PARTIES, timeout=float(settings.get("nodes_timeout", DEFAULT_NODES_TIMEOUT)))
        timing["flower_nodes_seconds"] = time.perf_counter() - t
        say("nodes: " + ", ".join(f"{r}=node {n.node_id} (pid {n.pid})" for r, n in nodes.items()))
        timing.update(
            _ping(
                exchange,
                nodes["source"].node_id,
                int(settings.get("ping_rounds", 0)),
                float(settings.get("call_timeout", DEFAULT_CALL_TIMEOUT)),
            )
        )
        runtime = FlowerRuntime(
            exchange,
            nodes,
            call_timeout=float(settings.get("call_timeout", DEFAULT_CALL_TIMEOUT)),
            torch_threads=int(config.torch_threads),
            batch=bool(settings.get("batch", True)),
        )
        t = time.perf_counter()
        total = len(config.seeds) * len(variants)
        for seed in config.seeds:
            for variant in variants:
                say(f"seed {seed} · {variant.name} ({len(result.runs) + 1}/{total})")
                result.runs.append(run_variant(config, scenario, variant, seed, runtime, keys))
        timing["flower_engine_seconds"] = time.perf_counter() - t
    except BaseException as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        if runtime is not None:
            timing.update(runtime.stats.as_timing())
        timing["total_seconds"] = time.time() - float(settings.get("launched_at", main_started))
        try:
            results = write_outputs(result, run_dir, timing)
            say(f"wrote {run_dir}")
        except Exception as exc:
            if result.error is None:
                raise
            # Do not mask the error that ended the run; the launcher writes a failed results.json.
            say(f"could not write the outputs after the failure: {type(exc).__name__}: {exc}")
    return results


def _ping(exchange: Exchange, node: int, rounds: int, timeout: float) -> dict[str, float]:
    """`rounds` handshake round trips to one node: the Flower carrier's own latency, without
    any party work (a benchmark figure; 0 rounds = skipped)."""
    from sim.flower_app.records import HELLO, hello_request

    if rounds <= 0:
        return {}
    started = time.perf_counter()
    for _ in range(rounds):
        reply = exchange.exchange([(node, HELLO, hello_request())], timeout).get(node)
        if reply is None or reply.error:
            raise RunError(f"Flower node {node} did not answer a ping: {reply.error if reply else 'no reply'}")
    return {"flower_ping_round_trips": float(rounds), "flower_ping_seconds": time.perf_counter() - started}


# ============================================================================ entry point
def prepare_run(
    config,
    run_dir: str | os.PathLike,
    *,
    keys=None,
    quiet: bool = False,
    call_timeout: float = DEFAULT_CALL_TIMEOUT,
    nodes_timeout: float = DEFAULT_NODES_TIMEOUT,
    ping_rounds: int = 0,
) -> Path:
    """Write what the ServerApp needs into `run_dir` (config.json, keys/ for the secure
    channel, flower/settings.json) and return the settings path, the value of the run config
    key `settings` (`flwr run sim/flower_app ... --run-config 'settings="PATH"'`)."""
    from ..engine import Keys, dump_json, select_variants
    from ..scenarios import get_scenario

    config.validate()
    if config.runtime not in FLOWER_RUNTIMES:
        raise RunError(f"the Flower runtimes are {FLOWER_RUNTIMES}, not {config.runtime!r}")
    select_variants(get_scenario(config.scenario), config)  # unknown variants fail before anything starts
    run_dir = Path(run_dir).resolve()
    flower_dir = run_dir / "flower"
    flower_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "config.json").exists():
        dump_json(config.to_json(), run_dir / "config.json")
    keys_dir = None
    if config.channel == "secure":
        keys = keys if keys is not None else Keys.generate()
        keys_dir = run_dir / "keys"
        if not (keys_dir / "registry.json").exists():
            keys.save(keys_dir)
        elif load_keys(keys_dir).registry != keys.registry:
            raise RunError(f"{keys_dir} holds other keys than the ones given; use a fresh run directory")
    (run_dir / "results.json").unlink(missing_ok=True)  # only this run's ServerApp may write it
    settings = {
        "config": config.to_json(),
        "run_dir": str(run_dir),
        "keys_dir": str(keys_dir) if keys_dir else None,
        "call_timeout": float(call_timeout),
        "nodes_timeout": float(nodes_timeout),
        # Deployment: the ServerApp's progress lines go to the flwr run log (echoed unless quiet).
        "progress": config.runtime == "flower-deployment" or not quiet,
        "ping_rounds": int(ping_rounds),
        "launched_at": time.time(),
    }
    path = flower_dir / "settings.json"
    path.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def run_experiment_flower(
    config,
    *,
    run_dir: str | os.PathLike,
    keys=None,
    quiet: bool = False,
    call_timeout: float = DEFAULT_CALL_TIMEOUT,
    nodes_timeout: float = DEFAULT_NODES_TIMEOUT,
    deployment: LocalDeployment | None = None,
    timeout: float | None = None,
    ping_rounds: int = 0,
) -> dict[str, Any]:
    """Run `config` on Flower (`config.runtime` is `flower` or `flower-deployment`); the
    ServerApp writes every output file into `run_dir`. Returns the results dict.

    Raises RunError on failure, after the run directory holds what finished (and a
    results.json with status "failed" and the error). `deployment` (not yet started)
    replaces the default insecure localhost deployment, e.g. one with TLS files; `timeout`
    bounds the whole deployment run; `ping_rounds` > 0 times that many empty round trips to
    a node first (results.json timing `flower_ping_*`)."""
    settings_path = prepare_run(
        config, run_dir, keys=keys, quiet=quiet, call_timeout=call_timeout, nodes_timeout=nodes_timeout, ping_rounds=ping_rounds
    )
    run_dir = settings_path.parents[1]
    for key, value in FLOWER_ENV.items():
        os.environ.setdefault(key, value)
    failure: BaseException | None = None
    try:
        if config.runtime == "flower":
            _simulate(load_settings(settings_path), quiet=quiet)
        else:
            dep = deployment or LocalDeployment(log_dir=settings_path.parent)
            with dep:
                dep.start()
                dep.run_app(APP_DIR, {"settings": str(settings_path)}, timeout=timeout, echo=not quiet)
    except (Exception, KeyboardInterrupt) as exc:
        failure = exc
    results = _collect(config, run_dir, failure)
    if isinstance(failure, KeyboardInterrupt):
        raise failure
    return results


def _collect(config, run_dir: Path, failure: BaseException | None) -> dict[str, Any]:
    """Read what the ServerApp wrote; make sure a failed run leaves a failed results.json
    whose error says why, and raise RunError for it."""
    from ..engine import ExperimentResult
    from ..report import write_outputs
    from ..scenarios import get_scenario

    path = run_dir / "results.json"
    results = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    if failure is None and results is not None:
        if results.get("status") != "complete":
            raise RunError(f"the Flower run failed: {results.get('error')}")
        return results
    # The launcher saw the failure (or the ServerApp wrote nothing): its account comes first.
    error = _describe(failure) if failure is not None else "the Flower ServerApp ended without writing results.json"
    inner = results.get("error") if results else None
    if inner and inner not in error and str(failure) not in inner:
        error += f" (ServerApp: {inner})"
    if results is None:
        write_outputs(ExperimentResult(config=config, scenario=get_scenario(config.scenario), error=error), run_dir)
        results = json.loads(path.read_text(encoding="utf-8"))
    results.update(status="failed", error=error)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if isinstance(failure, KeyboardInterrupt):
        return results
    raise RunError(f"the Flower run failed: {error}")


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    return str(exc) if isinstance(exc, RunError) else f"{type(exc).__name__}: {exc}"


# ============================================================================ simulation
def _simulate(settings: dict[str, Any], *, quiet: bool) -> None:
    import ray

    if ray.is_initialized():
        raise RunError(
            "a Ray instance is already running in this process; the Flower simulation starts and stops its own "
            "(call ray.shutdown() first, or run the simulation in its own process)"
        )
    from flwr.simulation import run_simulation

    from sim.flower_app.client_app import app as client_app
    from sim.flower_app.server_app import make_server_app

    _warm_up(settings)

    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    if quiet:  # Flower's own INFO lines and its run_simulation deprecation notice
        flwr_logger.setLevel(logging.ERROR)
    # Flower appends sys.path to PYTHONPATH for its Ray workers and never restores it.
    pythonpath = os.environ.get("PYTHONPATH")
    abort = threading.Event()
    try:
        run_simulation(
            server_app=make_server_app(settings, abort=abort),
            client_app=client_app,
            num_supernodes=2,
            backend_config=json.loads(json.dumps(SIMULATION_BACKEND)),
        )
    finally:
        abort.set()  # the ServerApp thread stops waiting for nodes that are gone
        if pythonpath is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = pythonpath
        flwr_logger.setLevel(level)
        if ray.is_initialized():
            ray.shutdown()


def _warm_up(settings: dict[str, Any]) -> None:
    """Import and load here what the ServerApp thread needs. run_simulation starts that thread
    and then forks Ray's processes from this one; heavy imports and data loading in the
    thread meanwhile can deadlock the fork (seen: fork_exec waiting while the thread built
    the synthetic dataset). Done here first, the thread only finds them cached."""
    import torch  # noqa: F401

    from .. import engine, report  # noqa: F401
    from ..config import RunConfig
    from ..world import world

    config = RunConfig(**settings["config"])
    for seed in config.seeds:
        world(config.run_dict(seed))


# ============================================================================ deployment
@dataclass(frozen=True)
class TlsFiles:
    """PEM files for TLS on the Flower links (SuperLink <-> SuperNodes and the flwr CLI)."""

    ca_cert: Path  # the CA that signed the SuperLink's certificate (clients verify with it)
    server_cert: Path  # SuperLink certificate; its SANs must cover the address (127.0.0.1)
    server_key: Path


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen
    log_path: Path
    log_file: Any


@dataclass
class LocalDeployment:
    """A SuperLink and one SuperNode per party as separate OS processes on localhost.

    Free ports are chosen automatically; every process gets its own session (process group)
    and an environment tag, so that `stop()` ends them and every process Flower spawned from
    them (SuperExec, ServerApp, ClientApp processes), also after a failure or Ctrl-C.
    """

    roles: tuple[str, ...] = ("source", "target")
    log_dir: Path | None = None
    tls: TlsFiles | None = None
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT
    on_line: Callable[[str], None] | None = None  # called with each line `flwr run` prints
    host: str = "127.0.0.1"
    processes: dict[str, _Process] = field(default_factory=dict, init=False)
    marker: str = field(default_factory=lambda: secrets.token_hex(8), init=False)
    superlink_port: int | None = field(default=None, init=False)
    _home: Path | None = field(default=None, init=False, repr=False)  # FLWR_HOME of this deployment
    _logs: Path | None = field(default=None, init=False, repr=False)

    def __enter__(self) -> LocalDeployment:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ----------------------------------------------------------------- start
    def start(self) -> None:
        if self.processes or self._home is not None:
            raise RunError("this deployment is already started; use a new LocalDeployment per run")
        self._home = Path(tempfile.mkdtemp(prefix="cdrsim-flwr-home-"))
        self._logs = Path(self.log_dir) if self.log_dir else self._home / "logs"
        self._logs.mkdir(parents=True, exist_ok=True)
        try:
            self.superlink_port = _free_port(self.host)
            self._spawn(
                "superlink",
                [
                    _tool("flower-superlink"),
                    *self._server_tls(),
                    "--host",
                    self.host,
                    "--port",
                    str(self.superlink_port),
                    "--disable-runtime-dependency-installation",
                ],
            )
            self._wait_port(self.superlink_port, "superlink")
            address = f"{self.host}:{self.superlink_port}"
            ports = {}
            for role in self.roles:
                ports[role] = _free_port(self.host)
                self._spawn(
                    f"supernode-{role}",
                    [
                        _tool("flower-supernode"),
                        *self._client_tls(),
                        "--superlink",
                        address,
                        "--host",
                        self.host,
                        "--port",
                        str(ports[role]),
                        "--node-config",
                        f'role="{role}"',
                    ],
                )
            for role, port in ports.items():  # started together, waited for together
                self._wait_port(port, f"supernode-{role}")
            self._write_cli_config(address)
        except BaseException:
            self.stop()
            raise

    def _server_tls(self) -> list[str]:
        if self.tls is None:
            return ["--insecure"]
        return [
            "--ssl-ca-certfile",
            str(self.tls.ca_cert),
            "--ssl-certfile",
            str(self.tls.server_cert),
            "--ssl-keyfile",
            str(self.tls.server_key),
        ]

    def _client_tls(self) -> list[str]:
        return ["--insecure"] if self.tls is None else ["--root-certificates", str(self.tls.ca_cert)]

    def _write_cli_config(self, address: str) -> None:
        lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]", f'address = "{address}"']
        if self.tls is None:
            lines.append("insecure = true")
        else:
            lines.append(f"root-certificates = {json.dumps(str(self.tls.ca_cert))}")
        (self._home / "config.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        for key, value in FLOWER_ENV.items():
            env.setdefault(key, value)
        bin_dir = str(Path(sys.executable).parent)
        pythonpath = [str(PROJECT_ROOT), *(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)]
        env.update(
            {
                "FLWR_HOME": str(self._home),  # apps, config and state of this deployment only
                "PYTHONPATH": os.pathsep.join(pythonpath),  # the app imports the cdrsim packages
                "PATH": bin_dir + os.pathsep + env.get("PATH", ""),  # Flower spawns flower-superexec by name
                DEPLOYMENT_MARKER: self.marker,
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def _spawn(self, name: str, argv: list[str], *, stdout: Any = None) -> _Process:
        log_path = self._logs / f"{name}.log"
        log_file = open(log_path, "ab")
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=stdout if stdout is not None else log_file,
            stderr=subprocess.STDOUT,
            env=self._env(),
            cwd=str(self._home),
            start_new_session=True,  # own process group: Ctrl-C goes to us, and we stop them
        )
        proc = _Process(name, popen, log_path, log_file)
        self.processes[name] = proc
        return proc

    def _wait_port(self, port: int, name: str) -> None:
        deadline = time.monotonic() + self.startup_timeout
        proc = self.processes[name]
        while True:
            if proc.popen.poll() is not None:
                raise RunError(f"{name} exited with code {proc.popen.returncode} while starting; {self._tail(proc)}")
            try:
                with socket.create_connection((self.host, port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RunError(f"{name} did not listen on {self.host}:{port} within {self.startup_timeout:.0f}s; {self._tail(proc)}")
            time.sleep(0.1)

    # ----------------------------------------------------------------- run
    def run_app(self, app_dir: Path, run_config: dict[str, str], *, timeout: float | None = None, echo: bool = True) -> None:
        """`flwr run APP CONNECTION --stream`, watching every process while it runs. Raises
        RunError when `flwr run` fails, a SuperLink or SuperNode dies, or `timeout` passes."""
        if not self.processes:
            raise RunError("start() the deployment before run_app()")
        overrides = " ".join(f"{k}={json.dumps(str(v))}" for k, v in run_config.items())
        argv = [_tool("flwr"), "run", str(app_dir), CONNECTION, "--stream", "--run-config", overrides]
        proc = self._spawn("flwr-run", argv, stdout=subprocess.PIPE)
        lines: deque[str] = deque(maxlen=40)

        def pump() -> None:
            assert proc.popen.stdout is not None
            try:
                for raw in proc.popen.stdout:
                    line = raw.decode("utf-8", "replace")
                    proc.log_file.write(raw)
                    proc.log_file.flush()
                    lines.append(line.rstrip())
                    if echo:
                        sys.stderr.write(line)
                        sys.stderr.flush()
                    if self.on_line is not None:
                        try:
                            self.on_line(line)
                        except Exception:  # a broken callback must not stop the pipe (flwr run would block)
                            log.exception("on_line callback failed")
            except (OSError, ValueError):  # stop() closed the pipe
                pass

        reader = threading.Thread(target=pump, name="flwr-run-output", daemon=True)
        reader.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while proc.popen.poll() is None:
            for other in self.processes.values():
                if other is not proc and other.popen.poll() is not None:
                    raise RunError(
                        f"{other.name} (pid {other.popen.pid}) exited with code {other.popen.returncode} during the run; "
                        f"{self._tail(other)}"
                    )
            if deadline is not None and time.monotonic() > deadline:
                raise RunError(f"the Flower deployment run did not finish within {timeout:.0f}s; logs in {self._logs}")
            time.sleep(0.2)
        reader.join(timeout=5)
        if proc.popen.returncode != 0:
            tail = "\n".join(list(lines)[-10:])
            raise RunError(f"flwr run exited with code {proc.popen.returncode}; last output:\n{tail}")

    # ----------------------------------------------------------------- stop
    def stop(self, grace: float = 5.0) -> None:
        """End every process this deployment started, and every process they spawned."""
        if not self.processes and self._home is None:
            return
        procs = list(self.processes.values())
        for proc in reversed(procs):  # flwr run first, the SuperLink last
            _signal_group(proc.popen, signal.SIGTERM)
        for pid in self.leftover_pids():
            _kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (any(p.popen.poll() is None for p in procs) or self.leftover_pids()):
            time.sleep(0.1)
        for proc in procs:
            if proc.popen.poll() is None:
                _signal_group(proc.popen, signal.SIGKILL)
        for pid in self.leftover_pids():
            _kill(pid, signal.SIGKILL)
        for proc in procs:
            try:
                proc.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %s) did not exit after SIGKILL", proc.name, proc.popen.pid)
            if proc.popen.stdout is not None:
                proc.popen.stdout.close()
            proc.log_file.close()
        deadline = time.monotonic() + grace
        while self.leftover_pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.processes.clear()
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None

    def leftover_pids(self) -> list[int]:
        """Live processes tagged with this deployment's marker (Flower's spawned processes
        included: they inherit the environment)."""
        return _tagged_pids(f"{DEPLOYMENT_MARKER}={self.marker}".encode())

    def _tail(self, proc: _Process, n: int = 8) -> str:
        try:
            proc.log_file.flush()
            text = proc.log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-n:]
        except OSError:
            text = []
        return f"log {proc.log_path}" + (":\n  " + "\n  ".join(text) if text else " is empty")


def _tool(name: str) -> str:
    """A Flower command from this interpreter's environment (the venv), else from PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RunError(f"cannot find the Flower command {name!r}; install flwr[simulation]==1.41.0 in this environment")
    return found


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _signal_group(popen: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(popen.pid, sig)  # start_new_session: the group id is the pid
    except (ProcessLookupError, PermissionError):
        pass


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _tagged_pids(tag: bytes) -> list[int]:
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if tag in (entry / "environ").read_bytes().split(b"\0"):
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":  # a zombie is already dead; its parent reaps it
                    found.append(int(entry.name))
        except (OSError, IndexError):
            continue
    return found


# ============================================================================ manual runs
def main(argv: list[str] | None = None) -> int:
    """`python -m sim.runtimes.flower --run-dir DIR [sim.run options]`: prepare a run for
    your own SuperLink and SuperNodes and print the `flwr run` command that starts it."""
    from ..run import build_parser, config_from_args

    parser = build_parser()
    parser.prog = "python -m sim.runtimes.flower"
    parser.description = "Prepare a cdrsim run for a Flower deployment you started yourself."
    parser.add_argument("--run-dir", required=True, help="where the ServerApp writes the run's outputs")
    parser.add_argument("--connection", default="local", help="SuperLink connection name in $FLWR_HOME/config.toml")
    args = parser.parse_args(argv)
    if not args.scenario:
        parser.error("--scenario is required")
    args.runtime = "flower-deployment"
    path = prepare_run(config_from_args(args), args.run_dir)
    print(f"flwr run {APP_DIR} {args.connection} --stream --run-config 'settings={json.dumps(str(path))}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
