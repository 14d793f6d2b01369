"""The ServerApp of a deployment: the coordinator. It runs the engine's experiment loop with a
`FlowerRuntime` that relays each envelope to the party's node, and writes the run directory
(`sim.runtimes.flower.coordinator.serve`).

What to run comes from the settings file that `sim.runtimes.flower` writes (the run's config,
run directory and time limits; no key material): its path is the run config value `settings`
(`flwr run ... --run-config 'settings="/abs/path.json"'`). The simulation binds the settings
to its own ServerApp instead (`sim.runtimes.flower.simulation.make_server_app`).
"""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from sim.runtimes.flower.coordinator import serve
from sim.runtimes.flower.exchange import GridExchange
from sim.runtimes.flower.settings import Settings

app = ServerApp()


@app.main()
def _main(grid: Grid, context: Context) -> None:
    path = str(context.run_config.get("settings", "") or "")
    if not path:
        raise RuntimeError(
            "this ServerApp needs the run config value 'settings' (path of the settings.json that "
            "`python -m sim.run --runtime flower-deployment` writes); pass --run-config 'settings=\"/abs/path\"'"
        )
    serve(GridExchange(grid), Settings.load(path))
