"""Local IPC between a node's ClientApp processes and its resident party host.

A Flower ClientApp process does not keep Python state from one message to the next (in
deployment each message runs in a fresh `flwr-clientapp` process; in simulation virtual nodes
share Ray workers), so each node's party lives in a party host process
(`sim.flower_app.party_host`) and the ClientApp forwards every request to it over a Unix
socket on the same machine.

- Where: one socket per (Flower run id, node id) in a private directory: `$CDRSIM_PARTY_HOST_DIR`
  if set (a LocalDeployment sets it inside its own home), else `<tmp>/cdrsim-party-hosts-<uid>`.
  The directory must be owned by this user with mode 0700, and each side checks the peer's
  user id (SO_PEERCRED), so only this user's processes on this machine can talk to a host.
- What: frames of one CBOR map each, preceded by their length (8 bytes, big endian). Only
  CBOR's plain data model travels (maps, lists, text, bytes, numbers); nothing is pickled.
- Who starts a host: the first ClientApp request of a node that finds no host (`HostLink`
  spawns `python -m sim.flower_app.party_host` and waits until it listens; a lock file keeps
  two ClientApp processes of the same node from spawning two hosts).

This module is imported by every ClientApp process, so it stays light (no torch, no Flower).
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2

IPC_VERSION = "cdrsim-party-host/1"
DIR_ENV = "CDRSIM_PARTY_HOST_DIR"  # where the sockets go (default: a per-user directory in tmp)
_LENGTH = struct.Struct(">Q")
MAX_FRAME_BYTES = 1 << 31  # a batch of artifact chunks stays far below this
SPAWN_TIMEOUT = 60.0  # seconds for a new host to listen
REQUEST_TIMEOUT = 3600.0  # seconds one request may take inside the host (the coordinator's own limit is lower)
EXIT_TIMEOUT = 10.0  # seconds a host that was told to exit may take to stop listening
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class IpcError(RuntimeError):
    """The party host could not be reached, or it broke the framing."""


# ----------------------------------------------------------------------------- frames
def send_frame(sock: socket.socket, message: dict[str, Any]) -> None:
    data = cbor2.dumps(message)
    if len(data) > MAX_FRAME_BYTES:
        raise IpcError(f"a party host frame of {len(data)} bytes exceeds the limit of {MAX_FRAME_BYTES}")
    sock.sendall(_LENGTH.pack(len(data)))
    sock.sendall(data)


def recv_frame(sock: socket.socket) -> dict[str, Any] | None:
    """The next frame's map, or None when the peer closed the connection between frames."""
    head = _recv_exactly(sock, _LENGTH.size, eof_ok=True)
    if head is None:
        return None
    (length,) = _LENGTH.unpack(head)
    if length > MAX_FRAME_BYTES:
        raise IpcError(f"the peer announced a frame of {length} bytes (limit {MAX_FRAME_BYTES})")
    data = _recv_exactly(sock, length, eof_ok=False)
    try:
        message = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types for malformed input
        raise IpcError(f"unreadable party host frame: {type(exc).__name__}: {exc}") from None
    if not isinstance(message, dict):
        raise IpcError(f"a party host frame must be a CBOR map, got {type(message).__name__}")
    return message


def _recv_exactly(sock: socket.socket, n: int, *, eof_ok: bool) -> bytes | None:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            if eof_ok and got == 0:
                return None
            raise IpcError(f"the peer closed the connection after {got} of {n} bytes")
        got += k
    return bytes(buf)


def peer_uid(sock: socket.socket) -> int:
    """User id of the process at the other end of a connected Unix socket (Linux)."""
    return peer_credentials(sock)[1]


def peer_credentials(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a connected Unix socket (Linux)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return pid, uid


# ----------------------------------------------------------------------------- where
def host_dir() -> Path:
    """The private directory of this user's party host sockets (created 0700 if missing)."""
    configured = os.environ.get(DIR_ENV)
    path = Path(configured) if configured else Path(tempfile.gettempdir()) / f"cdrsim-party-hosts-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise IpcError(f"cannot create the party host directory {path}: {exc}") from exc
    st = path.lstat()
    if not path.is_dir() or path.is_symlink() or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise IpcError(
            f"{path} must be a directory owned by uid {os.getuid()} with mode 0700 (it holds the party hosts' sockets); "
            f"it is uid {st.st_uid}, mode {oct(st.st_mode & 0o777)}. Remove it, or set {DIR_ENV} to a private directory"
        )
    return path


@dataclass(frozen=True)
class HostPaths:
    socket: Path
    lock: Path
    log: Path

    @classmethod
    def of(cls, run_id: int, node_id: int, directory: Path | None = None) -> HostPaths:
        base = (directory or host_dir()) / f"r{int(run_id)}-n{int(node_id)}"
        paths = cls(base.with_suffix(".sock"), base.with_suffix(".lock"), base.with_suffix(".log"))
        if len(str(paths.socket)) > 100:  # AF_UNIX paths are limited to 108 bytes
            raise IpcError(f"the party host socket path {paths.socket} is too long; set {DIR_ENV} to a shorter directory")
        return paths


# ----------------------------------------------------------------------------- client side
@dataclass(frozen=True)
class HostSettings:
    """What a node tells its party host when it spawns it (node-local facts only)."""

    role: str = ""  # the role the node config pins ("" = learnt from the first start request)
    key_file: str = ""  # the node's own identity key file ("" = a fresh key per party)
    watch_pid: int = 0  # the host ends when this process ends (0 = no watch)
    idle_timeout: float = 1800.0  # the host ends after this many seconds without a request


class HostLink:
    """The ClientApp's end: one request, one reply, per connection."""

    def __init__(self, run_id: int, node_id: int, *, directory: Path | None = None):
        self.paths = HostPaths.of(run_id, node_id, directory)

    def request(self, message: dict[str, Any], *, spawn: HostSettings | None = None, timeout: float = REQUEST_TIMEOUT) -> dict[str, Any]:
        """Send `message` to this node's host; return its reply map. With `spawn`, start the
        host first when none is running; without, a missing host is an IpcError."""
        sock = self.connect(spawn)
        with sock:
            sock.settimeout(timeout)
            try:
                send_frame(sock, {"ipc": IPC_VERSION, **message})
                reply = recv_frame(sock)
            except (OSError, IpcError) as exc:
                raise IpcError(
                    f"the party host at {self.paths.socket} failed during {message.get('op')!r}: {exc}{self._log_tail()}"
                ) from exc
        if reply is None:
            raise IpcError(f"the party host at {self.paths.socket} closed the connection without a reply{self._log_tail()}")
        if reply.get("ipc") != IPC_VERSION:
            raise IpcError(f"the party host speaks {reply.get('ipc')!r}, not {IPC_VERSION!r}: another cdrsim version is running")
        return reply

    def connect(self, spawn: HostSettings | None) -> socket.socket:
        sock = self._try_connect()
        if sock is not None:
            return sock
        if spawn is None:
            raise IpcError(
                f"no party host is running for this node ({self.paths.socket}): it was stopped, ended after its idle "
                f"timeout, or died{self._log_tail()}"
            )
        with open(self.paths.lock, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one spawner per node; the others find its host
            sock = self._try_connect()
            if sock is None:
                sock = self._spawn(spawn)
        return sock

    def ensure(self, spawn: HostSettings) -> int:
        """Start this node's host unless it runs; return its pid without waiting for it to
        finish its start-up (a request would wait for its imports)."""
        with self.connect(spawn) as sock:
            return peer_credentials(sock)[0]

    def wait_stopped(self, timeout: float = EXIT_TIMEOUT) -> bool:
        """Wait until no host listens on this node's socket (a host told to exit replies first,
        then closes); False if one still does after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def running(self) -> bool:
        sock = self._try_connect()
        if sock is None:
            return False
        sock.close()
        return True

    def _try_connect(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(self.paths.socket))
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
                return None
            raise IpcError(f"cannot connect to the party host at {self.paths.socket}: {exc}") from exc
        if peer_uid(sock) != os.getuid():
            sock.close()
            raise IpcError(f"the process listening on {self.paths.socket} belongs to another user; refusing it")
        return sock

    def _spawn(self, settings: HostSettings) -> socket.socket:
        self.paths.socket.unlink(missing_ok=True)  # a stale socket of a host that died
        argv = [
            sys.executable,
            "-m",
            "sim.flower_app.party_host",
            "--socket",
            str(self.paths.socket),
            "--log",
            str(self.paths.log),
            "--watch-pid",
            str(int(settings.watch_pid)),
            "--idle-timeout",
            repr(float(settings.idle_timeout)),
        ]
        if settings.role:
            argv += ["--role", settings.role]
        if settings.key_file:
            argv += ["--key-file", settings.key_file]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), *(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)])
        with open(self.paths.log, "wb") as log:
            # Same process group as the ClientApp process (so as its SuperNode): signals to the
            # node's group reach the host too. Output goes to its own log, never to a pipe.
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, close_fds=True)
        _SPAWNED.append(popen)
        deadline = time.monotonic() + SPAWN_TIMEOUT
        while True:
            sock = self._try_connect()
            if sock is not None:
                return sock
            if popen.poll() is not None:
                raise IpcError(f"the party host exited with code {popen.returncode} while starting{self._log_tail()}")
            if time.monotonic() > deadline:
                popen.kill()
                raise IpcError(f"the party host did not listen on {self.paths.socket} within {SPAWN_TIMEOUT:.0f}s{self._log_tail()}")
            time.sleep(0.02)

    def _log_tail(self, n: int = 6) -> str:
        try:
            lines = self.paths.log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-n:]
        except OSError:
            return ""
        return f"; host log {self.paths.log}:\n  " + "\n  ".join(lines) if lines else ""


# Hosts this process spawned. In simulation the spawning Ray worker outlives its hosts, so it
# reaps the ones that ended (no zombies); in deployment the ClientApp process exits anyway.
_SPAWNED: list[subprocess.Popen] = []


def reap_spawned() -> None:
    _SPAWNED[:] = [p for p in _SPAWNED if p.poll() is None]
