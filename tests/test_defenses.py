"""PrivNet's inputs on MovieLens-100K as the threat model needs them: every attacked user has a
released representation, BlurMe's dummies never become the query's candidate, and LDP noises
rating values without changing which items a user rated."""

from __future__ import annotations

import numpy as np
import pytest

from models.data import RankingData
from models.privnet import PrivNetSource, transferred_representations, user_query
from parties.defenses import apply_defense
from sim.config import RunConfig
from sim.world import World, world


@pytest.fixture(scope="module")
def ml100k_world() -> World:
    """The `privnet` default: release-year split, the overlapping users, 80% public."""
    return world(RunConfig(scenario="privnet").run_dict(0))


def _pairs(data: RankingData) -> set[tuple[int, int]]:
    return set(zip(data.train_users.tolist(), data.train_items.tolist()))


def test_every_attacked_user_gets_a_nonzero_representation(ml100k_world: World):
    """With population "overlap" no user the attacks score releases x_u|trans = 0 (a user
    without source data would: all-padding query)."""
    w = ml100k_world
    source = w.split.source
    net = PrivNetSource(source.n_items, dim=16, hidden=(8,), seed=0)
    x = transferred_representations(net, source.histories(), window=10)
    attacked = w.population
    assert w.private.size > 0 and np.isin(w.private, attacked).all() and np.isin(w.public, attacked).all()
    assert (np.abs(x[attacked]).sum(axis=1) > 0).all()
    # and the rule matters: outside the population the query is padding only
    outside = np.setdiff1d(np.arange(source.n_users), attacked)
    assert outside.size > 0 and (np.abs(x[outside]).sum(axis=1) == 0).all()


@pytest.mark.parametrize("defense", ["blurme", "blurme-server"])
def test_blurme_never_makes_a_dummy_the_query_candidate(ml100k_world: World, defense: str):
    w = ml100k_world
    source = w.split.source
    public = w.attributes.restricted_to(w.public)
    blurred, info = apply_defense(defense, source, public=public, own_gender=w.attributes.gender, k=5, seed=0)
    _, cand_before = user_query(source.histories(), source.n_items)
    _, cand_after = user_query(blurred.histories(), blurred.n_items)
    np.testing.assert_array_equal(cand_after, cand_before)  # every user's candidate is their last real item
    added = _pairs(blurred) - _pairs(source)
    assert _pairs(source) <= _pairs(blurred)  # nothing real is removed
    assert len(added) == info["dummies_added"] >= 5 * (w.population.size - 10)  # ~k per user with history
    # and the dummies really are spread through the time line, not bunched just before the end
    positions = []
    for u, history in enumerate(blurred.histories()):
        real = set(source.histories()[u].tolist())
        positions += [i / (len(history) - 1) for i, item in enumerate(history[:-1]) if item not in real]
    assert np.mean(positions) == pytest.approx(0.5, abs=0.1)


def test_ldp_noises_rating_values_and_keeps_the_rated_items(ml100k_world: World):
    source = ml100k_world.split.source
    rated = set(zip(source.ratings.users.tolist(), source.ratings.items.tolist()))
    noisy, info = apply_defense("ldp", source, public=ml100k_world.attributes, own_gender=None, noise=0.1, seed=0)
    # Every positive after the noise is an item the user rated: which items were rated is unchanged.
    assert _pairs(noisy) <= rated
    assert noisy.ratings is source.ratings  # the log itself is the users' own and stays with them
    # Values moved across the positive threshold both ways (epsilon = 1 / noise = 10 per rating).
    before, after = _pairs(source), _pairs(noisy)
    assert before - after and after - before
    assert info["epsilon_per_rating"] == pytest.approx(10.0)
    assert info["positives_flipped"] == len(before - after) + len(after - before)
    # The item-level variant, by contrast, swaps in items the user never rated.
    swapped, _ = apply_defense("ldp-items", source, public=ml100k_world.attributes, own_gender=None, noise=0.1, seed=0)
    assert _pairs(swapped) - rated
