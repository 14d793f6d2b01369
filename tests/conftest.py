import os

# Set before any test imports Flower or Ray.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def synthetic_config(tmp_path):
    """A small, fast run on synthetic data with strong planted attribute signal."""
    from sim.config import RunConfig

    def make(scenario: str = "embeddings", **overrides):
        base = dict(
            scenario=scenario,
            dataset="synthetic",
            synthetic={"n_users": 1000, "n_items": 300, "mean_interactions": 60, "signal": 2.0, "seed": 0},
            seeds=[0],
            quick=True,
            channel="plaintext",
            out=str(tmp_path / "runs"),
        )
        base.update(overrides)
        return RunConfig(**base)

    return make
