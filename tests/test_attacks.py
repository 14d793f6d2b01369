"""Tests of the attacks package: metrics against hand-computed values, attackers on planted and
random signal, CV-only model selection, baselines, membership TPR at low FPR, and the tap."""

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

from attacks.attribute import ATTACKERS, attribute_inference, kmeans_vmeasure
from attacks.membership import centroid_difference_features, membership_inference
from attacks.metrics import classification_metrics, membership_metrics, tpr_at_fpr
from attacks.tap import Artifact, Eavesdropper, load_artifact


# ============================================================================ metrics
def test_binary_classification_metrics_match_hand_computed_values():
    y = np.array([0, 0, 0, 1, 1])
    p1 = np.array([0.1, 0.6, 0.2, 0.4, 0.9])
    m = classification_metrics(y, np.column_stack([1 - p1, p1]), 2)
    # AUC: member 0.4 beats 0.1 and 0.2, 0.9 beats all three -> 5 of 6 pairs.
    assert m["auc"] == pytest.approx(5 / 6)
    # predictions [0, 1, 0, 0, 1]: class 0 P=R=2/3, class 1 P=R=1/2
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["weighted_f1"] == pytest.approx((3 * 2 / 3 + 2 * 1 / 2) / 5)
    assert m["weighted_precision"] == pytest.approx(3 / 5)
    assert m["weighted_recall"] == pytest.approx(m["accuracy"])
    assert m["n"] == 5


def test_multiclass_auc_is_macro_ovr_and_survives_a_class_missing_from_test():
    y = np.array([0, 0, 1, 1])  # class 2 never occurs in the test users
    proba = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.3, 0.5], [0.1, 0.6, 0.3]])
    m = classification_metrics(y, proba, 3)
    # class 0: perfect (1.0); class 1: scores [.1,.3 | .3,.6] -> (1 + .5 + 1 + 1) / 4 = .875
    assert m["auc"] == pytest.approx((1.0 + 0.875) / 2)
    assert m["accuracy"] == pytest.approx(0.75)  # predictions [0, 0, 2, 1]
    assert m["balanced_accuracy"] == pytest.approx((1.0 + 0.5) / 2)


def test_classification_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="class indices"):
        classification_metrics(np.array([0, 3]), np.full((2, 2), 0.5), 2)
    with pytest.raises(ValueError, match="rows"):
        classification_metrics(np.array([0, 1, 1]), np.full((2, 2), 0.5), 2)


def test_membership_metrics_hand_computed_roc():
    nonmembers = np.array([0.0, 1.0, 2.0, 3.0])
    members = np.array([0.5, 2.5, 5.0, 6.0])
    scores = np.concatenate([nonmembers, members])
    is_member = np.r_[np.zeros(4, bool), np.ones(4, bool)]
    m = membership_metrics(scores, is_member, threshold=2.5)
    assert m["auc"] == pytest.approx(12 / 16)
    # ROC passes (0, .5) and (.25, .75): at FPR .125 the interpolated TPR is .625
    assert m["tpr_at_fpr"]["0.05"] == pytest.approx(0.5 + 0.25 * 0.05 / 0.25)
    assert m["tpr_at_fpr"]["0.001"] == pytest.approx(0.5 + 0.25 * 0.001 / 0.25)
    assert m["advantage"] == pytest.approx(0.5)
    # threshold 2.5 -> TPR .75, FPR .25 -> (1 + .75 - .25) / 2
    assert m["paper_single_threshold_auc"] == pytest.approx(0.75)
    assert m["threshold_source"] == "training"
    # 4 non-members cannot resolve any FPR below 25%
    assert all(m["limited_by_sample_size"].values())
    fpr = np.array([0.0, 0.0, 0.25, 0.25, 1.0])
    tpr = np.array([0.0, 0.5, 0.5, 0.75, 1.0])
    assert tpr_at_fpr(fpr, tpr, 0.125) == pytest.approx(0.625)
    assert tpr_at_fpr(fpr, tpr, 0.25) == pytest.approx(0.75)  # vertical jump: the top is reachable


def test_membership_tpr_at_low_fpr_and_sample_size_flag():
    nonmembers = np.arange(100, dtype=float)  # 100 non-members: 1% FPR is one false positive
    members = np.r_[np.full(30, 1000.0), np.full(70, -1.0)]  # 30 confidently identified
    scores = np.r_[nonmembers, members]
    is_member = np.r_[np.zeros(100, bool), np.ones(100, bool)]
    m = membership_metrics(scores, is_member)
    assert m["tpr_at_fpr"] == {"0.05": pytest.approx(0.3), "0.01": pytest.approx(0.3), "0.001": pytest.approx(0.3)}
    assert m["limited_by_sample_size"] == {"0.05": False, "0.01": False, "0.001": True}
    assert m["auc"] == pytest.approx(0.3)  # a poor average hides the confident 30%
    assert m["threshold_source"].startswith("evaluation data")
    # the same 30 members ranked just below the top non-member: nobody is identified at FPR 0,
    # TPR@1% is still 30%, and TPR@0.1% is interpolated towards (0, 0)
    weak = membership_metrics(np.r_[nonmembers, np.full(30, 98.5), np.full(70, -1.0)], is_member)
    assert weak["tpr_at_fpr"]["0.01"] == pytest.approx(0.3)
    assert weak["tpr_at_fpr"]["0.001"] == pytest.approx(0.03)


def test_membership_metrics_constant_score_is_chance_and_errors_are_clear():
    is_member = np.r_[np.zeros(50, bool), np.ones(50, bool)]
    m = membership_metrics(np.zeros(100), is_member)
    assert m["auc"] == 0.5 and m["advantage"] == 0.0
    assert m["tpr_at_fpr"]["0.05"] == pytest.approx(0.05)
    assert m["paper_single_threshold_auc"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="both members and non-members"):
        membership_metrics(np.zeros(3), np.ones(3, bool))
    with pytest.raises(ValueError, match="NaN"):
        membership_metrics(np.array([0.0, np.nan]), np.array([0, 1]))


# ============================================================================ attribute
def _planted(n: int, d: int, strength: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, d))
    X[:, :4] += strength * (2 * y[:, None] - 1)
    return X, y


def test_attackers_find_planted_signal_and_beat_baseline():
    X, y = _planted(500, 16, 0.6, seed=1)
    res = attribute_inference(X[:400], y[:400], X[400:], y[400:], seed=0)
    assert set(res.attackers) == set(ATTACKERS)
    assert res.best in ATTACKERS and res.cv_auc[res.best] == max(res.cv_auc.values())
    assert res.metrics["auc"] > 0.85
    assert res.metrics["balanced_accuracy"] > 0.7
    for name in ATTACKERS:
        assert res.attackers[name]["auc"] > res.baseline["auc"] + 0.2
    assert res.test_proba.shape == (100, 2)


def test_attackers_are_at_chance_on_random_features():
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(500, 16)), rng.integers(0, 2, 500)
    res = attribute_inference(X[:350], y[:350], X[350:], y[350:], seed=0)
    # the best is chosen on training CV, so its test AUC is an unbiased draw around 0.5
    assert abs(res.metrics["auc"] - 0.5) < 0.12
    assert all(abs(v - 0.5) < 0.12 for v in res.cv_auc.values())


def test_best_attacker_is_chosen_by_training_cv_not_by_test_metrics():
    # Training users follow a non-linear rule (|x0| small) that trees learn and a linear model
    # cannot; the private users behave the opposite way, so on the test set the attacker that
    # learnt the rule is the worst. Selection on the test set would pick another attacker.
    rng = np.random.default_rng(3)
    X = rng.normal(size=(600, 3))
    rule = (np.abs(X[:, 0]) < 0.67).astype(int)
    y_train, y_test = rule[:450], 1 - rule[450:]
    res = attribute_inference(X[:450], y_train, X[450:], y_test, attackers=("lr", "gb"), seed=0)
    assert res.best == "gb"
    assert res.cv_auc["gb"] > 0.9 > 0.7 > res.cv_auc["lr"]
    test_auc = {a: m["auc"] for a, m in res.attackers.items()}
    assert max(test_auc, key=test_auc.get) == "lr"  # what peeking at the test set would choose
    assert res.metrics == res.attackers["gb"]


def test_baseline_is_the_training_prior():
    rng = np.random.default_rng(4)
    y_train = np.r_[np.zeros(60, int), np.ones(30, int), np.full(10, 2)]
    y_test = np.r_[np.zeros(10, int), np.ones(20, int), np.full(10, 2)]
    X_train, X_test = rng.normal(size=(100, 5)), rng.normal(size=(40, 5))
    res = attribute_inference(X_train, y_train, X_test, y_test, seed=0, n_classes=3)
    b = res.baseline
    assert b["auc"] == 0.5
    assert b["balanced_accuracy"] == pytest.approx(1 / 3)
    assert b["accuracy"] == pytest.approx(10 / 40)  # everyone gets the training majority, class 0
    assert b["weighted_recall"] == pytest.approx(10 / 40)
    # only class 0 is ever predicted: its F1 is 2*(.25*1)/(1.25) = .4, weighted by 10/40
    assert b["weighted_f1"] == pytest.approx(0.4 * 10 / 40)
    d = res.to_dict()
    json.dumps(d, allow_nan=False)
    assert {"best", "metrics", "baseline", "attackers", "cv_auc", "n_train", "n_test"} <= set(d)
    assert d["n_train"] == 100 and d["n_test"] == 40 and d["classes"] == [0, 1, 2]


def test_no_features_means_every_attacker_is_the_baseline():
    y = np.r_[np.zeros(30, int), np.ones(20, int)]
    y_test = np.r_[np.zeros(4, int), np.ones(6, int)]
    res = attribute_inference(np.zeros((50, 0)), y, np.zeros((10, 0)), y_test)
    assert res.baseline["auc"] == 0.5 and res.baseline["accuracy"] == pytest.approx(0.4)
    assert all(m == res.baseline for m in res.attackers.values())


def test_attribute_inference_is_deterministic_and_accepts_string_labels():
    X, y = _planted(300, 8, 0.4, seed=5)
    labels = np.where(y == 1, "F", "M")
    a = attribute_inference(X[:240], labels[:240], X[240:], labels[240:], seed=7)
    b = attribute_inference(X[:240], labels[:240], X[240:], labels[240:], seed=7)
    assert a.to_dict() == b.to_dict()
    assert a.classes == ["F", "M"]
    np.testing.assert_array_equal(a.test_proba, b.test_proba)


def test_attribute_inference_errors_are_clear():
    X = np.zeros((10, 2))
    with pytest.raises(ValueError, match="same label"):
        attribute_inference(X, np.zeros(10, int), X, np.r_[np.zeros(5, int), np.ones(5, int)])
    with pytest.raises(ValueError, match="unknown attacker"):
        attribute_inference(X, np.arange(10) % 2, X, np.arange(10) % 2, attackers=("svm",))
    with pytest.raises(ValueError, match="NaN"):
        attribute_inference(np.full((10, 2), np.nan), np.arange(10) % 2, X, np.arange(10) % 2)


def test_kmeans_vmeasure_separates_clustered_from_random():
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, 200)
    clustered = rng.normal(size=(200, 4)) + 6.0 * y[:, None]
    assert kmeans_vmeasure(clustered, y, k=2, seed=0) > 0.95
    assert kmeans_vmeasure(rng.normal(size=(200, 4)), y, k=2, seed=0) < 0.05


# ============================================================================ membership
def test_membership_inference_on_planted_and_random_features():
    rng = np.random.default_rng(8)
    member = rng.integers(0, 2, 800).astype(bool)
    F = rng.normal(size=(800, 10))
    F[:, 2] += 1.5 * member
    res = membership_inference(F[:400], member[:400], F[400:], member[400:], seed=0)
    assert res["learned"]["auc"] > 0.75 and res["threshold"]["auc"] > 0.75
    assert res["threshold"]["statistic"] == "feature 2"
    assert res["threshold"]["orientation"] == "higher = member"
    assert res["baseline"]["auc"] == 0.5 and res["baseline"]["advantage"] == 0.0
    assert res["best"] in ("learned", "threshold")
    json.dumps(res, allow_nan=False)
    # a negative shift is found too, with the score flipped
    F2 = rng.normal(size=(800, 10))
    F2[:, 5] -= 1.5 * member
    flipped = membership_inference(F2[:400], member[:400], F2[400:], member[400:], seed=0)
    assert flipped["threshold"]["orientation"] == "lower = member"
    assert flipped["threshold"]["auc"] > 0.75

    noise = rng.normal(size=(800, 10))
    chance = membership_inference(noise[:400], member[:400], noise[400:], member[400:], seed=0)
    assert abs(chance["learned"]["auc"] - 0.5) < 0.1
    assert abs(chance["learned"]["paper_single_threshold_auc"] - 0.5) < 0.1


def test_centroid_difference_features_hand_computed():
    items = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [4.0, 0.0]], dtype=np.float32)
    user_items = [np.array([0, 1]), np.array([], dtype=np.int64), np.array([3])]
    recommended = np.array([[2, 3], [3, 2], [2, -1]])  # -1 pads a list shorter than k
    f = centroid_difference_features(user_items, recommended, items)
    assert f.shape == (3, 2) and f.dtype == np.float32
    # user 0: mean([1,0],[0,1]) = [.5,.5]; rec 2/3*[2,2] + 1/3*[4,0] = [8/3, 4/3]
    np.testing.assert_allclose(f[0], [0.5 - 8 / 3, 0.5 - 4 / 3], rtol=1e-6)
    # user 1: no interactions -> zero centroid; rec 2/3*[4,0] + 1/3*[2,2]
    np.testing.assert_allclose(f[1], [-(8 / 3 + 2 / 3), -2 / 3], rtol=1e-6)
    # user 2: only rank 1 is valid, its weight renormalises to 1
    np.testing.assert_allclose(f[2], [4.0 - 2.0, 0.0 - 2.0], rtol=1e-6)
    with pytest.raises(ValueError, match="item"):
        centroid_difference_features([np.array([9])], np.array([[0]]), items)


# ============================================================================ tap
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


def _real_codec() -> Any:
    protocol = pytest.importorskip("protocol")
    if not all(hasattr(protocol, n) for n in ("encode", "decode", "peek_header", "Message")):
        pytest.skip("protocol does not export encode/decode/peek_header/Message yet")

    class Real:
        decode_calls = 0

        def encode(self, msg: FakeMessage, suite: str = "plaintext") -> bytes:
            if suite != "plaintext":
                pytest.skip("secure envelopes need a protocol session; covered with the fake codec")
            return protocol.encode(
                protocol.Message(type=msg.type, sender=msg.sender, receiver=msg.receiver, arrays=msg.arrays, meta=msg.meta, round=msg.round)
            )

        decode = staticmethod(protocol.decode)
        peek_header = staticmethod(protocol.peek_header)

    return Real()


@pytest.fixture(params=["fake", "real"])
def codec(request):
    return FakeCodec() if request.param == "fake" else _real_codec()


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
    import attacks.tap as tap_module

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
    assert isinstance(back, Artifact) and back.name == "user/embeddings" and back.kind == "user_embeddings"
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
    from protocol import peek_header

    queue, delivered = list(first), []
    while queue:
        envelope = queue.pop(0)
        tap.observe(envelope)
        got, out = endpoints[peek_header(envelope)["receiver"]].receive(envelope)
        delivered.extend(got)
        queue.extend(out)
    return delivered


@pytest.mark.parametrize("suite", ["plaintext", "secure"])
def test_tap_on_real_protocol_endpoints(suite):
    protocol = pytest.importorskip("protocol")
    if not hasattr(protocol, "Endpoint"):
        pytest.skip("protocol.Endpoint not available yet")
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
        assert s["could_not_decode"]["reasons"].get("ENCRYPTED", 0) >= 3
        assert s["per_type"]["artifact"]["decoded"] == 0
        assert {"sender", "receiver", "body_length"} <= set(s["still_learns"]["header_fields"])
