"""The ServerApp: the coordinator. It runs the same engine as every other runtime, with a
`FlowerRuntime` that relays each envelope to the party's node, and writes the run directory.

What to run comes from a settings file written by `sim.runtimes.flower.run_experiment_flower`
(the run's config, run directory, key directory and time limits): in deployment its path is
the run config value `settings` (`flwr run ... --run-config 'settings="/abs/path.json"'`); in
simulation `make_server_app(settings)` binds the settings directly.
"""

from __future__ import annotations

import threading
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp


def make_server_app(settings: dict[str, Any], abort: threading.Event | None = None) -> ServerApp:
    """A ServerApp bound to these settings (simulation: run_simulation gives no run config).
    Setting `abort` makes it stop waiting for nodes (the launcher gave up)."""
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        from sim.runtimes.flower import GridExchange, coordinate

        coordinate(GridExchange(grid, abort=abort), settings)

    return server


app = ServerApp()


@app.main()
def _main(grid: Grid, context: Context) -> None:
    from sim.runtimes.flower import GridExchange, coordinate, load_settings

    path = str(context.run_config.get("settings", "") or "")
    if not path:
        raise RuntimeError(
            "this ServerApp needs the run config value 'settings' (path of the settings.json that "
            "`python -m sim.run --runtime flower-deployment` writes); pass --run-config 'settings=\"/abs/path\"'"
        )
    coordinate(GridExchange(grid), load_settings(path))
