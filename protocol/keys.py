"""Long-term identities (Ed25519), the registry of pinned public keys, and a seeded rng."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

_PEM_PRIVATE = b"-----BEGIN PRIVATE KEY-----"
_REGISTRY_FORMAT = "cdrsim-registry/1"


class Identity:
    """The Ed25519 identity key of one party (signs its handshake messages)."""

    def __init__(self, key: Ed25519PrivateKey, name: str = ""):
        if not isinstance(key, Ed25519PrivateKey):
            raise TypeError(f"Identity needs an Ed25519PrivateKey, got {type(key).__name__}")
        self._key = key
        self.name = name

    @classmethod
    def generate(cls, name: str = "") -> Identity:
        return cls(Ed25519PrivateKey.generate(), name)

    @classmethod
    def from_private_bytes(cls, data: bytes, name: str = "") -> Identity:
        if len(data) != 32:
            raise ValueError(f"an Ed25519 private key is 32 raw bytes, got {len(data)}")
        return cls(Ed25519PrivateKey.from_private_bytes(bytes(data)), name)

    def public_bytes(self) -> bytes:
        return self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def private_bytes(self) -> bytes:
        return self._key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def save(self, path: str | os.PathLike, *, format: str = "pem") -> None:
        """Write the private key (PKCS#8 PEM or 32 raw bytes) to a new file with mode 0600."""
        if format == "pem":
            data = self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        elif format == "raw":
            data = self.private_bytes()
        else:
            raise ValueError(f"unknown key file format {format!r}; use 'pem' or 'raw'")
        path = Path(path)
        # Create with 0600 from the start so the key is never readable by others, even briefly.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, data)
        finally:
            os.close(fd)

    @classmethod
    def load(cls, path: str | os.PathLike, name: str = "") -> Identity:
        data = Path(path).read_bytes()
        if data.lstrip().startswith(_PEM_PRIVATE):
            key = serialization.load_pem_private_key(data, password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError(f"{path}: the PEM key is {type(key).__name__}, not Ed25519")
            return cls(key, name)
        if len(data) == 32:
            return cls.from_private_bytes(data, name)
        raise ValueError(f"{path}: expected a PKCS#8 PEM Ed25519 private key or 32 raw bytes, got {len(data)} bytes")

    def __repr__(self) -> str:  # never print the private key
        return f"Identity(name={self.name!r}, public={self.public_bytes().hex()})"


class Registry:
    """Pinned Ed25519 public keys: party name -> 32 raw bytes."""

    def __init__(self, keys: dict[str, bytes] | None = None):
        self._keys: dict[str, bytes] = {}
        for name, public in (keys or {}).items():
            self.add(name, public)

    def add(self, name: str, public_bytes: bytes) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a registry name must be a non-empty str, got {name!r}")
        public_bytes = bytes(public_bytes)
        try:
            Ed25519PublicKey.from_public_bytes(public_bytes)
        except ValueError as exc:
            raise ValueError(f"public key for {name!r} is not a 32-byte Ed25519 key: {exc}") from None
        existing = self._keys.get(name)
        if existing is not None and existing != public_bytes:
            raise ValueError(f"{name!r} is already pinned to a different key; build a new Registry to change it")
        self._keys[name] = public_bytes

    def get(self, name: str) -> bytes:
        try:
            return self._keys[name]
        except KeyError:
            raise KeyError(f"no pinned key for {name!r}; registry has {sorted(self._keys)}") from None

    def public_key(self, name: str) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.get(name))

    def __contains__(self, name: object) -> bool:
        return name in self._keys

    def names(self) -> list[str]:
        return sorted(self._keys)

    def to_json(self) -> str:
        return json.dumps(
            {"format": _REGISTRY_FORMAT, "keys": {n: self._keys[n].hex() for n in sorted(self._keys)}},
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Registry:
        obj = json.loads(text)
        if not isinstance(obj, dict) or obj.get("format") != _REGISTRY_FORMAT or not isinstance(obj.get("keys"), dict):
            raise ValueError(f"not a registry document: expected {{'format': '{_REGISTRY_FORMAT}', 'keys': {{...}}}}")
        return cls({name: bytes.fromhex(hexkey) for name, hexkey in obj["keys"].items()})

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Registry:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Registry) and self._keys == other._keys

    def __repr__(self) -> str:
        return f"Registry({self.names()})"


def seeded_rng(seed: bytes | str) -> Callable[[int], bytes]:
    """A deterministic byte source (SHA-256 in counter mode) for reproducible vectors and runs.

    rng(n) returns the next n bytes of SHA-256(seed || u64be(0)) || SHA-256(seed || u64be(1)) ...
    Not for production secrets: anyone who knows the seed knows every key it produced.
    """
    seed_bytes = seed.encode("utf-8") if isinstance(seed, str) else bytes(seed)
    state = {"counter": 0, "buffer": b""}

    def rng(n: int) -> bytes:
        buf = state["buffer"]
        while len(buf) < n:
            buf += hashlib.sha256(seed_bytes + state["counter"].to_bytes(8, "big")).digest()
            state["counter"] += 1
        state["buffer"] = buf[n:]
        return buf[:n]

    return rng
