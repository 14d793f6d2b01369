"""cdrsim as a Flower app: a ServerApp (the coordinator) and a ClientApp (one party per node).

`pyproject.toml` here makes this directory the app that `flwr run` bundles. `records` is the
carrier format the ServerApp and ClientApps share; `party_host` is the resident process that
holds a node's party, and `ipc` the local socket between a node's ClientApp processes and it.
Launchers live in `sim.runtimes.flower`.
"""
