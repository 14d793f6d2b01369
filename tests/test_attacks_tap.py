"""Tests of the eavesdropper tap (attacks/tap.py) and of what it writes to disk
(attacks/capture_files.py): exact bytes, lazy decoding, reassembly, the secure suite, saving,
with a stand-in codec and with the real protocol."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load as st_load
from safetensors.numpy import load_file
from safetensors.numpy import save as st_save

import attacks.tap as tap_module
import protocol
from attacks.tap import Eavesdropper, load_artifact


class FakeProtocolError(Exception):
    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code, self.detail = code, detail


@dataclass
class FakeMessage:
    type: str
    sender: str
    receiver: str
    arrays: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    round: int = 0


class FakeCodec:
    """A stand-in wire format (b'FAKE' + header length + JSON header + safetensors body) with
    the protocol's behaviour: header readable on every envelope, body refused when secure."""

    def __init__(self) -> None:
        self.decode_calls = 0

    def encode(self, msg: FakeMessage, suite: str = "plaintext") -> bytes:
        body = st_save(msg.arrays) if msg.arrays else b""
        if suite == "secure":
            body = bytes(b ^ 0x5A for b in body)
        header = {
            "type": msg.type,
            "sender": msg.sender,
            "receiver": msg.receiver,
            "suite": suite,
            "round": msg.round,
            "body_length": len(body),
            "session_id": b"\x01\x02".hex(),
        }
        if suite == "plaintext":
            header["meta"] = msg.meta
        raw = json.dumps(header, sort_keys=True).encode()
        return b"FAKE" + len(raw).to_bytes(4, "big") + raw + body

    def peek_header(self, data: bytes) -> dict:
        if data[:4] != b"FAKE" or len(data) < 8:
            raise FakeProtocolError("BAD_MAGIC", "not an envelope")
        n = int.from_bytes(data[4:8], "big")
        return json.loads(data[8 : 8 + n])

    def decode(self, data: bytes) -> FakeMessage:
        self.decode_calls += 1
        h = self.peek_header(data)
        if h["suite"] != "plaintext":
            raise FakeProtocolError("ENCRYPTED", "secure envelope: body is encrypted")
        body = data[8 + int.from_bytes(data[4:8], "big") :]
        arrays = st_load(body) if body else {}
        return FakeMessage(h["type"], h["sender"], h["receiver"], arrays, h["meta"], h["round"])


class RealCodec:
    """The real protocol's plaintext codec behind the FakeCodec interface (secure envelopes
    need a session: those tests use the fake codec or real endpoints)."""

    decode_calls = 0
    decode = staticmethod(protocol.decode)
    peek_header = staticmethod(protocol.peek_header)

    def encode(self, msg: FakeMessage) -> bytes:
        return protocol.encode(
            protocol.Message(type=msg.type, sender=msg.sender, receiver=msg.receiver, arrays=msg.arrays, meta=msg.meta, round=msg.round)
        )


@pytest.fixture(params=["fake", "real"])
def codec(request) -> Any:
    return FakeCodec() if request.param == "fake" else RealCodec()


def _tap(codec, **kw) -> Eavesdropper:
    if isinstance(codec, FakeCodec):
        return Eavesdropper(decode=codec.decode, peek_header=codec.peek_header, **kw)
    return Eavesdropper(**kw)  # the real protocol, imported lazily by the tap


def _chunks(name: str, ids: np.ndarray, emb: np.ndarray, n_chunks: int, kind: str = "user_embeddings") -> list[FakeMessage]:
    parts = np.array_split(np.arange(ids.size), n_chunks)
    return [
        FakeMessage(
            "artifact",
            "source",
            "target",
            {"user_ids": ids[p].astype(np.int64), "embedding": emb[p]},
            {"artifact": name, "kind": kind, "chunk": c, "chunks": n_chunks, "defense": "none"},
        )
        for c, p in enumerate(parts)
    ]


def test_tap_records_exact_bytes_and_decodes_lazily(codec):
    tap = _tap(codec)
    envelopes = [codec.encode(FakeMessage("control", "coordinator", "source", meta={"op": "train", "i": i})) for i in range(5)]
    tap.observe(envelopes[0])
    tap(bytearray(envelopes[1]))  # callable like a relay tap; copies mutable buffers
    tap.observe_many(envelopes[2:], point="relay")
    assert codec.decode_calls == 0  # observing is append-only
    recs = tap.intercepts
    assert [r.raw for r in recs] == envelopes and [r.size for r in recs] == [len(e) for e in envelopes]
    assert [r.point for r in recs] == ["wire", "wire", "relay", "relay", "relay"]
    assert all(r.message is not None and r.error is None for r in recs)
    assert recs[3].message.meta["i"] == 3 and recs[3].header["type"] == "control"


def test_tap_survives_garbage(codec):
    tap = _tap(codec)
    good = codec.encode(FakeMessage("control", "coordinator", "source", meta={"op": "x"}))
    for junk in (b"", b"\x00garbage", good[: len(good) // 2], None, "text", 42):
        tap.observe(junk)  # type: ignore[arg-type]
    tap.observe(good)
    recs = tap.intercepts
    assert len(recs) == 7
    assert all(r.error for r in recs[:6]) and recs[6].message is not None
    s = tap.summary()
    assert s["intercepts"] == 7 and s["decoded"]["count"] == 1 and s["could_not_decode"]["count"] == 6
    assert s["could_not_decode"]["reasons"]["NOT_BYTES"] == 3
    assert tap.artifacts() == {}


def test_tap_retains_only_the_wanted_kinds_but_counts_everything(codec, monkeypatch):
    """Long training runs: per-step artifacts are decoded, counted and dropped (bounded
    memory); the released artifact is kept."""
    monkeypatch.setattr(tap_module, "RETAIN_FLUSH_BYTES", 1)  # decode as it goes
    rng = np.random.default_rng(3)
    ids = np.arange(6, dtype=np.int64)
    kept = _chunks("released", ids, rng.normal(size=(6, 2)).astype(np.float32), 2, kind="user_representation")
    steps = [_chunks(f"batch@{i}", ids, rng.normal(size=(6, 2)).astype(np.float32), 1, kind="x_trans_batch")[0] for i in range(4)]
    tap = _tap(codec, retain_kinds={"user_representation"})
    for m in [*steps, *kept]:
        tap.observe(codec.encode(m))
    assert all(r.raw == b"" and r.message is None for r in tap._intercepts[:4])  # dropped while observing
    assert list(tap.artifacts()) == ["released"]
    s = tap.summary()
    assert s["intercepts"] == 6 and s["decoded"]["count"] == 6 and s["could_not_decode"]["count"] == 0


def test_tap_reassembles_out_of_order_chunks_and_ignores_duplicates(codec):
    rng = np.random.default_rng(9)
    ids = np.arange(10, 40, dtype=np.int64)
    emb = rng.normal(size=(30, 4)).astype(np.float32)
    chunks = _chunks("user_embeddings", ids, emb, 3)
    tap = _tap(codec)
    tap.observe(codec.encode(FakeMessage("control", "coordinator", "source", meta={"op": "release"})))
    for c in (2, 0, 2, 1, 0):
        tap.observe(codec.encode(chunks[c]))
    arts = tap.artifacts()
    assert list(arts) == ["user_embeddings"]
    a = arts["user_embeddings"]
    assert a.complete and a.kind == "user_embeddings" and a.meta["defense"] == "none"
    assert "chunk" not in a.meta and "chunks" not in a.meta
    np.testing.assert_array_equal(a.user_ids, ids)
    np.testing.assert_array_equal(a.features("embedding"), emb)
    np.testing.assert_array_equal(a.features(), emb)
    np.testing.assert_array_equal(a.features_for(np.array([39, 10])), emb[[29, 0]])
    with pytest.raises(KeyError, match="no rows"):
        a.features_for(np.array([5]))
    s = tap.summary()
    assert s["per_type"]["artifact"]["count"] == 5
    assert s["artifacts"]["user_embeddings"]["users"] == 30
    assert s["artifacts"]["user_embeddings"]["fields"] == {"embedding": [4]}


def test_tap_flags_missing_chunks_and_keeps_later_transmissions_apart():
    codec = FakeCodec()
    ids = np.arange(12, dtype=np.int64)
    emb = np.arange(24, dtype=np.float32).reshape(12, 2)
    tap = _tap(codec)
    first = _chunks("e", ids, emb, 3)
    for c in (0, 2):
        tap.observe(codec.encode(first[c]))
    again = _chunks("e", ids, emb + 100, 2)
    for m in again:
        m.round = 1
        tap.observe(codec.encode(m))
    arts = tap.artifacts()
    assert list(arts) == ["e", "e#2"]
    assert not arts["e"].complete and arts["e"].missing_chunks == (1,)
    np.testing.assert_array_equal(arts["e"].user_ids, np.r_[0:4, 8:12])
    assert arts["e#2"].complete and arts["e#2"].round == 1
    np.testing.assert_array_equal(arts["e#2"].features(), emb + 100)


def test_tap_against_secure_suite_sees_only_headers_and_sizes():
    codec = FakeCodec()
    tap = _tap(codec)
    ids = np.arange(20, dtype=np.int64)
    for m in _chunks("user_embeddings", ids, np.ones((20, 8), np.float32), 2):
        tap.observe(codec.encode(m, suite="secure"))
    recs = tap.intercepts
    assert all(r.message is None and r.error.startswith("ENCRYPTED") for r in recs)
    assert all(r.header["type"] == "artifact" for r in recs)
    assert tap.artifacts() == {}
    s = tap.summary()
    assert s["could_not_decode"] == {"count": 2, "bytes": sum(r.size for r in recs), "reasons": {"ENCRYPTED": 2}, "types": {"artifact": 2}}
    assert {"type", "sender", "receiver", "body_length"} <= set(s["still_learns"]["header_fields"])
    assert s["still_learns"]["flows"] == [{"sender": "source", "receiver": "target", "count": 2, "bytes": s["bytes"]}]
    assert s["order"] == [{"type": "artifact", "sender": "source", "receiver": "target", "count": 2, "bytes": s["bytes"]}]


def test_tap_keep_raw_false_still_decodes_but_drops_bytes():
    codec = FakeCodec()
    tap = _tap(codec, keep_raw=False)
    for m in _chunks("e", np.arange(4, dtype=np.int64), np.ones((4, 2), np.float32), 2):
        tap.observe(codec.encode(m))
    assert tap.artifacts()["e"].user_ids.tolist() == [0, 1, 2, 3]
    assert all(r.raw == b"" and r.size > 0 for r in tap.intercepts)


def test_tap_save_writes_readable_files(codec, tmp_path):
    rng = np.random.default_rng(10)
    ids = np.arange(1, 9, dtype=np.int64)
    emb = rng.normal(size=(8, 3)).astype(np.float32)
    tap = _tap(codec)
    for m in _chunks("user/embeddings", ids, emb, 2):
        tap.observe(codec.encode(m))
    tap.observe(b"junk")
    users = pd.DataFrame({"user_id": [1, 2, 100], "gender": ["F", "M", "F"], "age": [25, 40, 60]})
    paths = tap.save(tmp_path / "intercepted", users=users)
    names = sorted(p.name for p in paths)
    assert names == ["artifact-user_embeddings.safetensors", "index.json", "users.csv"]
    st = tmp_path / "intercepted" / "artifact-user_embeddings.safetensors"
    tensors = load_file(st)
    np.testing.assert_array_equal(tensors["user_ids"], ids)
    np.testing.assert_array_equal(tensors["embedding"], emb)
    back = load_artifact(st)
    assert back.name == "user/embeddings" and back.kind == "user_embeddings"
    assert back.meta["defense"] == "none"
    np.testing.assert_array_equal(back.features(), emb)
    table = pd.read_csv(tmp_path / "intercepted" / "users.csv")
    assert table["user_id"].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 100]
    assert table["intercepted"].tolist() == [True] * 8 + [False]
    assert table.loc[table.user_id == 2, "gender"].item() == "M" and math.isnan(table.loc[table.user_id == 3, "age"].item())
    index = json.loads((tmp_path / "intercepted" / "index.json").read_text())
    assert len(index["intercepts"]) == 3 and index["intercepts"][2]["decoded"] is False
    assert index["intercepts"][0]["artifact"] == "user/embeddings" and index["intercepts"][0]["chunk"] == 0
    assert index["artifact_files"] == {"user/embeddings": st.name}
    assert index["summary"]["intercepts"] == 3
    # saving twice gives byte-identical files (deterministic outputs of a run)
    first = st.read_bytes()
    tap.save(tmp_path / "intercepted", users=users)
    assert st.read_bytes() == first


def _pump(endpoints: dict, first: list[bytes], tap: Eavesdropper) -> list:
    """Deliver envelopes between real protocol endpoints until quiet, tapping every one."""
    queue, delivered = list(first), []
    while queue:
        envelope = queue.pop(0)
        tap.observe(envelope)
        got, out = endpoints[protocol.peek_header(envelope)["receiver"]].receive(envelope)
        delivered.extend(got)
        queue.extend(out)
    return delivered


@pytest.mark.parametrize("suite", ["plaintext", "secure"])
def test_tap_on_real_protocol_endpoints(suite):
    names = ("source", "target")
    ids = {n: protocol.Identity.from_private_bytes(bytes([i + 1]) * 32, name=n) for i, n in enumerate(names)}
    registry = protocol.Registry({n: ids[n].public_bytes() for n in names})
    keys = {n: ({"identity": ids[n], "registry": registry} if suite == "secure" else {}) for n in names}
    endpoints = {n: protocol.Endpoint(n, suite=suite, session_seed=b"t", rng=protocol.seeded_rng(n), **keys[n]) for n in names}
    rng = np.random.default_rng(11)
    user_ids = np.arange(50, dtype=np.int64)
    emb = rng.normal(size=(50, 6)).astype(np.float32)
    out: list[bytes] = []
    for m in _chunks("user_embeddings", user_ids, emb, 3):
        out += endpoints["source"].send(protocol.Message(type=m.type, sender=m.sender, receiver=m.receiver, arrays=m.arrays, meta=m.meta))
    tap = Eavesdropper()
    delivered = _pump(endpoints, out, tap)
    assert sum(1 for d in delivered if d.type == "artifact") == 3  # the target got everything
    s = tap.summary()
    assert s["per_type"]["artifact"]["count"] == 3
    if suite == "plaintext":
        a = tap.artifacts()["user_embeddings"]
        np.testing.assert_array_equal(a.user_ids, user_ids)
        np.testing.assert_array_equal(a.features(), emb)
    else:
        assert tap.artifacts() == {}
        # the three artifact chunks and the handshake: every body is encrypted
        assert s["could_not_decode"]["types"]["artifact"] == 3 and list(s["could_not_decode"]["reasons"]) == ["ENCRYPTED"]
        assert s["per_type"]["artifact"]["decoded"] == 0
        assert {"sender", "receiver", "body_length"} <= set(s["still_learns"]["header_fields"])
