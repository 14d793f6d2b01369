"""The Flower runtimes: parties as Flower ClientApps under a coordinating ServerApp.

`--runtime flower` runs the app in Flower's simulation engine; `--runtime flower-deployment`
starts a real SuperLink and one SuperNode per party as separate OS processes on localhost and
runs the app with `flwr run`. Both run the same ServerApp and ClientApp (`sim/flower_app/`).

Modules, by responsibility:

- `settings`: the settings file a launcher writes and the ServerApp reads; defaults.
- `exchange`: how the coordinator reaches nodes (the Grid behind a small interface; a recorder).
- `nodes`: the role handshake that maps parties to nodes.
- `runtime`: `FlowerRuntime`, the engine's Runtime over the nodes (batching, piggybacking).
- `coordinator`: what the ServerApp runs: `sim.engine.run_experiment` on a FlowerRuntime, then
  `sim.outputs.write_outputs`.
- `simulation`: `run_simulation` on a private Ray.
- `deployment`: `LocalDeployment`: SuperLink, SuperNodes, key files, TLS, reaping.
- `launch`: `run_experiment_flower`, the entry point of `sim.api.run` for both runtimes.
- `__main__`: `python -m sim.runtimes.flower --run-dir DIR ...` for a deployment you run yourself.

Each party lives in its node's party host (`sim.flower_app.party_host`), built there from its
spec; only public keys, envelopes and receiver-view instrumentation cross Flower.
"""

from .deployment import DEPLOYMENT_MARKER, LocalDeployment, TlsFiles
from .exchange import Exchange, GridExchange, NodeReply, RecordingExchange
from .launch import prepare_run, run_experiment_flower
from .nodes import NodeInfo, discover_nodes
from .runtime import FlowerRuntime, FlowerStats
from .settings import APP_DIR, FLOWER_ENV, Settings

__all__ = [
    "APP_DIR",
    "DEPLOYMENT_MARKER",
    "FLOWER_ENV",
    "Exchange",
    "FlowerRuntime",
    "FlowerStats",
    "GridExchange",
    "LocalDeployment",
    "NodeInfo",
    "NodeReply",
    "RecordingExchange",
    "Settings",
    "TlsFiles",
    "discover_nodes",
    "prepare_run",
    "run_experiment_flower",
]
