"""The ClientApp: a thin forwarder from a Flower node to the node's resident party host.

A ClientApp process cannot hold a party: in deployment every message runs in a fresh
`flwr-clientapp` process, and in simulation virtual nodes share Ray worker processes. So each
node's party lives in its party host (`sim.flower_app.party_host`), a process on the same
machine that this ClientApp starts on the node's first request and then reaches over a Unix
socket keyed by (run id, node id) (`sim.flower_app.ipc`). The ClientApp only translates Flower
records to host requests and back.

Which party a node plays comes from its node config (`--node-config 'role="source"'`) or, when
the config names none (simulation), from the coordinator's start request; the host keeps that
role for the rest of the run. A node's identity key file, if its config names one
(`key-file="/path/source.key"`), is handed to its host here, on this machine: it never appears
in a Flower message. The host watches this process's parent (the node's SuperExec in
deployment, the raylet in simulation) and ends with it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from sim.flower_app.ipc import HostLink, HostSettings, IpcError, reap_spawned
from sim.flower_app.records import (
    KEY_FILE_KEY,
    PARTITION_KEY,
    ROLE_KEY,
    Closed,
    DeliverReply,
    DeliverRequest,
    EnvelopeOutcome,
    Hello,
    HelloRequest,
    StartReply,
    StartRequest,
    check_close_request,
)


class NodeError(RuntimeError):
    """The node cannot serve this request; Flower returns it to the coordinator as an error reply."""


@dataclass
class Node:
    """One Flower node as its ClientApp sees it: its config and the link to its party host."""

    node_config: dict[str, Any]
    link: HostLink
    watch_pid: int  # the process whose end ends the party host

    @property
    def role(self) -> str:
        return str(self.node_config.get(ROLE_KEY, "") or "")

    def settings(self, idle_timeout: float) -> HostSettings:
        key_file = str(self.node_config.get(KEY_FILE_KEY, "") or "")
        if key_file and not os.path.isabs(key_file):
            raise NodeError(f"the node config's {KEY_FILE_KEY} must be an absolute path, got {key_file!r}")
        return HostSettings(role=self.role, key_file=key_file, watch_pid=self.watch_pid, idle_timeout=idle_timeout)

    # ----------------------------------------------------------------- requests
    def hello(self, request: HelloRequest) -> Hello:
        host_pid = 0
        if request.warm:  # start the host; its imports go on while the coordinator loads its data
            try:
                host_pid = self.link.ensure(self.settings(request.idle_timeout))
            except IpcError as exc:
                raise NodeError(str(exc)) from None
        return Hello(role=self.role, partition=int(self.node_config.get(PARTITION_KEY, -1)), pid=os.getpid(), host_pid=host_pid)

    def start(self, request: StartRequest) -> StartReply:
        reply = self._ask(
            {
                "op": "start",
                "generation": request.generation,
                "party": request.party,
                "factory": request.factory,
                "config": request.config,
                "threads": request.torch_threads,
            },
            spawn=self.settings(request.idle_timeout),
        )
        return StartReply(
            generation=str(reply["generation"]),
            public_key=bytes(reply["public_key"]),
            host_pid=int(reply["pid"]),
            seconds=float(reply["seconds"]),
        )

    def deliver(self, request: DeliverRequest) -> DeliverReply:
        reply = self._ask(
            {
                "op": "deliver",
                "generation": request.generation,
                "registry": request.registry,
                "envelopes": [bytes(e) for e in request.envelopes],
                "links": list(request.links),
            }
        )
        outcomes = [
            EnvelopeOutcome(
                out=[bytes(e) for e in o["out"]],
                code=str(o["code"]),
                detail=str(o["detail"]),
                sender=str(o["sender"]),
                charged_to=str(o["charged_to"]),
            )
            for o in reply["outcomes"]
        ]
        return DeliverReply(
            generation=str(reply["generation"]),
            outcomes=outcomes,
            views=[bytes(v) for v in reply["views"]],
            seconds=float(reply["seconds"]),
        )

    def close(self) -> Closed:
        if not self.link.running():
            return Closed(host_pid=0)
        pid = int(self._ask({"op": "exit"})["pid"])
        self.link.wait_stopped()  # closed means closed: the next run on this node starts a fresh host
        return Closed(host_pid=pid)

    def _ask(self, message: dict[str, Any], *, spawn: HostSettings | None = None) -> dict[str, Any]:
        reap_spawned()
        try:
            reply = self.link.request(message, spawn=spawn)
        except IpcError as exc:
            raise NodeError(str(exc)) from None
        if not reply.get("ok"):
            raise NodeError(str(reply.get("error", "the party host failed without saying why")))
        return reply


# ----------------------------------------------------------------------------- Flower glue
app = ClientApp()


def _node(context: Context) -> Node:
    return Node(dict(context.node_config), HostLink(int(context.run_id), int(context.node_id)), watch_pid=os.getppid())


@app.query("hello")
def _hello(msg: Message, context: Context) -> Message:
    return Message(_node(context).hello(HelloRequest.from_content(msg.content)).to_content(), reply_to=msg)


@app.query("start")
def _start(msg: Message, context: Context) -> Message:
    return Message(_node(context).start(StartRequest.from_content(msg.content)).to_content(), reply_to=msg)


@app.query("deliver")
def _deliver(msg: Message, context: Context) -> Message:
    return Message(_node(context).deliver(DeliverRequest.from_content(msg.content)).to_content(), reply_to=msg)


@app.query("close")
def _close(msg: Message, context: Context) -> Message:
    check_close_request(msg.content)
    return Message(_node(context).close().to_content(), reply_to=msg)
