"""The curious receiver's folded view of per-step artifacts: each user's latest row per round,
the same whether or not the fold was compacted along the way (bounded memory)."""

import numpy as np
import pytest

import parties.base as base
from parties.base import ChannelConfig, Party, artifact_chunks
from protocol import decode


def _folded(monkeypatch, compact_rows: int) -> tuple[np.ndarray, np.ndarray, int]:
    monkeypatch.setattr(base, "FOLD_COMPACT_ROWS", compact_rows)
    party = Party("target", ChannelConfig(suite="plaintext"))
    party.fold_receiver_view_kinds = {"batch"}
    rng = np.random.default_rng(0)
    held = 0
    for step in range(40):
        users = np.unique(rng.integers(0, 50, size=12)).astype(np.int64)
        x = np.full((users.size, 3), step, dtype=np.float32) + users[:, None]
        for msg in artifact_chunks(
            sender="source", receiver="target", name=f"batch@{step}", kind="batch", user_ids=users, arrays={"x": x}, round=1
        ):
            party._view(msg)
        ((_, parts, rows),) = party._view_folds.values()
        assert rows == sum(u.size for u, _ in parts)  # the running count is the rows held
        held = max(held, rows)
    party.seal_view_folds()
    (view,) = party.receiver_view()
    msg = decode(view)
    assert msg.meta["folded"] == "latest row per user"
    return msg.arrays["user_ids"], msg.arrays["x"], held


def test_fold_keeps_each_users_latest_row_with_or_without_compaction(monkeypatch):
    users, x, held = _folded(monkeypatch, 1 << 30)
    compacted_users, compacted_x, compacted_held = _folded(monkeypatch, 30)
    np.testing.assert_array_equal(compacted_users, users)
    np.testing.assert_array_equal(compacted_x, x)
    assert compacted_held < held  # compaction really ran, and bounded what was held
    assert compacted_held <= 30 + 50 + 12  # at most the bound, one user per id, one more step
    # each user's row is from the last step that carried it (row = step + user id)
    rng, last_step = np.random.default_rng(0), {}
    for step in range(40):
        last_step.update(dict.fromkeys(np.unique(rng.integers(0, 50, size=12)).tolist(), step))
    np.testing.assert_array_equal(users, sorted(last_step))
    np.testing.assert_array_equal(x[:, 0] - users, [last_step[u] for u in users.tolist()])
    assert x.shape == (users.size, 3)


def test_fold_is_per_round(monkeypatch):
    party = Party("target", ChannelConfig(suite="plaintext"))
    party.fold_receiver_view_kinds = {"batch"}
    for rnd in (1, 2):
        users = np.arange(4, dtype=np.int64)
        for msg in artifact_chunks(
            sender="source",
            receiver="target",
            name="b",
            kind="batch",
            user_ids=users,
            arrays={"x": np.full((4, 1), rnd, np.float32)},
            round=rnd,
        ):
            party._view(msg)
    party.seal_view_folds()
    views = [decode(v) for v in party.receiver_view()]
    assert [float(v.arrays["x"][0, 0]) for v in views] == pytest.approx([1.0, 2.0])
