"""The Flower runtimes: the same parties and bytes as in-process, over Flower.

Fast tests drive the real ClientApp code (`sim.flower_app.client_app.serve`) through an
in-process stand-in for the Grid, so that batching, replay-based state restore, rejections and
the role handshake are checked in seconds. The slow tests run the real thing: Flower's
simulation engine, and a SuperLink with two SuperNodes as separate OS processes.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from flwr.app import RecordDict

from parties.base import artifact_chunks
from protocol import ErrorCode, ProtocolError
from sim.engine import Keys, coordinator_endpoint, party_specs
from sim.flower_app import client_app
from sim.flower_app.records import DELIVER, HELLO, DeliverRequest, Hello
from sim.runtimes.base import Relay, RunError, Transcript
from sim.runtimes.flower import (
    FlowerRuntime,
    LocalDeployment,
    NodeReply,
    discover_nodes,
    run_experiment_flower,
)
from sim.runtimes.inproc import InprocRuntime
from sim.scenarios import get_scenario

# BPR-MF training is bitwise reproducible only with one torch thread (parallel index backward
# sums in a varying order), and these tests compare bytes: every run here uses one thread.
THREADS = 1


@pytest.fixture(autouse=True)
def _one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def synthetic_config(synthetic_config):
    def make(scenario: str = "embeddings", **overrides):
        return synthetic_config(scenario, **{"torch_threads": THREADS, **overrides})

    return make


# ----------------------------------------------------------------------------- stand-in Grid
class LocalExchange:
    """Nodes in this process: each has a node config and a Context.state, like a SuperNode.

    `forget=True` drops the process-level party cache before every message, as a deployment
    does (a fresh ClientApp process per message), so every call rebuilds the party by replay."""

    def __init__(self, node_configs: dict[int, dict], *, forget: bool = False, run_id: int = 7):
        self.configs = node_configs
        self.states = {n: RecordDict() for n in node_configs}
        self.forget = forget
        self.run_id = run_id
        self.sent: list[tuple[int, str, int]] = []  # (node, type, envelopes)

    def node_ids(self) -> list[int]:
        return list(self.configs)

    def exchange(self, requests, timeout):
        replies = {}
        for node, mtype, content in requests:
            if self.forget:
                client_app._HOSTED.clear()
            try:
                if mtype == HELLO:
                    replies[node] = NodeReply(node, content=client_app.hello_reply(self.configs[node]).to_content())
                elif mtype == DELIVER:
                    request = DeliverRequest.from_content(content)
                    self.sent.append((node, mtype, len(request.envelopes)))
                    reply = client_app.serve(request, self.states[node], host_key=(self.run_id, node), node_config=self.configs[node])
                    replies[node] = NodeReply(node, content=reply.to_content())
            except Exception as exc:  # what Flower does with a ClientApp exception
                replies[node] = NodeReply(node, error=f"{type(exc).__name__}: {exc}")
        return replies


def _drive(config, runtime, *, variant="transfer", keys=None):
    """One variant through the relay (no attacks): outcome, transcript, tapped bytes, receiver view."""
    scenario = get_scenario(config.scenario)
    chosen = {v.name: v for v in scenario.variants(config.quick)}[variant]
    tapped: list[bytes] = []
    transcript = Transcript(context={"seed": 0, "variant": variant})
    runtime.start(party_specs(config, scenario, chosen, 0, keys))
    relay = Relay(runtime, coordinator_endpoint(config, 0, keys), taps=[tapped.append], transcript=transcript)
    try:
        outcome = scenario.drive(relay, chosen)
        view = runtime.receiver_view("target")
    finally:
        runtime.stop()
    return outcome, transcript.lines, tapped, view


def _flower_runtime(exchange, **kwargs):
    nodes = discover_nodes(exchange, ["source", "target"], timeout=5)
    return FlowerRuntime(exchange, nodes, torch_threads=THREADS, **kwargs)


@pytest.fixture
def small_chunks(monkeypatch):
    """Artifacts in many small chunks, so that a party puts several envelopes on the wire for
    the same receiver at once (what the runtime batches)."""
    monkeypatch.setattr(artifact_chunks, "__kwdefaults__", {**artifact_chunks.__kwdefaults__, "chunk_bytes": 4096})


# ----------------------------------------------------------------------------- fast tests
def test_same_bytes_as_inproc_with_batching_and_replay(synthetic_config, small_chunks):
    config = synthetic_config()
    reference = _drive(config, InprocRuntime())
    exchange = LocalExchange({101: {"partition-id": 0}, 202: {"partition-id": 1}}, forget=True)
    runtime = _flower_runtime(exchange)
    outcome, lines, tapped, view = _drive(config, runtime)

    assert outcome.utility == reference[0].utility
    assert lines == reference[1]  # every header field, size and sha256, in the same order
    assert tapped == reference[2]  # the eavesdropper at the relay got exactly the same bytes
    assert view == reference[3]
    chunks = sum(1 for line in lines if line["type"] == "artifact")
    assert chunks > 3
    # The chunks went to the target in one Flower message, and were still relayed one by one.
    assert (202, DELIVER, chunks) in exchange.sent
    assert runtime.stats.batched == chunks - 1
    assert runtime.stats.round_trips == len(exchange.sent) < runtime.stats.envelopes
    # Every message rebuilt its party from Context.state (deployment-like), and it still matched.
    assert runtime.stats.replayed > 0


def test_cached_parties_are_not_replayed(synthetic_config):
    config = synthetic_config()
    runtime = _flower_runtime(LocalExchange({1: {"partition-id": 0}, 2: {"partition-id": 1}}))
    outcome, lines, _, _ = _drive(config, runtime)
    assert runtime.stats.replayed == 0
    reference = _drive(config, InprocRuntime())
    assert outcome.utility == reference[0].utility and lines == reference[1]


def test_secure_channel_survives_replay(synthetic_config):
    """A rebuilt party must reproduce its handshake (ephemeral keys) or the session breaks."""
    config = synthetic_config(channel="secure")
    keys = Keys.generate()
    reference = _drive(config, InprocRuntime(), keys=keys)
    runtime = _flower_runtime(LocalExchange({1: {"role": "source"}, 2: {"role": "target"}}, forget=True))
    outcome, lines, tapped, _ = _drive(config, runtime, keys=keys)
    assert runtime.stats.replayed > 0
    assert outcome.utility == reference[0].utility
    fields = ("type", "sender", "receiver", "suite", "epoch", "seq", "round", "size", "body_length", "status")
    assert [{k: x[k] for k in fields} for x in lines] == [{k: x[k] for k in fields} for x in reference[1]]
    assert {x["suite"] for x in lines} == {"secure"}
    # Fresh ephemeral keys on the coordinator: same shapes, different bytes.
    assert tapped != reference[2]


def test_rejection_comes_back_as_the_same_protocol_error(synthetic_config):
    config = synthetic_config()
    runtime = _flower_runtime(LocalExchange({1: {}, 2: {}}, forget=True))
    scenario = get_scenario("embeddings")
    variant = scenario.variants(True)[0]
    runtime.start(party_specs(config, scenario, variant, 0, None))
    inproc = InprocRuntime()
    inproc.start(party_specs(config, scenario, variant, 0, None))
    coordinator = coordinator_endpoint(config, 0, None)
    from protocol import Message

    (envelope,) = coordinator.send(Message(type="control", sender="coordinator", receiver="target", meta={"op": "nope"}))
    assert runtime.call("target", envelope) == inproc.call("target", envelope)  # an error report
    with pytest.raises(ProtocolError) as flower_error:
        runtime.call("target", envelope)  # the same envelope again: a replay
    with pytest.raises(ProtocolError) as inproc_error:
        inproc.call("target", envelope)
    assert flower_error.value.code == inproc_error.value.code == ErrorCode.REPLAY
    assert flower_error.value.detail == inproc_error.value.detail
    # The rejection did not change the party's state: the next message is still accepted.
    (nxt,) = coordinator.send(Message(type="control", sender="coordinator", receiver="target", meta={"op": "nope"}))
    assert runtime.call("target", nxt) == inproc.call("target", nxt)


def test_role_handshake():
    assert {
        r: n.node_id
        for r, n in discover_nodes(LocalExchange({5: {"partition-id": 1}, 9: {"partition-id": 0}}), ["source", "target"]).items()
    } == {"source": 9, "target": 5}
    pinned = discover_nodes(LocalExchange({5: {"role": "source"}, 9: {"role": "target"}}), ["source", "target"])
    assert (pinned["source"].node_id, pinned["source"].pinned) == (5, True)
    with pytest.raises(RunError, match="both claim role 'source'"):
        discover_nodes(LocalExchange({5: {"role": "source"}, 9: {"role": "source"}}), ["source", "target"])
    with pytest.raises(RunError, match="claims role 'bystander'"):
        discover_nodes(LocalExchange({5: {"role": "bystander"}, 9: {}}), ["source", "target"])
    with pytest.raises(RunError, match=r"only 1 of 2 Flower nodes connected"):
        discover_nodes(LocalExchange({5: {}}), ["source", "target"], timeout=0.2)


def test_node_refuses_foreign_factories_and_other_roles(synthetic_config):
    config = synthetic_config()
    scenario = get_scenario("embeddings")
    spec = party_specs(config, scenario, scenario.variants(True)[0], 0, None)[0]
    request = DeliverRequest("g/1", spec.name, spec.factory, spec.config, [])
    with pytest.raises(client_app.NodeError, match="plays 'target'"):
        client_app.serve(request, RecordDict(), host_key=(1, 1), node_config={"role": "target"})
    foreign = DeliverRequest("g/1", spec.name, "os:system", spec.config, [])
    with pytest.raises(client_app.NodeError, match="refusing party factory 'os:system'"):
        client_app.serve(foreign, RecordDict(), host_key=(1, 1), node_config={})


def test_node_detects_a_history_that_does_not_replay(synthetic_config):
    config = synthetic_config()
    exchange = LocalExchange({1: {}, 2: {}}, forget=True)
    runtime = _flower_runtime(exchange)
    scenario = get_scenario("embeddings")
    runtime.start(party_specs(config, scenario, scenario.variants(True)[0], 0, None))
    coordinator = coordinator_endpoint(config, 0, None)
    from protocol import Message

    def control() -> bytes:
        (envelope,) = coordinator.send(Message(type="control", sender="coordinator", receiver="target", meta={"op": "nope"}))
        return envelope

    runtime.call("target", control())  # one envelope in the target's history (answered with an error report)
    state = exchange.states[runtime.nodes["target"].node_id]
    state.config_records[client_app.STATE_KEY]["digest"] = "00" * 32  # as if it had answered otherwise
    with pytest.raises(RunError, match="not deterministic given its seed"):
        runtime.call("target", control())


def test_unknown_party_and_unanswered_node(synthetic_config):
    class Silent(LocalExchange):
        def exchange(self, requests, timeout):
            return {} if requests[0][1] == DELIVER else super().exchange(requests, timeout)

    config = synthetic_config()
    runtime = _flower_runtime(Silent({1: {}, 2: {}}), call_timeout=0.1)
    scenario = get_scenario("embeddings")
    runtime.start(party_specs(config, scenario, scenario.variants(True)[0], 0, None))
    with pytest.raises(RunError, match="no party named 'mallory'"):
        runtime.call("mallory", b"")
    relay = Relay(runtime, coordinator_endpoint(config, 0, None))
    with pytest.raises(RunError, match=r"party 'source' \(Flower node \d+\) sent no reply"):
        relay.request("source", "train")


def test_serverapp_failure_leaves_a_failed_run_directory(synthetic_config, tmp_path):
    """The ServerApp's own logic (coordinate) on in-process nodes: a party that fails ends
    the run with its error, and results.json says so."""
    from sim.runtimes.flower import coordinate, load_settings, prepare_run

    config = synthetic_config(runtime="flower", variants=["transfer"], options={"epochs": 0})
    settings = load_settings(prepare_run(config, tmp_path / "run", quiet=True))
    with pytest.raises(RunError, match="party 'source' failed at step 'train'"):
        coordinate(LocalExchange({1: {"role": "source"}, 2: {"role": "target"}}), settings)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "failed" and "epochs" in results["error"]


def test_prepare_a_manual_deployment_run(tmp_path, capsys):
    from sim.runtimes.flower import load_keys, main

    assert main(["--run-dir", str(tmp_path / "run"), "--scenario", "embeddings", "--quick", "--variants", "transfer"]) == 0
    command = capsys.readouterr().out
    settings_path = tmp_path / "run" / "flower" / "settings.json"
    assert command.startswith("flwr run ") and f'settings="{settings_path}"' in command
    settings = json.loads(settings_path.read_text())
    assert settings["config"]["runtime"] == "flower-deployment" and settings["config"]["variants"] == ["transfer"]
    keys = load_keys(settings["keys_dir"])  # secure channel by default: the run's keys are there
    assert sorted(keys.identities) == ["coordinator", "source", "target"]


def test_hello_round_trip():
    content = client_app.hello_reply({"role": "target", "partition-id": 3}).to_content()
    hello = Hello.from_content(content)
    assert (hello.role, hello.partition, hello.pid) == ("target", 3, os.getpid())


# ----------------------------------------------------------------------------- slow: real Flower
def _run_dir(root: Path) -> Path:
    (run_dir,) = [p for p in root.iterdir() if p.is_dir()]
    return run_dir


def _per_seed(results: dict) -> list:
    return [
        (v["name"], ps["seed"], ps["utility"], ps["details"], ps["attacks"], ps["observed"], ps["messages"])
        for v in results["variants"]
        for ps in v["per_seed"]
    ]


def _transcript(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "transcript.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def inproc_reference(tmp_path_factory):
    """The in-process runs every Flower run must reproduce (same seed, same data), by channel."""
    from sim.config import RunConfig
    from sim.run import execute

    cache: dict[str, tuple[dict, list[dict]]] = {}

    def get(channel: str) -> tuple[dict, list[dict]]:
        if channel not in cache:
            out = tmp_path_factory.mktemp(f"inproc-{channel}")
            assert execute(RunConfig(**{**_SYNTHETIC, "channel": channel, "out": str(out)}), quiet=True) == 0
            run_dir = _run_dir(out)
            cache[channel] = json.loads((run_dir / "results.json").read_text()), _transcript(run_dir)
        return cache[channel]

    return get


# Fresh identity and ephemeral keys per run: on the secure channel, bytes differ but every
# cleartext header field and every size must be the same.
_SECURE_FIELDS = (
    "seed",
    "variant",
    "index",
    "type",
    "sender",
    "receiver",
    "suite",
    "epoch",
    "seq",
    "round",
    "op",
    "artifact",
    "size",
    "body_length",
    "status",
)


_SYNTHETIC = dict(
    scenario="embeddings",
    dataset="synthetic",
    synthetic={"n_users": 400, "n_items": 300, "mean_interactions": 40, "signal": 2.0, "seed": 0},
    seeds=[0],
    quick=True,
    channel="plaintext",
    torch_threads=THREADS,
)


@pytest.mark.slow
@pytest.mark.parametrize("runtime, channel", [("flower", "plaintext"), ("flower-deployment", "plaintext"), ("flower", "secure")])
def test_flower_run_equals_inproc(runtime, channel, inproc_reference, tmp_path):
    from sim.config import RunConfig
    from sim.run import execute

    # Deployment pays a SuperNode poll and a fresh ClientApp process per message: two of the
    # three variants (both parties, an artifact, and a party restarted for the next variant).
    # The secure run checks the source-target handshake and artifact: the transfer variant.
    variants = {"flower-deployment": ["transfer", "popularity"]}.get(runtime, ["transfer"] if channel == "secure" else None)
    config = RunConfig(**{**_SYNTHETIC, "runtime": runtime, "channel": channel, "out": str(tmp_path), "variants": variants})
    assert execute(config, quiet=True) == 0
    run_dir = _run_dir(tmp_path)
    results = json.loads((run_dir / "results.json").read_text())
    expected_results, expected_transcript = inproc_reference(channel)
    chosen = variants or [v["name"] for v in expected_results["variants"]]
    expected_transcript = [line for line in expected_transcript if line["variant"] in chosen]
    assert results["status"] == "complete" and results["runtime"] == runtime and results["channel"] == channel
    assert _per_seed(results) == [row for row in _per_seed(expected_results) if row[0] in chosen]
    if channel == "plaintext":  # every header field, size and sha256, in the same order
        assert _transcript(run_dir) == expected_transcript
    else:
        pick = lambda lines: [{k: line.get(k) for k in _SECURE_FIELDS} for line in lines]  # noqa: E731
        assert pick(_transcript(run_dir)) == pick(expected_transcript)
        assert {line["suite"] for line in expected_transcript} == {"secure"}
    for name in ("metrics.csv", "report.html", "config.json"):
        assert (run_dir / name).stat().st_size > 0
    assert results["timing"]["flower_round_trips"] >= 4
    if runtime == "flower-deployment":
        assert (run_dir / "flower" / "supernode-source.log").exists()


@pytest.mark.slow
def test_dead_supernode_ends_the_run_cleanly(synthetic_config, tmp_path):
    config = synthetic_config(runtime="flower-deployment", variants=["transfer"])
    deployment = LocalDeployment(log_dir=tmp_path / "logs")
    killed: list[int] = []

    def kill_source(line: str) -> None:
        if "seed 0 · transfer" in line and not killed:  # the ServerApp started the first variant
            node = deployment.processes["supernode-source"].popen
            killed.append(node.pid)
            os.killpg(node.pid, signal.SIGKILL)

    deployment.on_line = kill_source
    run_dir = tmp_path / "run"
    with pytest.raises(RunError, match=r"supernode-source \(pid \d+\) exited with code -9 during the run") as failure:
        run_experiment_flower(config, run_dir=run_dir, quiet=True, deployment=deployment, timeout=240)
    assert killed
    assert "supernode-source.log" in str(failure.value)
    assert deployment.leftover_pids() == [] and deployment.processes == {}
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "failed" and "supernode-source" in results["error"]
