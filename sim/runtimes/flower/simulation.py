"""`--runtime flower`: the app in Flower's simulation engine (`run_simulation`, Ray underneath,
one virtual node per party), sized for a small machine: one CPU per virtual node, a private
two-CPU Ray, no dashboard. Each virtual node's party runs in its party host, a process the
node's ClientApp starts next to the Ray worker; it ends when the run closes, or with Ray.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from sim.flower_app.client_app import app as client_app
from sim.flower_app.ipc import DIR_ENV

from ...config import RunConfig
from ...errors import RunError
from ...world import world
from .coordinator import party_roles, serve
from .exchange import GridExchange
from .settings import Settings

SIMULATION_BACKEND = {
    "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
    "init_args": {"num_cpus": 2, "address": "local", "include_dashboard": False},
}


def make_server_app(settings: Settings, abort: threading.Event | None = None) -> ServerApp:
    """A ServerApp bound to these settings (run_simulation passes no run config). Setting
    `abort` makes it stop waiting for nodes (the launcher gave up)."""
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        serve(GridExchange(grid, abort=abort), settings)

    return server


def simulate(settings: Settings, *, quiet: bool) -> None:
    """Run the app on Flower's simulation engine; the ServerApp writes the run directory."""
    # Imported here: `flwr.simulation` imports Ray (seconds), which the deployment never needs.
    import ray
    from flwr.simulation import run_simulation

    if ray.is_initialized():
        raise RunError(
            "a Ray instance is already running in this process; the Flower simulation starts and stops its own "
            "(call ray.shutdown() first, or run the simulation in its own process)"
        )
    config = RunConfig(**settings.config)
    warm_up(config)
    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    if quiet:  # Flower's own INFO lines and its run_simulation deprecation notice
        flwr_logger.setLevel(logging.ERROR)
    # Flower appends sys.path to PYTHONPATH for its Ray workers and never restores it.
    pythonpath = os.environ.get("PYTHONPATH")
    # The party hosts' sockets go to a directory of this run (Ray's workers inherit the
    # environment), removed at the end, unless the user chose one.
    own_dir = None if os.environ.get(DIR_ENV) else tempfile.mkdtemp(prefix="cdrsim-party-hosts-")
    if own_dir is not None:
        os.environ[DIR_ENV] = own_dir
    abort = threading.Event()
    try:
        run_simulation(
            server_app=make_server_app(settings, abort=abort),
            client_app=client_app,
            num_supernodes=len(party_roles(config, config.validate())),
            backend_config=json.loads(json.dumps(SIMULATION_BACKEND)),
        )
    finally:
        abort.set()  # the ServerApp thread stops waiting for nodes that are gone
        if pythonpath is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = pythonpath
        flwr_logger.setLevel(level)
        if ray.is_initialized():
            ray.shutdown()  # the raylet ends, and with it every party host this run started
        if own_dir is not None:
            os.environ.pop(DIR_ENV, None)
            shutil.rmtree(own_dir, ignore_errors=True)


def warm_up(config: RunConfig) -> None:
    """Load here what the ServerApp thread needs. run_simulation starts that thread and then
    forks Ray's processes from this one; heavy imports and data loading in the thread
    meanwhile can deadlock the fork (seen: fork_exec waiting while the thread built the
    synthetic dataset). Done here first, the thread finds them cached (the engine's imports
    came with `.coordinator`)."""
    for seed in config.seeds:
        world(config.run_dict(seed))
