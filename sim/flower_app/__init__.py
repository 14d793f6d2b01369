"""cdrsim as a Flower app: a ServerApp (the coordinator) and a ClientApp (one party per node).

`pyproject.toml` here makes this directory the app that `flwr run` bundles; `records` is the
carrier format both sides share. Launchers live in `sim.runtimes.flower`.
"""
