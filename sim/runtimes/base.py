"""What a runtime is: it hosts parties (built from JSON-able `PartySpec`s, so that remote
runtimes can build them where they run) and delivers one envelope at a time:
`call(party, envelope, link) -> [envelopes]`. Runtimes differ only in how `call` reaches a
party; the coordinator's router (`sim.coordinator.Relay`) is the same for all of them.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from parties.base import Party

from ..errors import RunError

Observer = Callable[[bytes], None]


@dataclass(frozen=True)
class PartySpec:
    """How to build one party: `factory` is 'module:function', called as factory(config)."""

    name: str
    factory: str
    config: dict[str, Any]

    def build(self) -> Party:
        module, _, attr = self.factory.partition(":")
        party = getattr(importlib.import_module(module), attr)(self.config)
        if party.name != self.name:
            raise RunError(f"factory {self.factory} built party {party.name!r}, expected {self.name!r}")
        return party


class Runtime(ABC):
    """Hosts parties and delivers envelopes to them."""

    name: str = "?"

    @abstractmethod
    def start(self, specs: list[PartySpec]) -> dict[str, bytes]:
        """Build every party where it runs; return each party's identity public key (b"" on
        the plaintext suite). Private keys never leave the party."""

    @abstractmethod
    def install_registry(self, registry_json: str) -> None:
        """Give every running party the registry of pinned public keys (secure suite)."""

    @abstractmethod
    def call(self, party: str, envelope: bytes, link: str = "") -> list[bytes]:
        """Deliver one envelope that arrived over `link`; return what the party puts on the
        wire in response. Raises `ProtocolError` when the party rejected the envelope (its
        state unchanged)."""

    @abstractmethod
    def receiver_view(self, party: str) -> list[bytes]:
        """Plaintext envelopes of the artifacts `party` accepted (curious-receiver instrument)."""

    @abstractmethod
    def stop(self) -> None:
        """Drop this task's parties."""

    def tap(self, observer: Observer) -> Observer:
        """The relay's tap that feeds `observer` (a runtime may host the eavesdropper itself)."""
        return observer

    def close(self) -> None:
        """End of the experiment: release what the runtime holds (default: stop)."""
        self.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
