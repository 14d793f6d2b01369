"""The Flower runtimes: the same parties and bytes as in-process, over Flower.

Fast tests put an in-process stand-in for the Grid (`LocalExchange`) in front of the real
ClientApp code (`client_app.Node`), which forwards every request to real party host processes,
so that batching, keys, rejections, the role handshake and the hosts' lifecycle are checked in
seconds. The slow tests run the real thing: Flower's simulation engine, and a SuperLink with
two SuperNodes as separate OS processes, on the secure channel, with every RecordDict that
crosses the SuperLink inspected for private keys.
"""

from __future__ import annotations

import ast
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict

from parties.base import COORDINATOR, artifact_chunks
from protocol import ErrorCode, Identity, Message, ProtocolError, Registry, peek_header
from sim.api import run
from sim.config import RunConfig
from sim.coordinator import Relay, Transcript, start_parties
from sim.engine import channel_config, party_specs
from sim.errors import RunError
from sim.flower_app import client_app, ipc, party_host
from sim.flower_app.records import (
    CLOSE,
    DELIVER,
    HELLO,
    START,
    WIRE,
    CarrierError,
    DeliverRequest,
    Hello,
    HelloRequest,
    StartRequest,
)
from sim.runtimes.flower import FlowerRuntime, LocalDeployment, NodeReply, Settings, discover_nodes, run_experiment_flower
from sim.runtimes.flower.__main__ import main as prepare_manual_run
from sim.runtimes.flower.coordinator import serve
from sim.runtimes.flower.launch import prepare_run
from sim.runtimes.inproc import InprocRuntime

ROOT = Path(__file__).resolve().parents[1]
# BPR-MF training is bitwise reproducible only with one torch thread (parallel index backward
# sums in a varying order), and these tests compare bytes: every run here uses one thread.
THREADS = 1
CHUNK_BYTES = 4096  # artifacts in many small chunks, so that a party puts several envelopes on the wire at once


@pytest.fixture(autouse=True)
def _one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


_SYNTHETIC = dict(
    scenario="embeddings",
    dataset="synthetic",
    synthetic={"n_users": 400, "n_items": 300, "mean_interactions": 40, "signal": 2.0, "seed": 0},
    seeds=[0],
    quick=True,
    channel="plaintext",
    torch_threads=THREADS,
)


def _config(**overrides):
    return RunConfig(**{**_SYNTHETIC, **overrides})


# ----------------------------------------------------------------------------- stand-in Grid
class LocalExchange:
    """Nodes in this process, a stand-in for the Grid: each node answers with the real
    ClientApp code (`client_app.Node`), which forwards to a real party host process. Every
    RecordDict is serialized both ways, as Flower does for the SuperLink, and kept."""

    def __init__(self, node_configs: dict[int, dict], directory: Path, *, run_id: int | None = None, warm: bool = True):
        self.run_id = run_id if run_id is not None else secrets.randbelow(2**62)
        self.nodes = {
            n: client_app.Node(dict(cfg), ipc.HostLink(self.run_id, n, directory=directory), watch_pid=os.getpid())
            for n, cfg in node_configs.items()
        }
        self.warm = warm
        self.sent: list[tuple[int, str, int]] = []  # (node, type, envelopes)
        self.records: list[bytes] = []

    def node_ids(self) -> list[int]:
        return list(self.nodes)

    def exchange(self, requests, timeout):
        replies = {}
        for node_id, mtype, content in requests:
            self.records.append(recorddict_to_proto(content).SerializeToString())
            node = self.nodes[node_id]
            try:
                if mtype == HELLO:
                    request = HelloRequest.from_content(content)
                    reply = node.hello(request if self.warm else HelloRequest(warm=False))
                elif mtype == START:
                    reply = node.start(StartRequest.from_content(content))
                elif mtype == DELIVER:
                    request = DeliverRequest.from_content(content)
                    self.sent.append((node_id, mtype, len(request.envelopes)))
                    reply = node.deliver(request)
                elif mtype == CLOSE:
                    reply = node.close()
                else:
                    raise AssertionError(mtype)
            except Exception as exc:  # what Flower does with a ClientApp exception
                replies[node_id] = NodeReply(node_id, error=f"{type(exc).__name__}: {exc}")
                continue
            content = reply.to_content()
            self.records.append(recorddict_to_proto(content).SerializeToString())
            replies[node_id] = NodeReply(node_id, content=content)
        return replies


@pytest.fixture(scope="module")
def host_dir():
    """A private, short directory for the party hosts' sockets; every host still running at
    the end is asked to exit (they also watch this pytest process)."""
    directory = Path(tempfile.mkdtemp(prefix="cdrsim-t-"))
    yield directory
    for sock in directory.glob("*.sock"):
        run, node = sock.stem[1:].split("-n")
        try:
            ipc.HostLink(int(run), int(node), directory=directory).request({"op": "exit"}, timeout=30)
        except ipc.IpcError:
            pass
    shutil.rmtree(directory, ignore_errors=True)


_SMALL_CHUNKS_HOST = (
    "import sys, parties.base as b\n"
    "b.artifact_chunks.__kwdefaults__ = {**b.artifact_chunks.__kwdefaults__, 'chunk_bytes': int(sys.argv[1])}\n"
    "from sim.flower_app.party_host import main\n"
    "sys.exit(main(sys.argv[2:]))\n"
)


@pytest.fixture(scope="module")
def nodes(host_dir, tmp_path_factory):
    """Two party hosts of one 'run', pinned to source and target, each with its own key file,
    started as the ClientApp would start them but with small artifact chunks. Shared by the
    tests that do not end their hosts."""
    keys = tmp_path_factory.mktemp("node-keys")
    run_id = secrets.randbelow(2**62)
    configs = {}
    procs = []
    for node, role in ((11, "source"), (22, "target")):
        key_file = keys / f"{role}.key"
        Identity.generate().save(key_file)
        configs[node] = {"role": role, "key-file": str(key_file)}
        paths = ipc.HostPaths.of(run_id, node, host_dir)
        argv = ["--socket", str(paths.socket), "--log", str(paths.log), "--watch-pid", str(os.getpid())]
        argv += ["--role", role, "--key-file", str(key_file)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        procs.append(subprocess.Popen([sys.executable, "-c", _SMALL_CHUNKS_HOST, str(CHUNK_BYTES), *argv], env=env))
    for node in configs:
        link = ipc.HostLink(run_id, node, directory=host_dir)
        deadline = time.monotonic() + 60
        while not link.running():
            assert time.monotonic() < deadline, "party host did not start"
            time.sleep(0.05)
    yield run_id, configs
    for node in configs:
        try:
            ipc.HostLink(run_id, node, directory=host_dir).request({"op": "exit"}, timeout=30)
        except ipc.IpcError:
            pass
    for p in procs:
        p.wait(timeout=30)


@pytest.fixture
def small_chunks(monkeypatch):
    """The same small chunks in this process (the in-process reference)."""
    monkeypatch.setattr(artifact_chunks, "__kwdefaults__", {**artifact_chunks.__kwdefaults__, "chunk_bytes": CHUNK_BYTES})


def _drive(config, runtime, *, variant="transfer"):
    """One task through the relay (no attacks): outcome, transcript, tapped bytes, receiver view."""
    scenario = config.validate()
    chosen = {v.name: v for v in scenario.variants(config.quick)}[variant]
    tapped: list[bytes] = []
    transcript = Transcript(context={"seed": 0, "variant": variant})
    try:
        coordinator = start_parties(runtime, party_specs(config, scenario, chosen, 0), channel_config(config, 0))
        relay = Relay(runtime, coordinator, taps=[tapped.append], transcript=transcript)
        outcome = scenario.drive(relay, chosen)
        view = runtime.receiver_view(scenario.receiver)
    finally:
        runtime.stop()
    return outcome, transcript.lines, tapped, view


def _flower_runtime(exchange, **kwargs):
    found = discover_nodes(exchange, ["source", "target"], timeout=5)
    return FlowerRuntime(exchange, found, torch_threads=THREADS, **kwargs)


# Header fields an eavesdropper reads off the secure channel: all but session ids and digests.
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


def _pick(lines):
    return [{k: line.get(k) for k in _SECURE_FIELDS} for line in lines]


def _private_forms(key_file: Path) -> list[bytes]:
    """Every encoding of a private key worth looking for: raw, hex, PKCS#8 DER and PEM."""
    raw = Identity.load(key_file).private_bytes()
    key = Ed25519PrivateKey.from_private_bytes(raw)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return [raw, raw.hex().encode(), der, key_file.read_bytes().strip()]


# ----------------------------------------------------------------------------- fast tests
def test_same_bytes_as_inproc_with_batching(nodes, host_dir, small_chunks):
    run_id, configs = nodes
    config = _config()
    reference = _drive(config, InprocRuntime())
    exchange = LocalExchange(configs, host_dir, run_id=run_id)
    runtime = _flower_runtime(exchange)
    outcome, lines, tapped, view = _drive(config, runtime)

    assert outcome.utility == reference[0].utility
    assert lines == reference[1]  # every header field, size and sha256, in the same order
    assert tapped == reference[2]  # the eavesdropper at the relay got exactly the same bytes
    assert view == reference[3]
    chunks = sum(1 for line in lines if line["type"] == "artifact")
    assert chunks > 3
    # The chunks went to the target in one Flower message, and were still relayed one by one.
    assert (22, DELIVER, chunks) in exchange.sent
    assert runtime.stats.batched == chunks - 1
    assert runtime.stats.envelopes == len(lines) - sum(1 for line in lines if line["receiver"] == COORDINATOR)
    assert sum(n for _, _, n in exchange.sent) == runtime.stats.envelopes > len(exchange.sent)


def test_secure_channel_keys_stay_on_the_nodes(nodes, host_dir, small_chunks):
    """Each party loads its key from its node's key file; the coordinator gets public keys
    only, pins them, and no private key is in any record that crosses."""
    run_id, configs = nodes
    config = _config(channel="secure")
    reference = _drive(config, InprocRuntime())
    exchange = LocalExchange(configs, host_dir, run_id=run_id)
    public = {cfg["role"]: Identity.load(cfg["key-file"]).public_bytes() for cfg in configs.values()}
    runtime = _flower_runtime(exchange, expected_public_keys=public)
    outcome, lines, tapped, view = _drive(config, runtime)

    assert outcome.utility == reference[0].utility  # results do not depend on key bytes
    assert _pick(lines) == _pick(reference[1]) and {x["suite"] for x in lines} == {"secure"}
    assert len(view) == len(reference[3])
    crossed = b"".join(exchange.records)
    for cfg in configs.values():
        for form in _private_forms(Path(cfg["key-file"])):
            assert form not in crossed
        assert cfg["key-file"].encode() not in crossed  # not even where the key file is
    for key in public.values():
        assert key in crossed  # what does travel: the public keys, at start and in the registry

    # A node whose key is not the one pinned for it fails the run.
    wrong = _flower_runtime(LocalExchange(configs, host_dir, run_id=run_id), expected_public_keys={"source": public["target"]})
    with pytest.raises(RunError, match="reported identity public key .* but the key pinned for it"):
        _drive(config, wrong)


def test_rejection_comes_back_as_the_same_protocol_error(nodes, host_dir):
    run_id, configs = nodes
    config = _config()
    scenario = config.validate()
    variant = scenario.variants(True)[0]
    runtime = _flower_runtime(LocalExchange(configs, host_dir, run_id=run_id))
    inproc = InprocRuntime()
    coordinator = start_parties(runtime, party_specs(config, scenario, variant, 0), channel_config(config, 0))
    start_parties(inproc, party_specs(config, scenario, variant, 0), channel_config(config, 0))

    def control() -> bytes:
        (envelope,) = coordinator.send(Message(type="control", sender=COORDINATOR, receiver="target", meta={"op": "nope"}))
        return envelope

    envelope = control()
    assert runtime.call("target", envelope, "coordinator") == inproc.call("target", envelope, "coordinator")  # an error report
    with pytest.raises(ProtocolError) as flower_error:
        runtime.call("target", envelope, "coordinator")  # the same envelope again: a replay
    with pytest.raises(ProtocolError) as inproc_error:
        inproc.call("target", envelope, "coordinator")
    assert flower_error.value.code == inproc_error.value.code == ErrorCode.REPLAY
    assert flower_error.value.detail == inproc_error.value.detail
    assert flower_error.value.charged_to == inproc_error.value.charged_to
    # The rejection did not change the party's state: the next message is still accepted.
    nxt = control()
    assert runtime.call("target", nxt, "coordinator") == inproc.call("target", nxt, "coordinator")
    runtime.stop()


def test_unknown_party_and_unanswered_node(nodes, host_dir):
    run_id, configs = nodes

    class Silent(LocalExchange):
        def exchange(self, requests, timeout):
            return {} if requests[0][1] == DELIVER else super().exchange(requests, timeout)

    config = _config()
    scenario = config.validate()
    runtime = _flower_runtime(Silent(configs, host_dir, run_id=run_id), call_timeout=0.1)
    coordinator = start_parties(runtime, party_specs(config, scenario, scenario.variants(True)[0], 0), channel_config(config, 0))
    with pytest.raises(RunError, match="no party named 'mallory'"):
        runtime.call("mallory", b"")
    with pytest.raises(RunError, match=r"party 'source' \(Flower node 11\) sent no reply to 'deliver'"):
        Relay(runtime, coordinator).request("source", "train")
    runtime.stop()


def test_node_refuses_foreign_factories_other_roles_and_key_files(nodes, host_dir):
    run_id, configs = nodes
    node = LocalExchange(configs, host_dir, run_id=run_id).nodes[22]  # pinned to target
    config = _config()
    scenario = config.validate()
    spec = {s.name: s for s in party_specs(config, scenario, scenario.variants(True)[0], 0)}
    with pytest.raises(client_app.NodeError, match="plays 'target'"):
        node.start(StartRequest("g/1", "source", spec["source"].factory, spec["source"].config))
    with pytest.raises(client_app.NodeError, match="refusing party factory 'os:system'"):
        node.start(StartRequest("g/1", "target", "os:system", spec["target"].config))
    chosen = {**spec["target"].config, "channel": {**spec["target"].config["channel"], "identity_file": "/etc/hostname"}}
    with pytest.raises(client_app.NodeError, match="comes only from its own node config"):
        node.start(StartRequest("g/1", "target", spec["target"].factory, chosen))
    with pytest.raises(client_app.NodeError, match="holds .*not task 'g/404'"):
        node.deliver(DeliverRequest("g/404", [b"x"], ["coordinator"]))


def test_role_handshake(host_dir):
    def roles(configs):
        found = discover_nodes(LocalExchange(configs, host_dir, warm=False), ["source", "target"], timeout=0.2)
        return {r: (n.node_id, n.pinned) for r, n in found.items()}

    assert roles({5: {"partition-id": 1}, 9: {"partition-id": 0}}) == {"source": (9, False), "target": (5, False)}
    assert roles({5: {"role": "source"}, 9: {"role": "target"}}) == {"source": (5, True), "target": (9, True)}
    with pytest.raises(RunError, match="both claim role 'source'"):
        roles({5: {"role": "source"}, 9: {"role": "source"}})
    with pytest.raises(RunError, match="claims role 'bystander'"):
        roles({5: {"role": "bystander"}, 9: {}})
    with pytest.raises(RunError, match=r"only 1 of 2 Flower nodes connected"):
        roles({5: {}})
    hello = Hello.from_content(Hello("target", 3, os.getpid(), 0).to_content())
    assert (hello.role, hello.partition, hello.pid) == ("target", 3, os.getpid())


def test_carrier_and_ipc_versions_are_checked(nodes, host_dir):
    content = HelloRequest().to_content()
    content.config_records["cdrsim.request"]["wire"] = "cdrsim-flower/1"
    with pytest.raises(CarrierError, match=f"is not '{WIRE}'"):
        HelloRequest.from_content(content)
    with pytest.raises(CarrierError, match="no ConfigRecord 'cdrsim.request'"):
        StartRequest.from_content(Hello("", 0, 0).to_content())
    reply = party_host.PartyHost().handle({"op": "frobnicate"})
    assert reply == {"ok": False, "error": "unknown party host request 'frobnicate'"}
    run_id, configs = nodes
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:  # a ClientApp of another version
        sock.connect(str(ipc.HostPaths.of(run_id, 11, host_dir).socket))
        ipc.send_frame(sock, {"ipc": "cdrsim-party-host/0", "op": "ping"})
        answer = ipc.recv_frame(sock)
    assert answer["ok"] is False and "speaks 'cdrsim-party-host/1'" in answer["error"]


def test_party_host_lifecycle(host_dir, tmp_path):
    """A node's first request starts its host (in a private directory); the host ends when
    asked, when the process it watches ends, or when idle; a request after that is a clear error."""
    watched = subprocess.Popen(["sleep", "120"])
    try:
        run_id = secrets.randbelow(2**62)
        asked = client_app.Node({}, ipc.HostLink(run_id, 1, directory=host_dir), watch_pid=os.getpid())
        orphan = client_app.Node({}, ipc.HostLink(run_id, 2, directory=host_dir), watch_pid=watched.pid)
        idle = client_app.Node({}, ipc.HostLink(run_id, 3, directory=host_dir), watch_pid=os.getpid())
        pids = {
            "asked": asked.hello(HelloRequest()).host_pid,
            "orphan": orphan.hello(HelloRequest()).host_pid,
            "idle": idle.hello(HelloRequest(idle_timeout=1.0)).host_pid,
        }
        assert os.stat(host_dir).st_mode & 0o777 == 0o700
        assert asked.hello(HelloRequest()).host_pid == pids["asked"]  # found, not started again
        assert asked.close().host_pid == pids["asked"]
        watched.kill()
        deadline = time.monotonic() + 60
        while any(_alive(pid) for pid in pids.values()):
            assert time.monotonic() < deadline, {k: _alive(p) for k, p in pids.items()}
            time.sleep(0.1)
        for node in (asked, orphan, idle):
            assert not node.link.paths.socket.exists() and not node.link.paths.log.exists()  # a normal end leaves nothing
        assert asked.close().host_pid == 0
        with pytest.raises(client_app.NodeError, match="no party host is running for this node"):
            asked.deliver(DeliverRequest("g/1", [], []))
    finally:
        watched.kill()
        watched.wait()


def _alive(pid: int) -> bool:
    ipc.reap_spawned()  # our own children: reap them, or they linger as zombies
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_socket_directory_must_be_private(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    monkeypatch.setenv(ipc.DIR_ENV, str(shared))
    with pytest.raises(ipc.IpcError, match="mode 0700"):
        ipc.host_dir()


def test_serverapp_failure_leaves_a_failed_run_directory(host_dir, tmp_path):
    """The ServerApp's own work (`serve`) on in-process nodes: a party that fails ends the run
    with its error, results.json says so, and the run's party hosts end."""
    config = _config(runtime="flower", variants=["transfer"], options={"epochs": 0})
    settings = Settings.load(prepare_run(config, tmp_path / "run", quiet=True))
    exchange = LocalExchange({1: {"role": "source"}, 2: {"role": "target"}}, host_dir)
    with pytest.raises(RunError, match="party 'source' failed at step 'train'"):
        serve(exchange, settings)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "failed" and "epochs" in results["error"]
    assert not any(node.link.running() for node in exchange.nodes.values())  # closed at the end of the run


def test_prepare_a_manual_deployment_run(tmp_path, capsys):
    key = Identity.generate().public_bytes().hex()
    argv = [
        "--run-dir",
        str(tmp_path / "run"),
        "--scenario",
        "embeddings",
        "--quick",
        "--variants",
        "transfer",
        "--pin-key",
        f"source={key}",
    ]
    assert prepare_manual_run(argv) == 0
    command = capsys.readouterr().out
    settings_path = tmp_path / "run" / "flower" / "settings.json"
    assert command.startswith("flwr run ") and f'settings="{settings_path}"' in command
    settings = Settings.load(settings_path)
    assert settings.config["runtime"] == "flower-deployment" and settings.config["variants"] == ["transfer"]
    assert settings.expected_public_keys == {"source": key}
    assert not (tmp_path / "run" / "keys").exists()  # no key material in the run directory


def test_one_engine_and_no_import_cycle():
    """The Flower code runs the engine's loop: no module of the Flower runtime or app imports
    the launcher side (sim.api, sim.cli, sim.run) but `python -m sim.runtimes.flower`, and
    nothing imports the ServerApp module."""
    launcher = {"sim.api", "sim.cli", "sim.run"}
    files = [*sorted((ROOT / "sim" / "runtimes" / "flower").glob("*.py")), *sorted((ROOT / "sim" / "flower_app").glob("*.py"))]
    for path in files:
        package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.rsplit(".", node.level - 1)[0] if node.level else ""
                module = ".".join(x for x in (base, node.module) if x)
                imported.add(module)
                imported.update(f"{module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        if path.name != "__main__.py":
            assert not imported & launcher, f"{path.name} imports {imported & launcher}"
        assert "sim.flower_app.server_app" not in imported, path
    assert "run_experiment" in (ROOT / "sim" / "runtimes" / "flower" / "coordinator.py").read_text()


# ----------------------------------------------------------------------------- slow: real Flower
def _run_dir(root: Path) -> Path:
    (run_dir,) = [p for p in root.iterdir() if p.is_dir()]
    return run_dir


def _per_seed(results: dict) -> list:
    """Every figure of every (variant, seed): utility, details, attacks, what was observed;
    wall-clock timings left out."""
    return [
        _figures((v["name"], ps["seed"], ps["utility"], ps["details"], ps["attacks"], ps["observed"], ps["messages"]))
        for v in results["variants"]
        for ps in v["per_seed"]
    ]


def _figures(obj):
    if isinstance(obj, dict):
        return {k: _figures(v) for k, v in obj.items() if "timing" not in k and "seconds" not in k}
    if isinstance(obj, (list, tuple)):
        return [_figures(v) for v in obj]
    return obj


def _transcript(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "transcript.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def inproc_reference(tmp_path_factory):
    """The in-process runs every Flower run must reproduce (same seed, same data), by channel."""
    cache: dict[str, tuple[dict, list[dict]]] = {}

    def get(channel: str) -> tuple[dict, list[dict]]:
        if channel not in cache:
            out = tmp_path_factory.mktemp(f"inproc-{channel}")
            run(_config(channel=channel, out=str(out)), quiet=True)
            run_dir = _run_dir(out)
            cache[channel] = json.loads((run_dir / "results.json").read_text()), _transcript(run_dir)
        return cache[channel]

    return get


def _check_equal(run_dir: Path, reference, runtime: str, channel: str, variants: list[str] | None) -> dict:
    results = json.loads((run_dir / "results.json").read_text())
    expected_results, expected_transcript = reference(channel)
    chosen = variants or [v["name"] for v in expected_results["variants"]]
    expected_transcript = [line for line in expected_transcript if line["variant"] in chosen]
    assert results["status"] == "complete" and results["runtime"] == runtime and results["channel"] == channel
    assert _per_seed(results) == [row for row in _per_seed(expected_results) if row[0] in chosen]  # utility and attacks
    if channel == "plaintext":  # every header field, size and sha256, in the same order
        assert _transcript(run_dir) == expected_transcript
    else:
        assert _pick(_transcript(run_dir)) == _pick(expected_transcript)
        assert {line["suite"] for line in expected_transcript} == {"secure"}
    for name in ("metrics.csv", "report.html", "config.json"):
        assert (run_dir / name).stat().st_size > 0
    assert results["timing"]["flower_round_trips"] >= 4
    return results


def _crossed(record_dir: Path) -> tuple[bytes, list]:
    """Every RecordDict that crossed (raw protobuf bytes), and every (field name, value) in
    them, JSON strings opened."""
    raw, fields = [], []

    def walk(name, value):
        fields.append((name, value))
        if isinstance(value, str) and value[:1] == "{":
            try:
                value = json.loads(value)
            except ValueError:
                return
        if isinstance(value, dict):
            for k, v in value.items():
                walk(k, v)
        elif isinstance(value, list):
            for v in value:
                walk(name, v)

    files = sorted(record_dir.glob("*.pb"))
    assert files
    for path in files:
        data = path.read_bytes()
        raw.append(data)
        for key, record in recorddict_from_proto(ProtoRecordDict.FromString(data)).items():
            for field, value in record.items():
                walk(f"{key}.{field}", value)
    return b"".join(raw), fields


def _assert_hosts_ended(record_dir: Path, timeout: float = 30.0) -> None:
    """The party hosts the nodes reported (handshake and start replies) are gone."""
    _, fields = _crossed(record_dir)
    pids = {int(v) for name, v in fields if name == "cdrsim.reply.host_pid" and v}
    assert pids
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"party hosts still running: {[p for p in pids if _alive(p)]}"
        time.sleep(0.2)


def _assert_no_private_keys(record_dir: Path) -> None:
    """No field named like a private key; every bytes value is an envelope or a public key
    the run's registry pins."""
    _, fields = _crossed(record_dir)
    names = {name.lower() for name, _ in fields}
    assert not [n for n in names if "private" in n or "secret" in n or n in ("identity_file", "key-file")], names
    registries = [Registry.from_json(v) for n, v in fields if n.endswith(".registry") and v]
    pinned = {registry.get(name) for registry in registries for name in registry.names()}
    assert registries and len(pinned) >= 3  # the parties' and the coordinator's
    for name, value in fields:
        if isinstance(value, bytes):
            if name.endswith(".public_key"):
                assert value in pinned
            else:
                peek_header(value)  # a protocol envelope (or a receiver-view envelope)


@pytest.mark.slow
def test_flower_simulation_equals_inproc(inproc_reference, tmp_path):
    run(_config(runtime="flower", out=str(tmp_path)), quiet=True)
    _check_equal(_run_dir(tmp_path), inproc_reference, "flower", "plaintext", None)


@pytest.mark.slow
def test_flower_simulation_secure_keeps_private_keys_on_the_nodes(inproc_reference, tmp_path):
    variants = ["transfer", "popularity"]
    run_dir = tmp_path / "run"
    run_experiment_flower(
        _config(runtime="flower", channel="secure", variants=variants), run_dir=run_dir, quiet=True, record_dir=tmp_path / "records"
    )
    _check_equal(run_dir, inproc_reference, "flower", "secure", variants)
    _assert_no_private_keys(tmp_path / "records")
    _assert_hosts_ended(tmp_path / "records")


@pytest.mark.slow
def test_secure_deployment_equals_inproc_and_keeps_private_keys_on_the_nodes(inproc_reference, tmp_path):
    """A real SuperLink and SuperNodes on the secure channel: the same results as in-process;
    no private key (the nodes' key files hold them) in anything that crossed the SuperLink;
    no process left behind."""
    variants = ["transfer"]
    deployment = LocalDeployment(log_dir=tmp_path / "logs", key_dir=tmp_path / "keys")
    run_dir = tmp_path / "run"
    config = _config(runtime="flower-deployment", channel="secure", variants=variants)
    results = run_experiment_flower(
        config, run_dir=run_dir, quiet=True, deployment=deployment, record_dir=tmp_path / "records", timeout=600
    )
    _check_equal(run_dir, inproc_reference, "flower-deployment", "secure", variants)
    assert results["timing"]["flower_envelopes"] > 0
    crossed, _ = _crossed(tmp_path / "records")
    for role in ("source", "target"):
        key_file = tmp_path / "keys" / role / "identity.key"
        assert key_file.stat().st_mode & 0o777 == 0o600 and key_file.parent.stat().st_mode & 0o777 == 0o700
        for form in _private_forms(key_file):
            assert form not in crossed
        assert Identity.load(key_file).public_bytes() in crossed  # the party used its node's key file
    _assert_no_private_keys(tmp_path / "records")
    _assert_hosts_ended(tmp_path / "records", timeout=0)
    assert (tmp_path / "logs" / "supernode-source.log").exists()
    assert deployment.leftover_pids() == [] and deployment.processes == {}


@pytest.mark.slow
def test_dead_supernode_ends_the_run_cleanly(tmp_path):
    config = _config(runtime="flower-deployment", variants=["transfer"])
    deployment = LocalDeployment(log_dir=tmp_path / "logs")
    killed: list[int] = []

    def kill_source(line: str) -> None:
        if "seed 0 · transfer" in line and not killed:  # the ServerApp started the first task
            node = deployment.processes["supernode-source"].popen
            killed.append(node.pid)
            os.killpg(node.pid, signal.SIGKILL)

    deployment.on_line = kill_source
    run_dir = tmp_path / "run"
    with pytest.raises(RunError, match=r"supernode-source \(pid \d+\) exited with code -9 during the run") as failure:
        run_experiment_flower(config, run_dir=run_dir, quiet=True, deployment=deployment, timeout=300, record_dir=tmp_path / "records")
    assert killed
    assert "supernode-source.log" in str(failure.value)
    assert deployment.leftover_pids() == [] and deployment.processes == {}
    _assert_hosts_ended(tmp_path / "records", timeout=0)  # the party hosts the handshake started
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "failed" and "supernode-source" in results["error"]


# ----------------------------------------------------------------------------- slow: many client parties
_MANY = dict(
    scenario="privacy-budget",
    dataset="synthetic",
    synthetic={"n_users": 150, "n_items": 500, "mean_interactions": 40, "signal": 2.0, "seed": 0},
    seeds=[0],
    channel="plaintext",
    variants=["beta=0.5,model=metamf"],
    torch_threads=THREADS,
    options={"epochs": 3, "patience": 1, "hidden": 16, "user_dim": 8, "memory": 16, "item_dim": 8, "batch_size": 128, "lr": 3e-3},
)


def _rating_figures(results: dict) -> list:
    """Every figure of every (variant, seed) but timings and the number of clients."""
    rows = []
    for v in results["variants"]:
        for ps in v["per_seed"]:
            details = {k: x for k, x in ps["details"].items() if k != "clients"}
            rows.append(_figures((v["name"], ps["seed"], ps["utility"], ps["utility_groups"], details, ps["attacks"])))
    return rows


@pytest.mark.slow
def test_many_client_parties_on_the_flower_simulation_equal_one_in_process(tmp_path):
    """privacy-budget with its users spread over 4 client parties, each its own virtual
    SuperNode (5 with the server): the results of one client in process, bit for bit. The
    server's requests to all clients travel in one exchange, and so do all clients' answers."""
    run(RunConfig(**_MANY, out=str(tmp_path / "inproc")), quiet=True)
    many = RunConfig(**{**_MANY, "options": {**_MANY["options"], "clients": 4}}, runtime="flower", out=str(tmp_path / "flower"))
    run(many, quiet=True)
    expected = json.loads((_run_dir(tmp_path / "inproc") / "results.json").read_text())
    results = json.loads((_run_dir(tmp_path / "flower") / "results.json").read_text())
    assert results["status"] == "complete" and results["runtime"] == "flower"
    assert results["variants"][0]["per_seed"][0]["details"]["clients"] == 4
    assert _rating_figures(results) == _rating_figures(expected)
    timing = results["timing"]
    # one exchange each: the requests to the 4 clients, then every epoch's and the test's predictions
    assert timing["flower_fanned_out"] >= 4 * (1 + 1 + 1)
    assert timing["flower_round_trips"] < timing["flower_messages"]
