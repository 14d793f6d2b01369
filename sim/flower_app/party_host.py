"""The party host: a resident process that holds one Flower node's party across messages.

A ClientApp process lives for one message (deployment) or is shared by several virtual nodes
(simulation), so it cannot hold a party. The node's party lives here instead, and the node's
ClientApp processes forward each request over a local Unix socket (`sim.flower_app.ipc`).

What the host does, per request (one CBOR map in, one out):

- `start`: build a fresh party from its JSON-able spec, here, replacing the previous task's
  party. On the secure suite the party makes its identity key here, or loads it from the key
  file named in the node's own config (`--node-config 'key-file="..."'`); only its public key
  is returned.
- `deliver`: install the registry of pinned public keys when it comes with the request (once
  per party), then hand each envelope, with the name of the link it came over, to the party,
  in order; return what the party put on the wire, or the protocol's rejection, per envelope,
  and the receiver-view envelopes accepted since the last reply.
- `exit`: end the process (the coordinator sends it when the run closes).

The host ends on `exit`, when the process it watches ends (the node's SuperExec in deployment,
the raylet in simulation: the node or the simulation went away), after `--idle-timeout`
seconds without a request, or on SIGTERM/SIGINT. Ephemeral keys and session ids come from the
OS's randomness: nothing is replayed, so nothing needs to be reproducible.

    python -m sim.flower_app.party_host --make-key PATH   # a node's key file; prints its public key
"""

from __future__ import annotations

import argparse
import importlib
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from sim.flower_app.ipc import IPC_VERSION, IpcError, peer_uid, recv_frame, send_frame

# Party factories a host accepts: the coordinator names one in each spec, and a host must not
# import and call whatever a (possibly foreign) ServerApp asks for.
ALLOWED_FACTORIES = frozenset({"sim.party_factory:build_party"})


class _Stopped(BaseException):
    """SIGTERM or SIGINT: end the host normally."""


class HostError(Exception):
    """The host cannot serve this request (the message says why)."""


class PartyHost:
    """The party state of one node; `handle(request) -> reply` (plain maps, never objects)."""

    def __init__(self, *, role: str = "", key_file: str = ""):
        self.role = role  # pinned by the node config; "" = the first start request names it
        self.key_file = key_file
        self.name = ""  # the party this node plays in this run, once known
        self.party: Any = None
        self.generation = ""
        self.registry_installed = False
        self.views_sent = 0

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        try:
            if op == "start":
                return {"ok": True, **self.start(request)}
            if op == "deliver":
                return {"ok": True, **self.deliver(request)}
            if op == "ping":
                return {"ok": True, "party": self.name, "generation": self.generation}
            if op == "exit":
                self.drop()
                return {"ok": True}
            raise HostError(f"unknown party host request {op!r}")
        except HostError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a broken party: report it, and never reuse a half-advanced party
            self.drop()
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}

    # ----------------------------------------------------------------- requests
    def start(self, request: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        name, factory, config = str(request["party"]), str(request["factory"]), dict(request["config"])
        if self.role and name != self.role:
            raise HostError(f"this SuperNode plays {self.role!r} (its --node-config role) but was asked to start {name!r}")
        if self.name and name != self.name:
            raise HostError(f"this node already plays {self.name!r} in this run; it cannot also play {name!r}")
        if factory not in ALLOWED_FACTORIES:
            raise HostError(f"refusing party factory {factory!r}: this node builds parties only with {sorted(ALLOWED_FACTORIES)}")
        channel = dict(config.get("channel") or {})
        if "identity_file" in channel:
            raise HostError("the coordinator named a key file for this party; a node's key file comes only from its own node config")
        if self.key_file:
            channel["identity_file"] = self.key_file
        config["channel"] = channel
        threads = int(request.get("threads", 0))
        if threads > 0:
            # Imported here, as everything heavy in this module: the host listens before it imports
            # torch (seconds), so that the ClientApp that started it can connect at once.
            import torch

            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
        self.drop()  # the previous task's party goes before the new one is built
        module, _, attr = factory.partition(":")
        party = getattr(importlib.import_module(module), attr)(config)
        if party.name != name:
            raise HostError(f"factory {factory} built party {party.name!r}, expected {name!r}")
        self.name, self.party, self.generation = name, party, str(request["generation"])
        return {"generation": self.generation, "public_key": party.public_key(), "seconds": time.perf_counter() - started}

    def deliver(self, request: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        generation = str(request["generation"])
        if self.party is None or generation != self.generation:
            held = f"task {self.generation!r}" if self.party is not None else "no party"
            raise HostError(
                f"this node's party host holds {held}, not task {generation!r}: the party was not started here, or the host "
                "was restarted (idle timeout, or killed) or the party failed earlier"
            )
        registry = str(request.get("registry") or "")
        if registry and not self.registry_installed:
            self.party.install_registry(registry)
            self.registry_installed = True
        from protocol import ProtocolError  # lazily, like torch above (the party loaded it already)

        outcomes = []
        envelopes, links = list(request["envelopes"]), [str(x) for x in request["links"]]
        if len(envelopes) != len(links):
            raise HostError(f"{len(envelopes)} envelopes came with {len(links)} link names")
        for envelope, link in zip(envelopes, links):
            try:
                out = self.party.handle(bytes(envelope), link)
            except ProtocolError as exc:  # a rejection is data for the relay; the party is unchanged
                outcomes.append(
                    {
                        "out": [],
                        "code": exc.code.value,
                        "detail": exc.detail,
                        "sender": exc.sender or "",
                        "charged_to": exc.charged_to or "",
                    }
                )
                continue
            outcomes.append({"out": [bytes(e) for e in out], "code": "", "detail": "", "sender": "", "charged_to": ""})
        views = self.party.receiver_view()
        fresh = [bytes(v) for v in views[self.views_sent :]]
        self.views_sent = len(views)
        return {"generation": generation, "outcomes": outcomes, "views": fresh, "seconds": time.perf_counter() - started}

    def drop(self) -> None:
        self.party, self.generation = None, ""
        self.registry_installed, self.views_sent = False, 0


# ----------------------------------------------------------------------------- the process
def serve(listener: socket.socket, host: PartyHost, *, watch_pid: int = 0, idle_timeout: float = 1800.0) -> str:
    """Answer requests until one of the ends described above; return why it ended."""
    selector = selectors.DefaultSelector()
    listener.setblocking(False)
    selector.register(listener, selectors.EVENT_READ, "listener")
    watch_fd = _watch(watch_pid)
    if watch_fd is not None:
        selector.register(watch_fd, selectors.EVENT_READ, "watch")
    last = time.monotonic()
    try:
        while True:
            if watch_pid and watch_fd is None and not _alive(watch_pid):
                return f"the watched process {watch_pid} ended"
            wait = idle_timeout - (time.monotonic() - last)
            if wait <= 0:
                return f"idle for {idle_timeout:g}s"
            events = selector.select(timeout=min(wait, 1.0) if watch_pid and watch_fd is None else wait)
            for key, _ in events:
                if key.data == "watch":
                    return f"the watched process {watch_pid} ended"
                conn, _ = listener.accept()
                with conn:
                    conn.setblocking(True)
                    if peer_uid(conn) != os.getuid():
                        continue  # the directory is private; a foreign peer gets nothing
                    try:
                        request = recv_frame(conn)
                    except (OSError, IpcError) as exc:
                        print(f"party host: bad request: {exc}", file=sys.stderr, flush=True)
                        continue
                    if request is None:
                        continue  # a connect without a request (a liveness probe)
                    if request.get("ipc") != IPC_VERSION:
                        reply = {"ok": False, "error": f"this party host speaks {IPC_VERSION!r}, not {request.get('ipc')!r}"}
                    else:
                        reply = host.handle(request)
                    try:
                        send_frame(conn, {"ipc": IPC_VERSION, "pid": os.getpid(), **reply})
                    except OSError as exc:  # the ClientApp went away (its message timed out)
                        print(f"party host: could not reply to {request.get('op')!r}: {exc}", file=sys.stderr, flush=True)
                    if request.get("op") == "exit":
                        return "asked to exit"
                last = time.monotonic()
    finally:
        selector.close()
        if watch_fd is not None:
            os.close(watch_fd)


def _watch(pid: int) -> int | None:
    """A pidfd that becomes readable when `pid` ends (None: no watch, or no pidfd support)."""
    if pid <= 0 or not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _listen(path: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket file is 0600 from the start
    try:
        listener.bind(str(path))
    finally:
        os.umask(old)
    listener.listen(8)
    return listener


def make_key(path: str) -> str:
    """Create a node's identity key file (0600); return its public key, hex."""
    from protocol import Identity  # lazily, like torch in PartyHost.start

    if Path(path).exists():
        raise SystemExit(f"{path} exists; a key file is never overwritten")
    identity = Identity.generate()
    identity.save(path)
    return identity.public_bytes().hex()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sim.flower_app.party_host", description="The resident party host of one Flower node.")
    p.add_argument("--make-key", metavar="PATH", help="create an identity key file for a node, print its public key, and exit")
    p.add_argument("--socket", help="Unix socket to listen on")
    p.add_argument("--log", help="this host's log file (removed when the host ends normally)")
    p.add_argument("--role", default="", help="the party the node config pins")
    p.add_argument("--key-file", default="", help="the node's identity key file")
    p.add_argument("--watch-pid", type=int, default=0, help="end when this process ends")
    p.add_argument("--idle-timeout", type=float, default=1800.0, help="end after this many seconds without a request")
    args = p.parse_args(argv)
    if args.make_key:
        print(make_key(args.make_key))
        return 0
    if not args.socket:
        p.error("--socket is required")
    path = Path(args.socket)
    listener = _listen(path)  # listening first: the spawning ClientApp connects while we import
    inode = path.stat().st_ino

    def _terminate(signum: int, frame: Any) -> None:
        raise _Stopped(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    clean = False
    try:
        # Warm up: the party factory's imports (torch, the scenarios) take seconds; done now,
        # while the coordinator is still busy, a queued request waits in the listen backlog.
        for factory in sorted(ALLOWED_FACTORIES):
            importlib.import_module(factory.partition(":")[0])
        reason = serve(
            listener, PartyHost(role=args.role, key_file=args.key_file), watch_pid=args.watch_pid, idle_timeout=args.idle_timeout
        )
        clean = True
    except _Stopped as stop:
        reason, clean = str(stop), True
    finally:
        try:  # unlink first, and only our own socket: a successor may already listen there
            if path.stat().st_ino == inode:
                path.unlink()
        except OSError:
            pass
        listener.close()
        if clean and args.log:  # a normal end leaves nothing behind; a crash keeps its log
            Path(args.log).unlink(missing_ok=True)
    print(f"party host {os.getpid()}: {reason}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
