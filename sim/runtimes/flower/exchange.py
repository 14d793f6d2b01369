"""How the coordinator reaches Flower nodes: the Grid, behind a small interface.

`Exchange` is what the Flower runtime needs from Flower: the connected node ids, and one
round of messages (at most one per node) with their replies. `GridExchange` is that over a
Flower Grid (the ServerApp's), `RecordingExchange` saves every RecordDict that crosses (what
the SuperLink carries) for audits and tests, and tests use an in-process stand-in.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from flwr.app import Message
from flwr.common.serde import recorddict_to_proto

from ...errors import RunError

POLL_INTERVAL = 0.05  # seconds between pulls for replies


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
    """The Exchange over a Flower Grid: push the messages, then pull until every reply is in.

    The loop is ours rather than `Grid.send_and_receive`, which sleeps 3 s between pulls in
    deployment: pulling every `poll_interval` seconds saves up to that much per round trip.
    With `abort` (simulation), the ServerApp thread also stops waiting as soon as the launcher
    gives up (Ctrl-C), rather than blocking interpreter exit until the call timeout."""

    def __init__(self, grid: Any, abort: threading.Event | None = None, *, poll_interval: float = POLL_INTERVAL):
        self.grid = grid
        self.abort = abort
        self.poll_interval = poll_interval

    def node_ids(self) -> list[int]:
        return [int(n) for n in self.grid.get_node_ids()]

    def exchange(self, requests: list[tuple[int, str, Any]], timeout: float) -> dict[int, NodeReply]:
        messages = [Message(content, dst_node_id=node, message_type=mtype) for node, mtype, content in requests]
        replies: dict[int, NodeReply] = {}
        for reply in self._send_and_receive(messages, timeout):
            node = int(reply.metadata.src_node_id)
            if reply.has_error():
                replies[node] = NodeReply(node, error=f"{reply.error.reason} (Flower error code {reply.error.code})")
            else:
                replies[node] = NodeReply(node, content=reply.content)
        return replies

    def _send_and_receive(self, messages: list[Any], timeout: float) -> list[Any]:
        self._check_abort("the run was stopped")
        waiting = set(self.grid.push_messages(messages))
        deadline = time.monotonic() + timeout
        received: list[Any] = []
        while waiting and time.monotonic() < deadline:
            self._check_abort("the run was stopped while waiting for a party's node")
            got = list(self.grid.pull_messages(waiting))
            received.extend(got)
            waiting.difference_update(m.metadata.reply_to_message_id for m in got)
            if waiting:
                time.sleep(self.poll_interval)
        return received

    def _check_abort(self, why: str) -> None:
        if self.abort is not None and self.abort.is_set():
            raise RunError(why)


class RecordingExchange:
    """Wraps an Exchange and saves every RecordDict sent and received, serialized as Flower
    serializes it for the SuperLink (protobuf), one file each:
    `<n>-to-<node>-<type>.pb` and `<n>-from-<node>.pb` (or `.error.txt` for Flower errors)."""

    def __init__(self, inner: Exchange, directory: str | Path):
        self.inner = inner
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def node_ids(self) -> list[int]:
        return self.inner.node_ids()

    def exchange(self, requests: list[tuple[int, str, Any]], timeout: float) -> dict[int, NodeReply]:
        for node, mtype, content in requests:
            self._save(f"to-{node}-{mtype}.pb", recorddict_to_proto(content).SerializeToString())
        replies = self.inner.exchange(requests, timeout)
        for node, reply in sorted(replies.items()):
            if reply.error is not None:
                self._save(f"from-{node}.error.txt", reply.error.encode())
            else:
                self._save(f"from-{node}.pb", recorddict_to_proto(reply.content).SerializeToString())
        return replies

    def _save(self, name: str, data: bytes) -> None:
        self.count += 1
        (self.directory / f"{self.count:06d}-{name}").write_bytes(data)
