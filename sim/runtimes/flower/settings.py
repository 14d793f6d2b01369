"""The settings file a launcher writes and the ServerApp reads (`<run_dir>/flower/settings.json`).

It names what to run (the run's config), where the outputs go, and the time limits. It holds
no key material: on the secure suite each party makes or loads its identity key on its own
node; the settings may only pin the PUBLIC keys the parties' nodes must report
(`expected_public_keys`), so that nothing between the coordinator and a node can substitute one.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ...errors import RunError

PROJECT_ROOT = Path(__file__).resolve().parents[3]
APP_DIR = PROJECT_ROOT / "sim" / "flower_app"  # what `flwr run` bundles
DEFAULT_CALL_TIMEOUT = 900.0  # seconds one message to a party may take (a training step)
DEFAULT_NODES_TIMEOUT = 120.0  # seconds for every party's node to connect and answer the handshake
DEFAULT_HOST_IDLE_TIMEOUT = 1800.0  # seconds a party host waits for its next request before it ends
DEFAULT_CLOSE_TIMEOUT = 30.0  # seconds the coordinator waits for the nodes to confirm the end of the run
# Environment for Flower and the Ray it starts (setdefault: a user's own settings win).
FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",  # never rebuild the environment with uv for workers
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",  # CPU only; silences a FutureWarning
}


@dataclass
class Settings:
    config: dict[str, Any]  # RunConfig.to_json()
    run_dir: str  # absolute; the ServerApp writes every output file here
    call_timeout: float = DEFAULT_CALL_TIMEOUT
    nodes_timeout: float = DEFAULT_NODES_TIMEOUT
    host_idle_timeout: float = DEFAULT_HOST_IDLE_TIMEOUT
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT
    progress: bool = True  # progress lines on the ServerApp's stderr
    ping_rounds: int = 0  # bare round trips to time before the run (a benchmark figure)
    batch: bool = True  # back-to-back envelopes for the same party travel in one message
    launched_at: float = 0.0  # time.time() when the launcher started (start-up timing)
    expected_public_keys: dict[str, str] = field(default_factory=dict)  # party -> hex of the public key its node must report
    record_dir: str | None = None  # when set, every RecordDict the ServerApp sends or receives is saved there (tests, audits)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Settings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(obj) - known)
        if unknown:
            raise RunError(f"unknown Flower run settings {unknown}: written by another cdrsim version? (known: {sorted(known)})")
        return cls(**obj)

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Settings:
        try:
            obj = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RunError(f"cannot read the Flower run settings {path}: {exc}") from exc
        return cls.from_json(obj)
