"""`--runtime flower-deployment`: a real SuperLink and one SuperNode per party as separate OS
processes on localhost, the app run with `flwr run`, and every process reaped at the end.

Every process gets its own session (process group) and an environment tag (`DEPLOYMENT_MARKER`),
so that `stop()` ends them and every process they spawned (SuperExec, ServerApp and ClientApp
processes, the parties' party hosts), also after a failure or Ctrl-C.

Key custody: `start()` acts as the operator who provisions each SuperNode's identity. It
creates one Ed25519 key file per party, in a directory of its own (0700, the file 0600), and
names it only in that party's SuperNode's node config (`key-file="..."`); the node's party host
loads it there. The launcher keeps only the public keys (`public_keys`), which the coordinator
pins: a node that reports another key fails the run. No private key is ever in a Flower message.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol import Identity
from sim.flower_app.ipc import DIR_ENV
from sim.flower_app.records import KEY_FILE_KEY, ROLE_KEY

from ...errors import RunError
from .settings import FLOWER_ENV, PROJECT_ROOT

DEFAULT_STARTUP_TIMEOUT = 60.0  # seconds for the SuperLink and SuperNodes to listen
DEPLOYMENT_MARKER = "CDRSIM_FLOWER_DEPLOYMENT"  # env var that tags every process a deployment starts
CONNECTION = "cdrsim-local"
KEY_FILE_NAME = "identity.key"
# A SuperExec checks for new ClientApp/ServerApp tasks every second by default; every message
# to a node waits for that check, so poll faster (a local call; setdefault: the user's value wins).
DEPLOYMENT_ENV = {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1"}

log = logging.getLogger(__name__)


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
    """A SuperLink and one SuperNode per party (`roles`) as separate OS processes on localhost.

    Free ports are chosen automatically; every process gets its own session (process group)
    and an environment tag, so that `stop()` ends them and every process Flower spawned from
    them (SuperExec, ServerApp, ClientApp processes, party hosts), also after a failure or
    Ctrl-C. `key_dir` keeps the parties' key files (default: inside the deployment's own
    directory, removed by `stop()`).
    """

    roles: tuple[str, ...] = ()  # one SuperNode per party; empty: the run's parties (the launcher fills them in)
    log_dir: Path | None = None
    key_dir: Path | None = None
    tls: TlsFiles | None = None
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT
    on_line: Callable[[str], None] | None = None  # called with each line `flwr run` prints
    host: str = "127.0.0.1"
    processes: dict[str, _Process] = field(default_factory=dict, init=False)
    marker: str = field(default_factory=lambda: secrets.token_hex(8), init=False)
    superlink_port: int | None = field(default=None, init=False)
    public_keys: dict[str, bytes] = field(default_factory=dict, init=False)  # party -> its node's identity public key
    key_files: dict[str, Path] = field(default_factory=dict, init=False)
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
        if not self.roles:
            raise RunError("a deployment needs the parties' names (roles), one SuperNode each")
        self._home = Path(tempfile.mkdtemp(prefix="cdrsim-flwr-home-"))
        self._logs = Path(self.log_dir) if self.log_dir else self._home / "logs"
        self._logs.mkdir(parents=True, exist_ok=True)
        (self._home / "party-hosts").mkdir(mode=0o700)
        try:
            self._make_keys(Path(self.key_dir) if self.key_dir else self._home / "keys")
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
                        f"{ROLE_KEY}={json.dumps(role)} {KEY_FILE_KEY}={json.dumps(str(self.key_files[role]))}",
                    ],
                )
            for role, port in ports.items():  # started together, waited for together
                self._wait_port(port, f"supernode-{role}")
            self._write_cli_config(address)
        except BaseException:
            self.stop()
            raise

    def _make_keys(self, root: Path) -> None:
        """One identity key file per party, each in its own 0700 directory; keep the public keys."""
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for role in self.roles:
            directory = root / role
            directory.mkdir(mode=0o700, exist_ok=True)
            path = directory / KEY_FILE_NAME
            if path.exists():
                raise RunError(f"{path} exists; a deployment never reuses or overwrites a key file (use a fresh key_dir)")
            identity = Identity.generate(name=role)
            identity.save(path)  # 0600 from the start
            self.public_keys[role] = identity.public_bytes()
            self.key_files[role] = path.resolve()
            del identity  # the launcher keeps only the public key

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
        for key, value in {**FLOWER_ENV, **DEPLOYMENT_ENV}.items():
            env.setdefault(key, value)
        bin_dir = str(Path(sys.executable).parent)
        pythonpath = [str(PROJECT_ROOT), *(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)]
        env.update(
            {
                "FLWR_HOME": str(self._home),  # apps, config and state of this deployment only
                "PYTHONPATH": os.pathsep.join(pythonpath),  # the app imports the cdrsim packages
                "PATH": bin_dir + os.pathsep + env.get("PATH", ""),  # Flower spawns flower-superexec by name
                DEPLOYMENT_MARKER: self.marker,
                DIR_ENV: str(self._home / "party-hosts"),  # the party hosts' sockets, private to this deployment
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
