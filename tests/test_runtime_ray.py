"""The Ray runtime (`--runtime ray`): parties and the eavesdropper as Ray actors.

One multi-node Ray cluster (`ray.cluster_utils.Cluster`: a head offering the custom resource
`coordinator`, two worker nodes offering `party_source` / `party_target`) serves every test but
the local-mode one, which starts and closes its own private Ray in a subprocess (a process
holds one Ray connection at a time). The cluster lives as long as this module, so that its
processes do not idle on the 2 cores while the rest of the suite runs.

Starting a party actor costs a few seconds (a new worker process imports torch), so after the
end-to-end engine test, most tests share one runtime that keeps its actors between variants
(`reuse_actors=True`); the tests that break a party come last, since a failed variant's actors
are killed rather than kept.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import ray
from ray.exceptions import RayActorError
from run_helpers import run_inline

from attacks.tap import Eavesdropper
from parties.base import COORDINATOR, DEFAULT_CHUNK_BYTES
from protocol import Message, ProtocolError, peek_header
from sim.coordinator import Relay, Transcript, start_parties
from sim.engine import channel_config, party_specs, run_experiment
from sim.errors import RunError
from sim.executors import InlineExecutor
from sim.runtimes.inproc import InprocRuntime
from sim.runtimes.ray import EAVESDROPPER, RayRuntime, describe_step, session_processes
from sim.scenarios import get_scenario
from sim.world import world

# Every test here is slow: the module's 3-node cluster starts for the first one, whichever it is.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PLACEMENT = {"source": "party_source", "target": "party_target", EAVESDROPPER: "coordinator"}
# Transcript fields an eavesdropper reads off the secure channel (everything but the digest).
HEADER_FIELDS = ("index", "type", "sender", "receiver", "suite", "epoch", "seq", "round", "op", "artifact", "size", "body_length", "status")


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    if ray.is_initialized():  # another test module left a connection: runtimes must join ours
        ray.shutdown()
    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "resources": {"coordinator": 1}, "include_dashboard": False},
    )
    source = c.add_node(num_cpus=1, resources={"party_source": 1})
    target = c.add_node(num_cpus=1, resources={"party_target": 1})
    # Not connected here: a RayRuntime joins with the address, as `--ray-address` does (and
    # ships the project's code with its job).
    try:
        yield SimpleNamespace(
            cluster=c,
            address=c.address,
            node={"source": source.node_id, "target": target.node_id, EAVESDROPPER: c.head_node.node_id},
        )
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Bit-for-bit comparisons need one torch thread on both sides: BPR-MF training on two
    threads differs in the last float bits from run to run, even in-process."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shared(cluster):
    """One runtime on the cluster whose healthy actors carry over from test to test."""
    runtime = RayRuntime(address=cluster.address, placement=dict(PLACEMENT), torch_threads=1, reuse_actors=True)
    runtime.connect()
    yield runtime
    runtime.close()


def _attack_metrics(run):
    return {t: {a: run.attacks[t]["attribute"][a]["final"]["metrics"] for a in ("gender", "age_group")} for t in run.attacks}


def _files(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` (relative path -> bytes)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _specs(config, variant_name="transfer", only=None):
    scenario = get_scenario(config.scenario)
    variant = {v.name: v for v in scenario.variants(config.quick)}[variant_name]
    specs = party_specs(config, scenario, variant, config.seeds[0])
    return scenario, variant, [s for s in specs if only is None or s.name in only]


def _plain_coordinator(config):
    """The coordinator's endpoint on the plaintext suite (no keys to pin: runtime.start is enough)."""
    return channel_config(config, 0).endpoint(COORDINATOR, None)


def _drive(runtime, config, variant_name="transfer", steps=None):
    """One variant through a relay, as the engine does, without the (slow) attack step."""
    scenario, variant, specs = _specs(config, variant_name)
    wire, receiver = Eavesdropper("wire"), Eavesdropper("receiver")
    coordinator = start_parties(runtime, specs, channel_config(config, 0))
    relay = Relay(runtime, coordinator, taps=[runtime.tap(wire.observe)], transcript=Transcript())
    try:
        outcome = steps(relay) if steps else scenario.drive(relay, variant)
        receiver.observe_many(runtime.receiver_view("target"), point="receiver")
    finally:
        runtime.stop()
    return outcome, relay.transcript, wire, receiver


# --------------------------------------------------------------------------- the engine, end to end
def test_embeddings_on_two_nodes_equals_inproc(cluster, synthetic_config, tmp_path):
    inproc = run_inline(synthetic_config(torch_threads=1), out_dir=tmp_path / "inproc")
    config = synthetic_config(runtime="ray", ray_address=cluster.address, placement=dict(PLACEMENT), torch_threads=1)
    runtime = RayRuntime(address=cluster.address, placement=dict(PLACEMENT), torch_threads=1)
    on_ray = run_experiment(config, InlineExecutor(runtime), out_dir=tmp_path / "ray")

    # It joined the cluster (shipping our code with its job), disconnected, left the cluster up.
    assert runtime.started_local is False and not ray.is_initialized() and runtime.torch_threads == 1
    assert cluster.cluster.remaining_processes_alive()
    assert len(runtime.history) == 3  # fresh actors per variant, each on its pinned node
    for nodes in runtime.history:
        assert nodes == cluster.node
    assert cluster.node["source"] != cluster.node["target"]

    assert [r.variant.name for r in on_ray.runs] == ["transfer", "target-only", "popularity"]
    for a, b in zip(inproc.runs, on_ray.runs, strict=True):
        assert b.utility == a.utility
        assert _attack_metrics(b) == _attack_metrics(a)
        assert b.transcript == a.transcript  # every header field and sha256
    # What the eavesdroppers captured (the wire one via the tap actor), byte for byte.
    captured = _files(tmp_path / "ray" / "intercepted")
    assert captured == _files(tmp_path / "inproc" / "intercepted")
    index = json.loads(captured["transfer/seed0/wire/index.json"])
    assert len(index["intercepts"]) == len(on_ray.runs[0].transcript) > 0
    assert "transfer/seed0/wire/artifact-user_embeddings.safetensors" in captured


# --------------------------------------------------------------------------- bytes through actors
def test_tap_actor_records_exact_bytes_in_order(cluster):
    runtime = RayRuntime(address=cluster.address, placement={EAVESDROPPER: "coordinator"})
    runtime.connect()
    got: list[bytes] = []
    tap = runtime.tap(got.append)
    tap.max_in_flight = 8  # exercise the back-pressure path
    rng = np.random.default_rng(7)
    sent = [rng.bytes(int(n)) for n in rng.integers(0, 300_000, size=120)] + [b"", rng.bytes(3 << 20)]
    for envelope in sent:
        tap(memoryview(envelope))  # any bytes-like: the actor records bytes
    assert tap.sent == len(sent) and got == []  # asynchronous until flushed
    runtime.flush_taps()
    assert got == sent
    tap(b"late")
    runtime.stop()  # stop flushes too
    assert got == [*sent, b"late"]
    runtime.close()


def test_protocol_errors_come_back_as_the_same_protocol_error(shared, synthetic_config):
    config = synthetic_config()
    _, _, specs = _specs(config)
    inproc = InprocRuntime()
    inproc.start(specs)
    shared.start(specs)
    try:
        coordinator = _plain_coordinator(config)
        (ping,) = coordinator.send(Message(type="control", sender=COORDINATOR, receiver="target", meta={"op": "nope"}))
        # The same valid envelope reaches both (same reply bytes), then bad ones are rejected alike.
        assert shared.call("target", ping) == inproc.call("target", ping)
        bad = [b"not an envelope", ping[: len(ping) // 2], ping, bytearray(ping)]  # garbage, truncated, replayed x2
        for envelope in bad:
            with pytest.raises(ProtocolError) as in_proc:
                inproc.call("target", envelope)
            with pytest.raises(ProtocolError) as via_ray:
                shared.call("target", envelope)
            assert type(via_ray.value) is ProtocolError
            assert (via_ray.value.code, via_ray.value.detail, via_ray.value.sender) == (
                in_proc.value.code,
                in_proc.value.detail,
                in_proc.value.sender,
            )
        assert shared.receiver_view("target") == inproc.receiver_view("target") == []
        with pytest.raises(RunError, match=r"no party named 'nobody'"):
            shared.call("nobody", ping)
        actors = dict(shared.actors)
    finally:
        inproc.stop()
        shared.stop()
    # A clean variant keeps its actors for the next one, with fresh parties in them.
    assert shared._idle_parties == actors
    shared.start(specs)
    assert shared.actors == actors
    assert shared.call("target", ping)  # the replayed envelope is new to the fresh party
    shared.stop()


def test_secure_channel_on_cluster_matches_inproc_headers_and_sizes(cluster, shared, synthetic_config):
    config = synthetic_config(channel="secure")
    a_outcome, a_lines, _, a_receiver = _drive(InprocRuntime(), config)
    b_outcome, b_lines, b_wire, b_receiver = _drive(shared, config)
    assert shared.history[-1] == cluster.node
    assert b_outcome.utility == a_outcome.utility
    lines_a = [{k: line.get(k) for k in HEADER_FIELDS} for line in a_lines.lines]
    lines_b = [{k: line.get(k) for k in HEADER_FIELDS} for line in b_lines.lines]
    assert lines_b == lines_a
    assert {line["suite"] for line in b_lines.lines} == {"secure"}
    # Through Ray as in-process, the wire tap decodes nothing of the secure channel, while the
    # target (curious receiver) holds the same plaintext artifacts.
    assert b_wire.artifacts() == {} and len(b_wire) == len(lines_b)
    a_art, b_art = (r.artifacts()["user_embeddings"] for r in (a_receiver, b_receiver))
    np.testing.assert_array_equal(b_art.arrays["embedding"], a_art.arrays["embedding"])
    np.testing.assert_array_equal(b_art.user_ids, a_art.user_ids)


def test_artifacts_stay_in_bounded_chunks_through_ray(shared, synthetic_config):
    config = synthetic_config()
    n_users = world(config.run_dict(0)).split.source.n_users
    # Embeddings wide enough that the artifact is ~1.3 chunks of 4 MiB.
    dim = int(1.3 * DEFAULT_CHUNK_BYTES / n_users / 4)
    config = synthetic_config(options={"dim": dim, "epochs": 1, "patience": 1})

    def release(relay):  # the transfer up to the target's absorb (its fit is not needed here)
        relay.request_one("source", "train")
        relay.request("source", "release", to="target")

    _, a_lines, _, _ = _drive(InprocRuntime(), config, steps=release)
    _, b_lines, b_wire, b_receiver = _drive(shared, config, steps=release)
    artifacts = [line for line in b_lines.lines if line["type"] == "artifact"]
    assert len(artifacts) == 2
    assert max(line["size"] for line in b_lines.lines) <= DEFAULT_CHUNK_BYTES + 64 * 1024
    assert b_lines.lines == a_lines.lines  # the same envelopes as in-process, sha256 included
    # The tap actor handed the eavesdropper exactly what the target accepted.
    art = b_wire.artifacts()["user_embeddings"]
    assert art.complete and art.arrays["embedding"].shape == (n_users, dim)
    np.testing.assert_array_equal(art.arrays["embedding"], b_receiver.artifacts()["user_embeddings"].arrays["embedding"])


def test_describe_step_reads_only_the_cleartext_header(synthetic_config):
    config = synthetic_config()
    plain = _plain_coordinator(config)
    (env,) = plain.send(Message(type="control", sender=COORDINATOR, receiver="target", meta={"op": "fit"}))
    assert describe_step(env).startswith("'fit' (control message seq 1 from 'coordinator'")
    assert describe_step(b"junk").startswith("'deliver' (unparseable envelope")


# --------------------------------------------------------------------------- failures
def test_placement_errors_are_clear(cluster, synthetic_config):
    _, _, specs = _specs(synthetic_config())
    with pytest.raises(RunError, match=r"'sauce'.*valid: source, target, eavesdropper"):
        RayRuntime(placement={"sauce": "party_source"}).start(specs)  # checked before Ray starts
    runtime = RayRuntime(address=cluster.address, placement={"target": "gpu_island"})
    with pytest.raises(RunError, match=r"no node of this Ray cluster offers .*'gpu_island' \(for target\).*ray start"):
        runtime.start(specs)
    runtime.close()


def test_party_that_fails_to_build_names_party_and_start(cluster, synthetic_config):
    _, _, specs = _specs(synthetic_config(), only={"target"})
    broken = [type(s)(s.name, "sim.party_factory:no_such_factory", s.config) for s in specs]
    runtime = RayRuntime(address=cluster.address, placement={"target": "party_target"})
    with pytest.raises(RunError, match=r"party 'target' failed at step 'start'.*AttributeError.*no_such_factory"):
        runtime.start(broken)
    assert runtime.actors == {}
    runtime.close()


@pytest.mark.timeout(180)
def test_removed_node_gives_run_error(cluster, synthetic_config):
    doomed = cluster.cluster.add_node(num_cpus=1, resources={"party_doomed": 1})
    config = synthetic_config()
    _, _, specs = _specs(config, only={"target"})
    runtime = RayRuntime(address=cluster.address, placement={"target": "party_doomed"}, torch_threads=1, call_timeout=60)
    try:
        runtime.start(specs)
        assert runtime.nodes["target"] == doomed.node_id

        def remove(envelope: bytes) -> None:  # the node goes away just before the step reaches it
            cluster.cluster.remove_node(doomed)

        relay = Relay(runtime, _plain_coordinator(config), taps=[remove], transcript=Transcript())
        started = time.monotonic()
        with pytest.raises(RunError) as info:
            relay.request("target", "fit", mode="target-only")
        assert time.monotonic() - started < 60
        assert "party 'target' failed at step 'fit'" in str(info.value) and "died" in str(info.value)
    finally:
        runtime.close()
        if doomed in cluster.cluster.worker_nodes:
            cluster.cluster.remove_node(doomed)


@pytest.mark.timeout(180)
def test_killed_target_gives_run_error_naming_party_and_step(shared, synthetic_config):
    config = synthetic_config()
    scenario, variant, specs = _specs(config)
    shared.start(specs)
    seen: list[bytes] = []
    wire = shared.tap(seen.append)
    target, source = shared.actor("target"), shared.actor("source")

    def killer(envelope: bytes) -> None:
        # The first envelope for the target is the artifact: kill the target before it arrives.
        if peek_header(envelope)["receiver"] == "target" and not killer.done:
            killer.done = True
            ray.kill(target, no_restart=True)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # wait until Ray reports it dead
                try:
                    ray.get(target.info.remote(), timeout=5)
                except RayActorError:
                    return
                time.sleep(0.1)

    killer.done = False
    relay = Relay(shared, _plain_coordinator(config), taps=[wire, killer], transcript=Transcript())
    started = time.monotonic()
    try:
        with pytest.raises(RunError) as info:
            scenario.drive(relay, variant)
    finally:
        shared.stop()
    message = str(info.value)
    assert "party 'target' failed at step 'artifact user_embeddings chunk 0/1'" in message and "died" in message
    assert time.monotonic() - started < 60
    # stop() handed the eavesdropper everything that went on the wire, then killed the failed
    # variant's actors instead of keeping them.
    assert len(seen) == relay.messages and seen
    assert shared._idle_parties == {}
    # ray.kill is asynchronous: a call made at once may still be served; within seconds none is.
    deadline = time.monotonic() + 30
    with pytest.raises(RayActorError):
        while time.monotonic() < deadline:
            ray.get(source.info.remote(), timeout=5)
            time.sleep(0.1)


@pytest.mark.timeout(180)
def test_call_timeout_names_party_and_step(shared, synthetic_config):
    config = synthetic_config()
    _, _, specs = _specs(config)
    shared.call_timeout = 2.0
    shared.start(specs)
    pid = shared.pids["target"]
    relay = Relay(shared, _plain_coordinator(config), transcript=Transcript())
    os.kill(pid, signal.SIGSTOP)  # a hung party: the process is alive but never answers
    try:
        started = time.monotonic()
        with pytest.raises(RunError) as info:
            relay.request("target", "fit", mode="target-only")
        assert time.monotonic() - started < 30
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        shared.call_timeout = 600.0
        shared.stop()
    message = str(info.value)
    assert "party 'target' failed at step 'fit'" in message and "no answer within 2s" in message


# --------------------------------------------------------------------------- local mode
LOCAL_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    sys.path.insert(0, {root!r})
    import ray
    from sim.config import RunConfig
    from sim.engine import party_specs
    from sim.runtimes.ray import RayRuntime, session_processes
    from sim.scenarios import get_scenario

    idle = RayRuntime()
    idle.close()  # never started: must not start Ray either
    out = {{"initialized_after_idle_close": ray.is_initialized()}}

    config = RunConfig(**json.loads({config!r}))
    scenario = get_scenario(config.scenario)
    variant = scenario.variants(True)[0]
    runtime = RayRuntime(torch_threads=2)
    runtime.start([s for s in party_specs(config, scenario, variant, 0) if s.name == "target"])
    seen = []
    runtime.tap(seen.append)(b"x")
    running = session_processes(runtime.session_name)
    out.update(started_local=runtime.started_local, running=len(running),
               actors_in_session=all(pid in running for pid in runtime.pids.values()),
               initialized_while_running=ray.is_initialized(), nodes=sorted(set(runtime.nodes.values())))
    runtime.close()
    out["seen"] = len(seen)
    out["initialized_after_close"] = ray.is_initialized()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and [p for p in running if p in session_processes(runtime.session_name)]:
        time.sleep(0.2)
    out["left_behind"] = [p for p in running if p in session_processes(runtime.session_name)]
    out["session"] = runtime.session_name
    print("RESULT " + json.dumps(out))
    """
)


def test_local_mode_start_close_leaves_nothing_behind(synthetic_config):
    config = synthetic_config()
    script = LOCAL_SCRIPT.format(root=str(ROOT), config=json.dumps(config.to_json()))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # cwd "/": the workers must get our code from the job (py_modules), not from the cwd.
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=150, env=env, cwd="/")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT ") :])
    assert out["initialized_after_idle_close"] is False
    assert out["started_local"] is True and out["initialized_while_running"] is True
    assert out["running"] >= 3 and out["actors_in_session"]  # GCS, raylet, the actors' workers
    assert len(out["nodes"]) == 1
    assert out["seen"] == 1  # close() flushed the tap into its observer
    assert out["initialized_after_close"] is False
    assert out["left_behind"] == []
    assert session_processes(out["session"]) == []  # and nothing of it outlived the driver
