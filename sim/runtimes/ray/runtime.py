"""The Ray runtime itself: actors placed, parties loaded, envelopes carried, the tap flushed."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from protocol import ErrorCode, ProtocolError, peek_header

from ...errors import RunError
from ..base import Observer, PartySpec, Runtime
from .actors import DEFAULT_CALL_TIMEOUT, EAVESDROPPER, PartyActor, RayTap, TapActor
from .processes import short_error

log = logging.getLogger(__name__)

DEFAULT_START_TIMEOUT = 120.0  # seconds for the actors to be placed and to build their parties
LOCAL_NUM_CPUS = 2
LOCAL_OBJECT_STORE_BYTES = 384 * 1024 * 1024  # Ray's default (30% of RAM) is far too much for a run
PLACEMENT_FRACTION = 0.01  # of a custom resource per actor, so many actors fit on one node
PROJECT_PACKAGES = ("protocol", "models", "parties", "attacks", "sim")
# Environment of a private local Ray (setdefault: a user's own settings win).
LOCAL_ENV = {
    "RAY_AUTH_MODE": "disabled",  # newer Ray defaults to token auth; a private local Ray needs none
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",  # never rebuild the environment with uv for workers
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",  # CPU only; silences a FutureWarning
}


class RayRuntime(Runtime):
    """Parties as Ray actors, locally (a private Ray started for the run) or on a Ray cluster."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        placement: dict[str, str] | None = None,
        *,
        call_timeout: float | None = DEFAULT_CALL_TIMEOUT,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        reuse_actors: bool = False,
        num_cpus: int = LOCAL_NUM_CPUS,
        object_store_memory: int = LOCAL_OBJECT_STORE_BYTES,
        actor_num_cpus: float = 0.0,
        torch_threads: int | None = None,
        ship_code: bool = True,
        runtime_env: dict[str, Any] | None = None,
    ):
        """
        address: None starts a private local Ray for the run; `auto`, `ray://host:port` or
            `host:port` joins that cluster (never shut down by this runtime).
        placement: party (or `eavesdropper`) -> custom resource name; that actor is placed only
            on nodes offering the resource.
        call_timeout: seconds one `call` may take before a RunError (None: wait forever).
        start_timeout: seconds for the actors to be placed and to build their parties.
        reuse_actors: False kills every actor in `stop()`, so each variant starts in new worker
            processes. True keeps the actor processes for the next variant and only drops the
            parties (each variant still builds fresh parties): saves the ~4 s per actor that a
            new worker spends importing torch. An actor that failed is never reused.
        num_cpus, object_store_memory: of the private local Ray only.
        actor_num_cpus: CPUs each actor reserves (0: parties take turns; 2 cores suffice).
        torch_threads: torch intra-op threads in each party actor (None: leave Ray's default).
        ship_code: upload the project's packages (protocol, models, parties, attacks, sim) with
            the job (Ray `py_modules`), so workers import the driver's code wherever they run;
            False relies on them being importable on every node (installed, or the cwd).
        runtime_env: extra Ray runtime_env (merged over the shipped code): for the job when this
            runtime starts or joins Ray, for each actor when the process was already connected.
        """
        self.address = address or None
        self.placement = {str(k): str(v) for k, v in (placement or {}).items()}
        for key, resource in self.placement.items():
            if not resource:
                raise RunError(f"placement for {key!r} names no resource; use --placement {key}=RESOURCE")
        self.call_timeout = call_timeout
        self.start_timeout = start_timeout
        self.reuse_actors = reuse_actors
        self.num_cpus = num_cpus
        self.object_store_memory = object_store_memory
        self.actor_num_cpus = actor_num_cpus
        self.torch_threads = torch_threads
        self.ship_code = ship_code
        self.extra_runtime_env = dict(runtime_env or {})
        self.actors: dict[str, Any] = {}  # this variant's party actors
        self.nodes: dict[str, str] = {}  # party (and eavesdropper) -> Ray node id of its actor
        self.pids: dict[str, int] = {}
        self.history: list[dict[str, str]] = []  # `nodes` of every variant, in order
        self.taps: list[RayTap] = []
        self._tap_actors: list[Any] = []  # this variant's tap actors
        self._idle_parties: dict[str, Any] = {}  # party name -> actor kept for the next variant
        self._idle_taps: list[Any] = []  # tap actors ready for the next tap()
        self._tainted = False  # a call failed: do not reuse this variant's actors
        self._connected = False
        self._owns_connection = False  # we called ray.init, so close() calls ray.shutdown
        self.started_local = False  # that ray.init started a private local Ray
        self.session_name: str | None = None
        self.connect_seconds = 0.0
        self._runtime_env: dict[str, Any] | None = None

    # ------------------------------------------------------------------ connection
    def connect(self) -> None:
        """Start or join Ray (idempotent). `start` calls it; call it early to time it apart."""
        if self._connected:
            return
        started = time.perf_counter()
        if ray.is_initialized():
            # Someone (a test, a notebook) already connected this process: use that, leave it up.
            # Its job-level runtime_env is fixed, so our code cannot be shipped with it.
            if self.ship_code:
                log.info("RayRuntime: Ray was already initialized in this process; its job decides what code workers get")
            self._runtime_env = self.extra_runtime_env or None  # actor level
        else:
            self._runtime_env = None  # the job's runtime_env applies to every actor
            for key, value in LOCAL_ENV.items():
                if self.address is None or key != "RAY_AUTH_MODE":  # a cluster's auth is the user's
                    os.environ.setdefault(key, value)
            common: dict[str, Any] = {
                "log_to_driver": False,
                "logging_level": logging.WARNING,
                "runtime_env": self._job_runtime_env(),
            }
            try:
                if self.address is None:
                    ray.init(
                        address="local",
                        num_cpus=self.num_cpus,
                        object_store_memory=self.object_store_memory,
                        include_dashboard=False,
                        **common,
                    )
                    self.started_local = True
                else:
                    ray.init(address=self.address, **common)
            except Exception as exc:
                where = "a local Ray" if self.address is None else f"the Ray cluster at {self.address!r}"
                hint = (
                    " (is the head running? `ray start --head`, then --ray-address auto or HOST:PORT; "
                    "with token auth, the cluster's token must be in ~/.ray/auth_token or RAY_AUTH_TOKEN)"
                    if self.address
                    else ""
                )
                raise RunError(f"could not start or join {where}: {type(exc).__name__}: {exc}{hint}") from exc
            self._owns_connection = True
        self._connected = True
        try:
            self.session_name = ray.get_runtime_context().get_session_name()
        except Exception:  # Ray Client connections do not expose it
            self.session_name = None
        self.connect_seconds = time.perf_counter() - started

    def _job_runtime_env(self) -> dict[str, Any] | None:
        env: dict[str, Any] = {}
        if self.ship_code:
            # The cluster's Python must have the dependencies (torch, numpy, ...); our own code
            # travels with the job (uploaded once, cached by content hash on every node), so
            # each node runs exactly the driver's version. Ray takes local directories only
            # at the job level, hence here and not per actor.
            env["py_modules"] = [_package_dir(p) for p in PROJECT_PACKAGES]
            env["excludes"] = ["__pycache__", "*.pyc"]
        env.update(self.extra_runtime_env)
        return env or None

    # ------------------------------------------------------------------ lifecycle
    def start(self, specs: list[PartySpec]) -> dict[str, bytes]:
        """One actor per party (new, or kept from the last variant); each builds its party
        (and its identity key) and reports its public key."""
        if self.actors:
            raise RunError("RayRuntime.start called while parties are running; call stop() first")
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise RunError(f"party names must be distinct, got {names}")
        unknown = sorted(set(self.placement) - set(names) - {EAVESDROPPER})
        if unknown:
            raise RunError(
                f"--placement names {', '.join(map(repr, unknown))}, which is not a party of this run; "
                f"valid: {', '.join(names + [EAVESDROPPER])}"
            )
        self.connect()
        self._check_resources()
        self._tainted = False
        try:
            for spec in specs:
                self.actors[spec.name] = self._idle_parties.pop(spec.name, None) or self._new(spec.name, PartyActor)
            if not self._idle_taps:  # created alongside the parties: the engine asks for a tap next
                self._idle_taps.append(self._new(EAVESDROPPER, TapActor))
            loads = {
                spec.name: self.actors[spec.name].load.remote(spec.name, spec.factory, spec.config, self.torch_threads) for spec in specs
            }
            # The actors build their parties at once on the same cores: allow the time per pair of parties.
            return self._await_ready(loads, "start", timeout=self.start_timeout * max(1.0, len(specs) / 2))
        except BaseException:
            self._tainted = True
            self.stop()
            raise

    def install_registry(self, registry_json: str) -> None:
        refs = {name: actor.install_registry.remote(registry_json) for name, actor in self.actors.items()}
        for name, ref in refs.items():
            self._result(name, "'install_registry'", ref)

    def _new(self, key: str, cls: Any) -> Any:
        opts: dict[str, Any] = {"num_cpus": self.actor_num_cpus}
        if key in self.placement:
            opts["resources"] = {self.placement[key]: PLACEMENT_FRACTION}
        if self._runtime_env:
            opts["runtime_env"] = self._runtime_env
        return cls.options(**opts).remote()

    def _check_resources(self) -> None:
        wanted = sorted(set(self.placement.values()))
        if not wanted:
            return
        available = ray.cluster_resources()
        missing = [r for r in wanted if r not in available]
        if missing:
            who = {r: [k for k, v in self.placement.items() if v == r] for r in missing}
            example = missing[0]
            raise RunError(
                "placement: no node of this Ray cluster offers the custom resource(s) "
                + ", ".join(f"{r!r} (for {', '.join(who[r])})" for r in missing)
                + f"; start such a node with `ray start --address=HEAD_IP:6379 --resources='{{\"{example}\": 1}}'` "
                "or fix --placement"
            )

    def _await_ready(self, refs_by_name: dict[str, Any], step: str, timeout: float | None = None) -> dict[str, bytes]:
        """Wait for the actors' info (from load() or info()); record where each one runs;
        return each one's public key."""
        refs = {ref: name for name, ref in refs_by_name.items()}
        public: dict[str, bytes] = {}
        timeout = self.start_timeout if timeout is None else timeout
        ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        if pending:
            late = sorted(refs[r] for r in pending)
            where = "; ".join(f"{n} needs resource {self.placement[n]!r}" for n in late if n in self.placement)
            raise RunError(
                f"party {late[0]!r} failed at step {step!r}: its actor was not ready within "
                f"{timeout:g}s (not ready: {', '.join(late)}). The cluster may lack free "
                f"resources{': ' + where if where else ''}, or building the party is slow "
                "(RayRuntime(start_timeout=...))"
            )
        for ref in ready:
            name = refs[ref]
            try:
                info = ray.get(ref)
            except RayError as exc:
                raise RunError(f"party {name!r} failed at step {step!r}: its actor could not start: {short_error(exc)}") from exc
            if info.get("error"):
                err = RunError(f"party {name!r} failed at step {step!r}: building the party raised {info['error']['error']}")
                err.add_note(info["error"].get("traceback", ""))
                raise err
            self.nodes[name] = info["node_id"]
            self.pids[name] = info["pid"]
            public[name] = bytes(info.get("public_key", b""))
        return public

    def tap(self, observer: Observer) -> RayTap:
        """A tap whose recording runs in its own actor (the eavesdropper); `observer` receives
        every envelope, in order, when the variant stops (or on `flush_taps()`)."""
        self.connect()
        actor = self._idle_taps.pop() if self._idle_taps else self._new(EAVESDROPPER, TapActor)
        self._tap_actors.append(actor)
        self._await_ready({EAVESDROPPER: actor.info.remote()}, "tap")
        tap = RayTap(actor, observer, timeout=self.call_timeout)
        self.taps.append(tap)
        return tap

    def flush_taps(self) -> None:
        """Hand everything the tap actors recorded so far to their observers, in order."""
        for tap in self.taps:
            tap.flush()

    def stop(self) -> None:
        """Flush the taps into their observers, then kill this variant's actors (or, with
        `reuse_actors`, drop their parties and keep the processes for the next variant)."""
        if not self._connected:
            return  # never started, or closed: no actors exist
        error: RunError | None = None
        try:
            self.flush_taps()
        except RunError as exc:
            error = exc
            self._tainted = True
        if self.nodes:
            self.history.append(dict(self.nodes))
        if self.reuse_actors and not self._tainted:
            self._park()
        for actor in [*self.actors.values(), *self._tap_actors]:
            _kill(actor)
        self.actors.clear()
        self._tap_actors.clear()
        self.taps.clear()
        self.nodes.clear()
        self.pids.clear()
        if error is not None:
            if sys.exc_info()[0] is None:
                raise error
            # Already failing: do not hide the first error behind the tap's.
            log.warning("RayRuntime.stop: %s", error)

    def _park(self) -> None:
        """Reset this variant's actors and keep the healthy ones for the next variant."""
        resets = [a.unload.remote() for a in self.actors.values()] + [a.reset.remote() for a in self._tap_actors]
        if not resets:
            return  # (an empty ray.get would start a Ray of its own)
        try:
            ray.get(resets, timeout=self.start_timeout)
        except RayError as exc:  # something died on the way out: kill them all below
            log.warning("RayRuntime.stop: not reusing actors (%s)", short_error(exc))
            return
        self._idle_parties.update(self.actors)
        self._idle_taps.extend(self._tap_actors)
        self.actors = {}
        self._tap_actors = []

    def close(self) -> None:
        """Stop, kill any kept actors, then shut down the Ray this runtime started (or
        disconnect from the cluster it joined; the cluster itself stays up). Idempotent."""
        try:
            self.stop()
        finally:
            for actor in [*self._idle_parties.values(), *self._idle_taps]:
                _kill(actor)
            self._idle_parties.clear()
            self._idle_taps.clear()
            if self._owns_connection and ray.is_initialized():
                ray.shutdown()
            self._owns_connection = False
            self._connected = False

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ envelopes
    def _actor(self, party: str) -> Any:
        try:
            return self.actors[party]
        except KeyError:
            raise RunError(f"no party named {party!r} in this run; parties: {sorted(self.actors)}") from None

    def actor(self, party: str) -> Any:
        """The Ray actor handle of a running party (tests kill it to check failure handling)."""
        return self._actor(party)

    def call(self, party: str, envelope: bytes, link: str = "") -> list[bytes]:
        actor = self._actor(party)
        data = bytes(envelope)  # plain bytes: never a view into a buffer of the sender
        return self._result(party, describe_step(data), actor.handle.remote(data, link))

    def receiver_view(self, party: str) -> list[bytes]:
        return self._result(party, "'receiver_view'", self._actor(party).receiver_view.remote())

    def _result(self, party: str, step: str, ref: Any) -> list[bytes]:
        try:
            reply = ray.get(ref, timeout=self.call_timeout)
        except GetTimeoutError:
            self._tainted = True
            raise RunError(
                f"party {party!r} failed at step {step}: no answer within {self.call_timeout:g}s "
                "(per-call timeout; raise RayRuntime(call_timeout=...) if the step is only slow)"
            ) from None
        except RayActorError as exc:
            self._tainted = True
            raise RunError(f"party {party!r} failed at step {step}: its actor died ({short_error(exc)})") from exc
        except RayError as exc:
            self._tainted = True
            raise RunError(f"party {party!r} failed at step {step}: {short_error(exc)}") from exc
        status = reply.get("status")
        if status == "ok":
            return list(reply["out"])
        if status == "rejected":
            raise ProtocolError(ErrorCode(reply["code"]), reply["detail"], sender=reply.get("sender"), charged_to=reply.get("charged_to"))
        self._tainted = True
        err = RunError(f"party {party!r} failed at step {step}: {reply.get('error', reply)}")
        if reply.get("traceback"):
            err.add_note(reply["traceback"])
        raise err


def describe_step(envelope: bytes) -> str:
    """What delivering this envelope asks of the party, from its cleartext header: the control
    op or artifact chunk when the suite shows them (plaintext), else the message type and seq."""
    try:
        header = peek_header(envelope)
    except ProtocolError as exc:
        return f"'deliver' (unparseable envelope: {exc.code.value})"
    meta = header.get("meta") or {}
    where = f"{header.get('type')} message seq {header.get('seq')} from {header.get('sender')!r}, round {header.get('round')}"
    if meta.get("op") and header.get("type") == "control":
        return f"{meta['op']!r} ({where})"
    if meta.get("artifact") is not None:
        return f"'artifact {meta['artifact']} chunk {meta.get('chunk')}/{meta.get('chunks')}' ({where})"
    return f"{header.get('type')!r} ({where})"


def _kill(actor: Any) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # already dead, or Ray is gone: nothing left to kill
        pass


def _package_dir(name: str) -> str:
    module = importlib.import_module(name)
    return str(Path(module.__file__).resolve().parent)
