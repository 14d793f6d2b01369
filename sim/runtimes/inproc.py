"""The default runtime: every party in this process, envelopes passed as bytes."""

from __future__ import annotations

from parties.base import Party

from .base import PartySpec, RunError, Runtime


class InprocRuntime(Runtime):
    name = "inproc"

    def __init__(self) -> None:
        self.parties: dict[str, Party] = {}

    def start(self, specs: list[PartySpec]) -> None:
        self.parties = {spec.name: spec.build() for spec in specs}

    def _party(self, name: str) -> Party:
        try:
            return self.parties[name]
        except KeyError:
            raise RunError(f"no party named {name!r} in this run; parties: {sorted(self.parties)}") from None

    def call(self, party: str, envelope: bytes) -> list[bytes]:
        # bytes() so that a party can never hold a reference to the sender's buffer
        return self._party(party).handle(bytes(envelope))

    def receiver_view(self, party: str) -> list[bytes]:
        return self._party(party).receiver_view()

    def stop(self) -> None:
        self.parties.clear()
