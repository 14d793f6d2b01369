"""Golden vectors: every byte is reproduced and every negative case raises its recorded code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from protocol import WIRE_VERSION, ErrorCode, Limits, ProtocolError, peek_header, schema_hash
from protocol.conformance import FILES, VECTOR_DIR, VectorMismatch, build_all, dump, replay


def _load(name: str) -> dict:
    return json.loads((VECTOR_DIR / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", FILES)
def test_vectors_replay_byte_for_byte(name):
    doc = _load(name)
    assert doc["wireVersion"] == WIRE_VERSION and doc["schemaHash"] == schema_hash()
    assert replay(doc) == doc["numberOfTests"]


@pytest.mark.parametrize("name", FILES)
def test_vector_files_are_well_formed(name):
    doc = _load(name)
    ids = [t["tcId"] for g in doc["testGroups"] for t in g["tests"]]
    assert ids == list(range(1, len(ids) + 1))
    for group in doc["testGroups"]:
        for t in group["tests"]:
            assert t["comment"] and t["result"] in ("valid", "invalid")
            if t["result"] == "invalid":
                assert ErrorCode(t["error_code"])
            if t["op"] in ("decode", "receive"):
                assert "construction" in t
                if isinstance(t["input"], dict):  # a large input given by its digest and length
                    assert set(t["input"]) == {"sha256", "length"}
                else:  # hex of the exact bytes (fromhex raises on anything else)
                    assert len(bytes.fromhex(t["input"])) * 2 == len(t["input"])


def test_vector_files_are_up_to_date():
    fresh = build_all()
    for name in FILES:
        text = (VECTOR_DIR / name).read_text(encoding="utf-8")
        assert text == dump(fresh[name]), f"{name} is out of date: run python -m protocol.conformance"


def test_tampered_vector_is_detected():
    doc = _load("codec.json")
    test = doc["testGroups"][0]["tests"][0]
    wire = bytearray.fromhex(test["wire"])
    wire[-1] ^= 1
    test["wire"] = wire.hex()
    with pytest.raises(VectorMismatch, match="wire differs"):
        replay(doc)
    doc = _load("endpoint_secure.json")
    neg = next(t for g in doc["testGroups"] for t in g["tests"] if t.get("error_code") == "REPLAY")
    neg["error_code"] = "STALE"
    with pytest.raises(VectorMismatch, match="error_code differs"):
        replay(doc)


def test_vectors_cover_the_required_cases():
    codes = {}
    comments = []
    types = set()
    for name in FILES:
        for g in _load(name)["testGroups"]:
            for t in g["tests"]:
                codes.setdefault(t.get("error_code", "valid"), 0)
                codes[t.get("error_code", "valid")] += 1
                comments.append(t["comment"])
                if t["result"] == "valid" and t["op"] in ("send", "encode"):
                    types.add((g.get("suite", "plaintext"), t["message"]["type"]))
    required = {c.value for c in ErrorCode}  # every code is pinned by at least one vector
    assert required <= set(codes)
    from protocol import APPLICATION_TYPES

    for suite in ("plaintext", "secure"):
        assert {t for s, t in types if s == suite} == set(APPLICATION_TYPES), suite
    assert any("tag" in c for c in comments) and any("header byte" in c for c in comments)
    assert {"receive", "decode", "send", "encode", "rekey", "keys", "bulk", "rejections"} <= {
        t["op"] for name in FILES for g in _load(name)["testGroups"] for t in g["tests"]
    }


def test_generator_cli_check_mode():
    proc = subprocess.run([sys.executable, "-m", "protocol.conformance", "--check"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_peek_header_runs_exactly_the_framing_checks():
    """§9: peek_header fails like decode on steps 1-11 and returns the header otherwise."""
    body_codes = {"ENCRYPTED", "DISALLOWED_DTYPE", "MANIFEST_MISMATCH"}
    for g in _load("codec.json")["testGroups"]:
        for t in g["tests"]:
            if t["op"] != "decode":
                continue
            data = bytes.fromhex(t["input"])
            limits = Limits(**t.get("limits", {}))
            if t["result"] == "valid" or t["error_code"] in body_codes:
                assert peek_header(data, limits=limits)["type"], t["tcId"]
            else:
                with pytest.raises(ProtocolError) as info:
                    peek_header(data, limits=limits)
                assert info.value.code.value == t["error_code"], t["tcId"]
