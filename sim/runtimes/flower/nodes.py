"""Which Flower node plays which party: the role handshake (`query.hello`)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from sim.flower_app.records import HELLO, Hello, HelloRequest

from ...errors import RunError
from .exchange import Exchange
from .settings import DEFAULT_HOST_IDLE_TIMEOUT, DEFAULT_NODES_TIMEOUT

NODE_POLL_SECONDS = 0.5


@dataclass(frozen=True)
class NodeInfo:
    node_id: int
    role: str
    pinned: bool  # the role came from the node's own config
    pid: int  # the ClientApp process that answered the handshake
    host_pid: int = 0  # the node's party host, started by the handshake


def discover_nodes(
    exchange: Exchange,
    roles: Iterable[str],
    *,
    timeout: float = DEFAULT_NODES_TIMEOUT,
    host_idle_timeout: float = DEFAULT_HOST_IDLE_TIMEOUT,
) -> dict[str, NodeInfo]:
    """Wait for the nodes, run the role handshake, and map each role to one node.

    A node whose config pins a role (`--node-config 'role="source"'`) plays that role; the
    other roles go to the remaining nodes in partition-id order (simulation). The handshake
    also starts each node's party host, so that its imports overlap with the coordinator's."""
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
    request = HelloRequest(warm=True, idle_timeout=host_idle_timeout)
    replies = exchange.exchange([(n, HELLO, request.to_content()) for n in ids], max(1.0, deadline - time.monotonic()))
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
        assigned[hello.role] = NodeInfo(node, hello.role, True, hello.pid, hello.host_pid)
    free = sorted((h.partition, node) for node, h in hellos.items() if not h.role)
    for role in roles:
        if role in assigned:
            continue
        if not free:
            raise RunError(f"no Flower node plays {role!r}; start a SuperNode with --node-config 'role=\"{role}\"'")
        _, node = free.pop(0)
        assigned[role] = NodeInfo(node, role, False, hellos[node].pid, hellos[node].host_pid)
    return assigned
