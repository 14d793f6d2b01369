"""Helpers the scenario, CLI and runtime tests import by name.

They live here rather than in tests/conftest.py: tests/protocol/ has a conftest.py of its own,
and pytest drops whichever module called `conftest` it imported last, so `from conftest import`
in a test module reads whichever conftest was collected most recently.
"""

from __future__ import annotations


def run_inline(config, out_dir=None):
    """Every task of `config` through the engine on its executor (in this process unless
    --jobs); captures are written under `out_dir` when given."""
    from sim.engine import run_experiment
    from sim.executors import make_executor

    return run_experiment(config, make_executor(config), out_dir=out_dir)
