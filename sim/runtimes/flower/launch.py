"""Launching a Flower run: write the settings the ServerApp reads, start Flower (simulation, or
a local deployment), and make sure the run directory says how the run ended.

The ServerApp writes the outputs (`.coordinator.serve`); the launcher only reads them, and
writes a failed results.json itself when the ServerApp could not (a dead SuperNode, Ctrl-C).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ...config import FLOWER_RUNTIMES, RunConfig
from ...engine import ExperimentResult
from ...errors import RunError
from ...jsonio import dump_json
from ...outputs import write_outputs
from .coordinator import party_roles
from .deployment import LocalDeployment
from .settings import APP_DIR, DEFAULT_CALL_TIMEOUT, DEFAULT_NODES_TIMEOUT, FLOWER_ENV, Settings
from .simulation import simulate


def prepare_run(
    config: RunConfig,
    run_dir: str | os.PathLike,
    *,
    quiet: bool = False,
    call_timeout: float = DEFAULT_CALL_TIMEOUT,
    nodes_timeout: float = DEFAULT_NODES_TIMEOUT,
    ping_rounds: int = 0,
    expected_public_keys: dict[str, bytes] | None = None,
    record_dir: str | os.PathLike | None = None,
) -> Path:
    """Write what the ServerApp needs into `run_dir` (config.json, flower/settings.json) and
    return the settings path, the value of the run config key `settings`
    (`flwr run sim/flower_app ... --run-config 'settings="PATH"'`)."""
    config.validate()
    if config.runtime not in FLOWER_RUNTIMES:
        raise RunError(f"the Flower runtimes are {FLOWER_RUNTIMES}, not {config.runtime!r}")
    run_dir = Path(run_dir).resolve()
    flower_dir = run_dir / "flower"
    flower_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "config.json").exists():
        dump_json(config.to_json(), run_dir / "config.json")
    (run_dir / "results.json").unlink(missing_ok=True)  # only this run's ServerApp may write it
    settings = Settings(
        config=config.to_json(),
        run_dir=str(run_dir),
        call_timeout=float(call_timeout),
        nodes_timeout=float(nodes_timeout),
        # Deployment: the ServerApp's progress lines go to the flwr run log (echoed unless quiet).
        progress=config.runtime == "flower-deployment" or not quiet,
        ping_rounds=int(ping_rounds),
        launched_at=time.time(),
        expected_public_keys={p: k.hex() for p, k in (expected_public_keys or {}).items()},
        record_dir=str(Path(record_dir).resolve()) if record_dir is not None else None,
    )
    return settings.save(flower_dir / "settings.json")


def run_experiment_flower(
    config: RunConfig,
    *,
    run_dir: str | os.PathLike,
    quiet: bool = False,
    call_timeout: float = DEFAULT_CALL_TIMEOUT,
    nodes_timeout: float = DEFAULT_NODES_TIMEOUT,
    deployment: LocalDeployment | None = None,
    timeout: float | None = None,
    ping_rounds: int = 0,
    record_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Run `config` on Flower (`config.runtime` is `flower` or `flower-deployment`); the
    ServerApp writes every output file into `run_dir`. Returns the results dict.

    Raises RunError on failure, after the run directory holds what finished (and a
    results.json with status "failed" and the error). `deployment` (not yet started)
    replaces the default insecure localhost deployment, e.g. one with TLS files; `timeout`
    bounds the whole deployment run; `ping_rounds` > 0 times that many bare round trips to
    a node first (results.json timing `flower_ping_*`); `record_dir` saves every RecordDict
    the ServerApp sends and receives there (what crosses the SuperLink)."""
    settings_path = prepare_run(
        config, run_dir, quiet=quiet, call_timeout=call_timeout, nodes_timeout=nodes_timeout, ping_rounds=ping_rounds, record_dir=record_dir
    )
    run_dir = settings_path.parents[1]
    for key, value in FLOWER_ENV.items():
        os.environ.setdefault(key, value)
    failure: BaseException | None = None
    try:
        if config.runtime == "flower":
            simulate(Settings.load(settings_path), quiet=quiet)
        else:
            dep = deployment or LocalDeployment(log_dir=settings_path.parent)
            if not dep.roles:  # one SuperNode per party of the run (a server and N clients, a source and a target)
                dep.roles = tuple(party_roles(config, config.validate()))
            with dep:
                dep.start()
                # The coordinator pins the public keys of the key files the deployment made.
                settings = Settings.load(settings_path)
                settings.expected_public_keys = {p: k.hex() for p, k in dep.public_keys.items()}
                settings.save(settings_path)
                dep.run_app(APP_DIR, {"settings": str(settings_path)}, timeout=timeout, echo=not quiet)
    except (Exception, KeyboardInterrupt) as exc:
        failure = exc
    results = _collect(config, run_dir, failure)
    if isinstance(failure, KeyboardInterrupt):
        raise failure
    return results


def _collect(config: RunConfig, run_dir: Path, failure: BaseException | None) -> dict[str, Any]:
    """Read what the ServerApp wrote; make sure a failed run leaves a failed results.json
    whose error says why, and raise RunError for it."""
    path = run_dir / "results.json"
    results = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    if failure is None and results is not None:
        if results.get("status") != "complete":
            raise RunError(f"the Flower run failed: {results.get('error')}")
        return results
    # The launcher saw the failure (or the ServerApp wrote nothing): its account comes first.
    error = _describe(failure) if failure is not None else "the Flower ServerApp ended without writing results.json"
    inner = results.get("error") if results else None
    if inner and inner not in error and str(failure) not in inner:
        error += f" (ServerApp: {inner})"
    if results is None:
        write_outputs(ExperimentResult(config=config, scenario=config.validate(), error=error), run_dir)
        results = json.loads(path.read_text(encoding="utf-8"))
    results.update(status="failed", error=error)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if isinstance(failure, KeyboardInterrupt):
        return results
    raise RunError(f"the Flower run failed: {error}")


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    return str(exc) if isinstance(exc, RunError) else f"{type(exc).__name__}: {exc}"
