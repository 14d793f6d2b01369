"""Identities, the registry of pinned keys, and the seeded rng."""

from __future__ import annotations

import os
import stat

import pytest

from protocol import Identity, Registry, seeded_rng


@pytest.mark.parametrize("fmt", ["pem", "raw"])
def test_identity_save_load_round_trip_with_private_mode(tmp_path, fmt):
    ident = Identity.generate(name="source")
    path = tmp_path / f"source.{fmt}"
    ident.save(path, format=fmt)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    back = Identity.load(path, name="source")
    assert back.private_bytes() == ident.private_bytes() and back.public_bytes() == ident.public_bytes()
    assert back.name == "source"
    if fmt == "pem":
        assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_identity_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="32 raw bytes"):
        Identity.from_private_bytes(b"short")
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"x" * 10)
    with pytest.raises(ValueError, match="expected"):
        Identity.load(bad)
    with pytest.raises(ValueError, match="format"):
        Identity.generate().save(tmp_path / "k", format="der")


def test_identity_repr_does_not_leak_private_key():
    ident = Identity.from_private_bytes(bytes(range(32)), name="x")
    assert bytes(range(32)).hex() not in repr(ident)


def test_registry_json_round_trip_and_pinning(tmp_path):
    a, b = Identity.generate(), Identity.generate()
    reg = Registry({"a": a.public_bytes()})
    reg.add("b", b.public_bytes())
    reg.add("b", b.public_bytes())  # idempotent
    with pytest.raises(ValueError, match="already pinned"):
        reg.add("b", a.public_bytes())
    with pytest.raises(ValueError, match="32-byte"):
        reg.add("c", b"xx")
    assert Registry.from_json(reg.to_json()) == reg
    path = tmp_path / "registry.json"
    reg.save(path)
    assert Registry.load(path) == reg and reg.get("a") == a.public_bytes() and "a" in reg
    with pytest.raises(KeyError, match="no pinned key"):
        reg.get("zed")
    with pytest.raises(ValueError, match="registry document"):
        Registry.from_json('{"keys": 1}')


def test_seeded_rng_is_deterministic_and_stream_like():
    r1, r2 = seeded_rng("s"), seeded_rng(b"s")
    assert r1(5) + r1(40) == r2(45)
    assert seeded_rng("s")(32) != seeded_rng("t")(32)
    assert len(seeded_rng("s")(100)) == 100
