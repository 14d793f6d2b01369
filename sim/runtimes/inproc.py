"""The default runtime: every party in this process, envelopes passed as bytes."""

from __future__ import annotations

from parties.base import Party

from ..errors import RunError
from .base import PartySpec, Runtime


class InprocRuntime(Runtime):
    name = "inproc"

    def __init__(self) -> None:
        self.parties: dict[str, Party] = {}

    def start(self, specs: list[PartySpec]) -> dict[str, bytes]:
        self.parties = {spec.name: spec.build() for spec in specs}
        return {name: party.public_key() for name, party in self.parties.items()}

    def install_registry(self, registry_json: str) -> None:
        for party in self.parties.values():
            party.install_registry(registry_json)

    def _party(self, name: str) -> Party:
        try:
            return self.parties[name]
        except KeyError:
            raise RunError(f"no party named {name!r} in this run; parties: {sorted(self.parties)}") from None

    def call(self, party: str, envelope: bytes, link: str = "") -> list[bytes]:
        # bytes() so that a party can never hold a reference to the sender's buffer
        return self._party(party).handle(bytes(envelope), link)

    def receiver_view(self, party: str) -> list[bytes]:
        return self._party(party).receiver_view()

    def stop(self) -> None:
        self.parties.clear()
