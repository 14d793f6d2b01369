"""The `pfcdr` scenario: the cold-start split, its variants, and runs through the engine.

Thresholds on model outcomes come from runs over seeds 0-4 with torch.set_num_threads(2); the
measured range is written next to each assertion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from run_helpers import run_inline

from attacks.tap import load_artifact
from parties.names import PFCDR_RELEASED
from sim.config import RunConfig
from sim.scenarios import get_scenario
from sim.scenarios.pfcdr import source_user_embeddings
from sim.splits.cold_start import cold_start_of, domain_ratings_of
from sim.world import world

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
SOURCE_GENRES = ("Comedy", "Romance", "Drama", "Musical", "Children's", "Animation")
TARGET_GENRES = ("Action", "Adventure", "Thriller", "Crime", "Sci-Fi", "Horror", "War", "Western", "Mystery", "Film-Noir", "Fantasy")
SMALL = {"n_users": 400, "n_items": 400, "mean_interactions": 40, "signal": 2.0, "seed": 0}


def write_planted_movielens(directory: Path, seed: int, n_users: int = 600, n_items: int = 300, per_domain: int = 20) -> Path:
    """A GroupLens ml-100k directory whose ratings follow a taste shared by both domains:
    rating = round(3 + b_u + <theta_u, phi_i> + noise), clipped to 1-5, with a user bias b_u ~
    N(0, 0.8^2) and a 2-d taste theta_u ~ N(0, I). Even items get a source genre, odd items a
    target genre; every user rates `per_domain` items of each domain. Item means cannot know a
    cold-start user's bias or taste; the source domain can."""
    rng = np.random.default_rng(seed)
    theta, bias = rng.normal(0, 1, (n_users, 2)), rng.normal(0, 0.8, n_users)
    phi = rng.normal(0, 0.8, (n_items, 2))
    domain = np.arange(n_items) % 2
    lines = []
    for u in range(n_users):
        for d in (0, 1):
            items = rng.choice(np.flatnonzero(domain == d), per_domain, replace=False)
            values = np.clip(np.rint(3 + bias[u] + phi[items] @ theta[u] + rng.normal(0, 0.5, items.size)), 1, 5)
            lines += [f"{u + 1}\t{i + 1}\t{int(v)}\t{880_000_000 + 1000 * d + k}" for k, (i, v) in enumerate(zip(items, values))]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "u.data").write_text("\n".join(lines) + "\n", encoding="latin-1")
    users = [f"{u + 1}|{rng.integers(18, 60)}|{'F' if rng.random() < 0.3 else 'M'}|other|00000" for u in range(n_users)]
    (directory / "u.user").write_text("\n".join(users) + "\n", encoding="latin-1")
    rows = []
    for i in range(n_items):
        genres = SOURCE_GENRES if domain[i] == 0 else TARGET_GENRES
        flags = ["1" if g == genres[(i // 2) % len(genres)] else "0" for g in ML100K_GENRES]
        rows.append(f"{i + 1}|Movie {i + 1} (1995)|01-Jan-1995||http://example.invalid|" + "|".join(flags))
    (directory / "u.item").write_text("\n".join(rows) + "\n", encoding="latin-1")
    return directory


def _world(seed: int = 0):
    return world({"dataset": "synthetic", "split": "genre", "seed": seed, "synthetic": SMALL})


def test_cold_start_split_holds_out_cold_and_validation_users():
    w = _world()
    small, large = (cold_start_of(w, seed=0, beta=b, valid_fraction=0.2) for b in (0.2, 0.5))
    assert cold_start_of(w, seed=0, beta=0.2, valid_fraction=0.2) is small  # cached per world
    domains = domain_ratings_of(w)
    for split, beta in ((small, 0.2), (large, 0.5)):
        assert split.cold.size == round(beta * domains.overlap.size)
        parts = np.concatenate([split.cold, split.valid, split.warm])
        np.testing.assert_array_equal(np.sort(parts), domains.overlap)  # a partition of the overlap
        t = split.target
        assert not np.isin(t.train.users, np.concatenate([split.cold, split.valid])).any()
        assert set(np.unique(t.test.users)) == set(split.cold) and set(np.unique(t.valid.users)) == set(split.valid)
        assert len(t.train) + len(t.valid) + len(t.test) == len(domains.target)
        assert len(split.source.train) == len(domains.source)  # the source keeps every rating
    assert set(small.cold) <= set(large.cold)  # one order of the overlapping users for every beta
    other = cold_start_of(w, seed=1, beta=0.2, valid_fraction=0.2)
    assert not np.array_equal(other.cold, small.cold)
    # the attacked population (a positive in both domains) is within the released overlap
    assert set(w.population) <= set(domains.overlap)
    assert small.description["source_genres"] == list(SOURCE_GENRES) and small.description["target_genres"] == list(TARGET_GENRES)


def test_variants_pair_each_transfer_with_target_only_at_its_beta():
    scenario = get_scenario("pfcdr")
    names = [v.name for v in scenario.variants()]
    assert names[:2] == ["pfcdr,beta=0.2", "emcdr,beta=0.2"] and len(names) == 9
    assert {v.name for v in scenario.variants(quick=True)} == {"pfcdr,beta=0.2", "emcdr,beta=0.2", "target-only,beta=0.2"}
    grid = scenario.variants(grid={"beta": [0.3], "method": ["pfcdr"]})
    assert [v.name for v in grid] == ["pfcdr,beta=0.3", "target-only,beta=0.3"]
    assert [scenario.reference_of(v) for v in grid] == ["target-only,beta=0.3"] * 2
    with pytest.raises(ValueError, match="unknown method"):
        scenario.variants(grid={"method": ["cmf"]})
    with pytest.raises(ValueError, match="unknown grid axis"):
        scenario.variants(grid={"lambda": [1.0]})


def test_quick_run_releases_prototypes_or_embeddings_and_the_receiver_attacks_them(tmp_path):
    config = RunConfig(
        scenario="pfcdr", dataset="synthetic", synthetic=SMALL, split="genre", quick=True, channel="plaintext", out=str(tmp_path)
    )
    runs = {r.variant.name: r for r in run_inline(config, out_dir=tmp_path).runs}
    pf, em, alone = runs["pfcdr,beta=0.2"], runs["emcdr,beta=0.2"], runs["target-only,beta=0.2"]
    w = _world()
    split = cold_start_of(w, seed=0, beta=0.2, valid_fraction=0.2)
    for run in runs.values():  # one row per held-out rating of the cold users, and nothing else
        assert run.per_user["users"].size == len(split.target.test)
        assert set(np.unique(run.per_user["users"])) == set(split.cold)
        assert run.utility["MAE"] == pytest.approx(run.per_user["abs_error"].mean())
    # EMCDR sends the source's user embeddings themselves: the evaluation's secret, recomputed
    # by the source's code path, is exactly what the receiver got.
    received = next((tmp_path / "intercepted" / "emcdr,beta=0.2").rglob(f"receiver/artifact-{PFCDR_RELEASED}*.safetensors"))
    artifact = load_artifact(received)
    np.testing.assert_array_equal(artifact.arrays["vector"], source_user_embeddings(w, 0)[artifact.user_ids])
    reconstruction = em.attacks["receiver"]["reconstruction"]
    assert reconstruction["metrics"]["direct_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert reconstruction["metrics"]["r2"] > 0.999
    assert pf.details["source"]["inversion"]["users"] == split.overlap.size
    assert pf.details["target"]["inversion"]["users"] == split.warm.size
    assert pf.details["released_users"] == split.overlap.size
    assert 1 <= pf.details["selection"]["k"] <= pf.details["selection"]["candidates"]
    assert set(pf.details["test_MAE_by_k"]) == set(pf.details["selection"]["valid_MAE_by_k"])
    # plaintext: the wire reads what the receiver reads; target-only releases nothing
    for run in (pf, em):
        assert run.attacks["wire"]["attribute"] == run.attacks["receiver"]["attribute"]
    assert not alone.attacks["receiver"]["attribute"]["decoded"]
    assert alone.attacks["receiver"]["attribute"]["gender"]["final"]["metrics"]["auc"] == pytest.approx(0.5)
    assert not any(line["sender"] == "source" for line in alone.transcript)
    assert source_user_embeddings(w, 0) is source_user_embeddings(w, 0)  # cached per (world, seed)


@pytest.mark.slow
def test_planted_taste_makes_transfer_beat_target_only_for_cold_users(tmp_path):
    data = write_planted_movielens(tmp_path / "planted", seed=0)
    config = RunConfig(
        scenario="pfcdr",
        data_dir=str(data),
        split="genre",
        quick=True,
        options={"bridge_epochs": 100},  # ~380 warm users: 3 bridge steps per epoch, 10 epochs are too few
        out=str(tmp_path / "runs"),
    )
    runs = {r.variant.name: r.utility["MAE"] for r in run_inline(config).runs}
    alone = runs["target-only,beta=0.2"]
    # Seeds 0-4 (data and run, 2 threads): target-only minus transfer MAE was 0.129-0.207 for
    # pfcdr (mean 0.157, SD 0.032) and 0.128-0.219 for emcdr (mean 0.159, SD 0.037); a margin
    # of 0.04 is over 3 SD below each mean and 0.09 below the smallest gain seen.
    assert runs["pfcdr,beta=0.2"] < alone - 0.04
    assert runs["emcdr,beta=0.2"] < alone - 0.04
