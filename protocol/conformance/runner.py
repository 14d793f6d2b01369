"""Run vector steps against the implementation and compare with what the files record."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

from ..codec import decode, encode
from ..endpoint import Endpoint
from ..errors import ProtocolError
from ..keys import Identity, Registry, seeded_rng
from ..wire import Limits
from .constructions import build_input
from .forms import envelope_to_json, message_from_json, message_to_json


class VectorMismatch(AssertionError):
    """The implementation disagrees with a vector (or raised something other than ProtocolError)."""

    def __init__(self, test: dict[str, Any], key: str, expected: Any, got: Any):
        self.tc_id, self.comment, self.key = test["tcId"], test["comment"], key
        super().__init__(f"tcId {self.tc_id} ({self.comment}): {key} differs: expected {str(expected)[:200]}, got {str(got)[:200]}")


class Executor:
    """Runs the steps of one test group against real Endpoints (or the stateless codec)."""

    def __init__(self, group: dict[str, Any]):
        self.group = group
        self.outputs: dict[int, list[bytes]] = {}
        self.endpoints: dict[str, Endpoint] = {}
        if group["type"] == "EndpointConversation":
            registry = Registry({n: bytes.fromhex(h) for n, h in group["registry"].items()})
            for name, spec in group["parties"].items():
                identity = Identity.from_private_bytes(bytes.fromhex(spec["identity_private"]), name=name)
                self.endpoints[name] = Endpoint(
                    name,
                    suite=group["suite"],
                    identity=identity if group["suite"] == "secure" else None,
                    registry=registry,
                    limits=Limits(**spec.get("limits", {})),
                    session_seed=bytes.fromhex(spec.get("session_seed", "")),
                    rng=seeded_rng(spec["rng_seed"]),
                    rekey_every=spec.get("rekey_every"),
                )

    def run(self, test: dict[str, Any]) -> dict[str, Any]:
        """What the implementation does for this step: the fields a vector records."""
        observed: dict[str, Any] = {}
        try:
            self._step(test, observed)
            observed["result"] = "valid"
        except ProtocolError as exc:
            observed["result"] = "invalid"
            observed["error_code"] = exc.code.value
        return observed

    def _step(self, test: dict[str, Any], observed: dict[str, Any]) -> None:
        op, tc = test["op"], test["tcId"]
        limits = Limits(**test["limits"]) if "limits" in test else None
        if op == "encode":
            wire = encode(message_from_json(test["message"]), limits=limits)
            self.outputs[tc] = [wire]
            observed["wire"] = envelope_to_json(wire)
            observed["decoded"] = message_to_json(decode(wire), full=True)
        elif op == "decode":
            wire = build_input(test["construction"], self.outputs)
            observed["input"] = envelope_to_json(wire)
            self.outputs[tc] = [wire]
            observed["decoded"] = message_to_json(decode(wire, limits=limits or Limits()), full=True)
        elif op == "send":
            out = self.endpoints[test["party"]].send(message_from_json(test["message"]))
            self.outputs[tc] = out
            observed["output"] = [envelope_to_json(e) for e in out]
        elif op == "rekey":
            out = self.endpoints[test["party"]].rekey(test["peer"])
            self.outputs[tc] = out
            observed["output"] = [envelope_to_json(e) for e in out]
        elif op == "receive":
            wire = build_input(test["construction"], self.outputs)
            observed["input"] = envelope_to_json(wire)
            ep = self.endpoints[test["party"]]
            before = ep.state_snapshot()
            try:
                delivered, out = ep.receive(wire, link=test.get("link", ""))
            except ProtocolError:
                if ep.state_snapshot() != before:
                    raise VectorMismatch(test, "state", "unchanged after a rejection", "changed") from None
                raise
            self.outputs[tc] = out
            observed["delivered"] = [message_to_json(m, full=True) for m in delivered]
            observed["output"] = [envelope_to_json(e) for e in out]
        elif op == "bulk":
            observed["sha256"] = self._bulk(test)
        elif op == "keys":
            state = self.endpoints[test["party"]].state_snapshot()[test["peer"]]
            observed.update(
                session_id=state.session_id.hex(),
                epoch=state.send.epoch,
                send_key=state.send.key.hex(),
                send_iv=state.send.iv.hex(),
                recv_key=state.recv.key.hex(),
                recv_iv=state.recv.iv.hex(),
            )
        elif op == "rejections":
            ep = self.endpoints[test["party"]]
            observed["rejections"] = [[charged_to, code.value] for charged_to, code in ep.rejections]
            observed["cut_off"] = ep.cut_off()
        else:
            raise ValueError(f"unknown op {op!r}")

    def _bulk(self, test: dict[str, Any]) -> str:
        sender, receiver = self.endpoints[test["party"]], self.endpoints[test["peer"]]
        template = message_from_json(test["message"])
        digest = hashlib.sha256()
        envelopes = []
        for i in range(test["count"]):
            out = sender.send(replace(template, meta={**template.meta, "i": i}))
            if len(out) != 1:
                raise VectorMismatch(test, "output", "one envelope per bulk message", f"{len(out)} envelopes")
            delivered, _ = receiver.receive(out[0], link=test.get("link", ""))
            if len(delivered) != 1:
                raise VectorMismatch(test, "delivered", f"bulk message {i} delivered", "nothing")
            digest.update(len(out[0]).to_bytes(4, "big") + out[0])
            envelopes.append(out[0])
        self.outputs[test["tcId"]] = envelopes
        return digest.hexdigest()


def check(test: dict[str, Any], observed: dict[str, Any]) -> None:
    for key, value in observed.items():
        if test.get(key) != value:
            raise VectorMismatch(test, key, test.get(key), value)
    if test.get("result") == "valid" and "error_code" in test:
        raise VectorMismatch(test, "error_code", "none on a valid case", test["error_code"])


def replay(document: dict[str, Any], *, until: int | None = None, groups: set[int] | None = None) -> int:
    """Re-run the tests of a vector file (optionally only the groups holding the given tcIds,
    up to tcId `until`); raise VectorMismatch at the first difference. Returns the count run."""
    count = 0
    for group in document["testGroups"]:
        ids = {t["tcId"] for t in group["tests"]}
        if groups is not None and not ids & groups:
            continue
        ex = Executor(group)
        for test in group["tests"]:
            if until is not None and test["tcId"] > until:
                return count
            try:
                observed = ex.run(test)
            except VectorMismatch:
                raise
            except Exception as exc:  # anything but ProtocolError is a failure of the implementation
                raise VectorMismatch(test, "exception", "ProtocolError or success", f"{type(exc).__name__}: {exc}") from exc
            check(test, observed)
            count += 1
    return count
