"""The Ray runtime (`--runtime ray`): each party, and the wire eavesdropper, is its own Ray actor.

A party actor builds its party from the JSON-able `PartySpec` itself, so the party's data and
models exist only inside that actor (on whichever node Ray placed it). The coordinator stays in
the driver: the `Relay` hands envelopes to `call()`, which ships them to the actor as `bytes` and
gets the party's outbound envelopes back as `bytes`. Nothing of a party is pickled across the
boundary; a protocol rejection inside the actor comes back as plain data (code, detail, sender)
and is raised again here as the same `ProtocolError`.

Ray is transport, not a trust boundary: anyone who reaches a Ray cluster's ports can run code
in it. The protocol's secure suite, not Ray, protects what crosses between parties.

Without an address the runtime starts a small private Ray for the run (`address="local"`) and
shuts it down in `close()`. With an address (`auto`, `ray://host:port`, `host:port`) it joins
that cluster and on `close()` only disconnects. Either way the project's packages travel with
the job (`runtime_env.py_modules`), so every worker runs the driver's code.
`placement={"source": "party_source", ...}` pins a party's actor to nodes that offer that
custom resource; the key `eavesdropper` pins the tap actor.

The eavesdropper: `tap(observer)` (the engine's hook) returns a `RayTap` for the Relay. It sends
each envelope to a `TapActor` with `.remote()`, numbered, without waiting; `stop()` collects the
recording in order and feeds it to `observer` (the engine's `Eavesdropper`), so the tap ends up
with exactly the bytes that were sent.
"""

from .actors import EAVESDROPPER, PartyHost, RayTap, TapHost
from .processes import session_processes
from .runtime import RayRuntime, describe_step

__all__ = ["EAVESDROPPER", "PartyHost", "RayRuntime", "RayTap", "TapHost", "describe_step", "session_processes"]
