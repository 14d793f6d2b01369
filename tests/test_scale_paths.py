"""The split's paths for large data give what the straightforward code gives: sorted unique
keys, and negatives sampled chunk by chunk (any chunk size, the same draws)."""

import numpy as np

from sim.splits.domains import _sample_negatives, unique_sorted


def test_unique_sorted_is_np_unique():
    rng = np.random.default_rng(0)
    for values in (rng.integers(0, 50, 1000), rng.integers(-(10**12), 10**12, 5000), np.zeros(0, np.int64), np.array([3])):
        out = unique_sorted(values)
        assert out.dtype == np.unique(values).dtype and np.array_equal(out, np.unique(values))


def test_negatives_do_not_depend_on_the_chunk_size():
    rng = np.random.default_rng(1)
    n_users, n_items = 300, 120
    eval_users = np.sort(rng.choice(n_users, 200, replace=False))
    seen_users = rng.integers(0, n_users, 4000)
    seen_items = rng.integers(0, n_items, 4000)
    outs = [
        _sample_negatives(n_users, n_items, eval_users, seen_users, seen_items, 20, np.random.default_rng(7), chunk_elements=chunk)
        for chunk in (1, 7 * n_items, 10**9)
    ]
    for out in outs[1:]:
        assert np.array_equal(out, outs[0])
    seen = set(zip(seen_users.tolist(), seen_items.tolist()))
    for user in eval_users.tolist():
        row = outs[0][user]
        assert len(set(row.tolist())) == 20 and not any((user, int(i)) in seen for i in row)
    assert (outs[0][np.setdiff1d(np.arange(n_users), eval_users)] == -1).all()
