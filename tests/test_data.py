"""Datasets (sim.datasets) and splits (sim.splits): loading, errors, synthetic signal, split invariants."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict
from threadpoolctl import threadpool_limits

from models.data import NO_ITEM, RankingData, UserAttributes
from sim.datasets import (
    DATASETS,
    Dataset,
    DatasetError,
    find_embedded_ml100k,
    load_dataset,
    make_synthetic,
)
from sim.datasets.movielens import ML100K_GENRES
from sim.splits import (
    DEFAULT_SOURCE_GENRES,
    DEFAULT_TARGET_GENRES,
    DomainSplit,
    SplitError,
    leave_one_out,
    public_users,
    split_domains,
)

# --------------------------------------------------------------------------------------------
# Tiny MovieLens-100K content, written in both formats by the tests.

USERS = [  # raw id, age, gender, occupation
    ("10", 24, "M", "technician"),
    ("2", 53, "F", "other"),
    ("33", 45, "M", "writer"),
    ("4", 35, "F", "student"),
]
ITEMS = [  # raw id, title, release date, genres (in u.genre order)
    ("1", "Toy Story (1995)", "01-Jan-1995", ("Animation", "Children's", "Comedy")),
    ("2", "GoldenEye (1995)", "01-Jan-1995", ("Action", "Adventure", "Thriller")),
    ("3", "Café au Lait (1993)", "01-Jan-1993", ("Comedy",)),
    ("5", "unknown", "", ("unknown",)),
    ("12", "Casablanca (1942)", "01-Jan-1942", ("Drama", "Romance", "War")),
    ("7", "Old Thing (1950)", "01-Jan-1950", ("Drama",)),
]
RATINGS = [  # user, item, rating, timestamp
    ("10", "1", 5, 881250949), ("10", "2", 3, 881250950), ("10", "12", 4, 881250951),
    ("10", "7", 4, 881250960), ("10", "3", 2, 881250970),
    ("2", "1", 4, 891717742), ("2", "12", 5, 891717700), ("2", "5", 1, 891717800),
    ("2", "3", 4, 891717900),
    ("33", "2", 4, 878887116), ("33", "1", 4, 878887116), ("33", "7", 5, 878887000),
    ("33", "12", 3, 878887200),
    ("4", "7", 2, 880606923),
]  # fmt: skip


def _atomic_year(title: str) -> str:
    return title[-5:-1] if title.endswith(")") else title


def write_grouplens_100k(directory: Path, ratings=RATINGS, users=USERS, items=ITEMS) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings), encoding="latin-1")
    (directory / "u.user").write_text("".join(f"{u}|{a}|{g}|{o}|00000\n" for u, a, g, o in users), encoding="latin-1")
    lines = []
    for i, title, date, genres in items:
        flags = "|".join("1" if g in genres else "0" for g in ML100K_GENRES)
        lines.append(f"{i}|{title}|{date}||http://example.org|{flags}\n")
    (directory / "u.item").write_text("".join(lines), encoding="latin-1")
    return directory


def write_atomic(directory: Path, stem: str = "ml-100k") -> Path:
    """The same content in RecBole's atomic format (utf-8, typed headers, year in a column)."""
    directory.mkdir(parents=True, exist_ok=True)
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float\n"]
    inter += [f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in RATINGS]
    user = ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"]
    user += [f"{u}\t{a}\t{g}\t{o}\t00000\n" for u, a, g, o in USERS]
    item = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"]
    for i, title, _, genres in ITEMS:
        clean = title[:-7] if title.endswith(")") else title
        year = _atomic_year(title) if title.endswith(")") else "unkonwn"
        item.append(f"{i}\t{clean}\t{year}\t{' '.join(genres)}\n")
    for suffix, lines in ((".inter", inter), (".user", user), (".item", item)):
        (directory / f"{stem}{suffix}").write_text("".join(lines), encoding="utf-8")
    return directory


# --------------------------------------------------------------------------------------------
# Embedded MovieLens-100K


@pytest.fixture(scope="module")
def ml100k() -> Dataset:
    return load_dataset("ml-100k")


def test_embedded_ml100k_figures(ml100k: Dataset) -> None:
    assert (ml100k.n_users, ml100k.n_items, len(ml100k.ratings)) == (943, 1682, 100000)
    female = ml100k.users["gender"].mean()
    assert 0.28 < female < 0.30  # 273 of 943
    assert dict(ml100k.ratings.dtypes) == {
        "user": np.dtype("int64"),
        "item": np.dtype("int64"),
        "rating": np.dtype("float32"),
        "timestamp": np.dtype("int64"),
    }
    assert ml100k.ratings["user"].nunique() == 943 and ml100k.ratings["item"].max() == 1681
    assert int(ml100k.items["year"].isna().sum()) == 1  # the "unknown" movie
    assert ml100k.items.loc[0, "title"] == "Toy Story"
    assert ml100k.items.loc[0, "genres"] == ("Animation", "Children's", "Comedy")
    assert set(ml100k.users["age_group"]) == {0, 1, 2}
    # Raw ids are remapped in numeric order: raw user "1" is user 0, raw "943" is 942.
    assert ml100k.users.loc[0, "raw_id"] == "1" and ml100k.users.loc[942, "raw_id"] == "943"
    assert not ml100k.ratings.duplicated(["user", "item"]).any()
    attrs = ml100k.attributes()
    assert isinstance(attrs, UserAttributes) and attrs.gender.sum() == ml100k.users["gender"].sum()
    assert len(ml100k.fingerprint()) == 64 and ml100k.fingerprint() == load_dataset("ml-100k").fingerprint()


def test_find_embedded_ml100k_does_not_import_recbole() -> None:
    import sys

    path = find_embedded_ml100k()
    assert (path / "ml-100k.inter").is_file()
    assert "recbole" not in sys.modules


# --------------------------------------------------------------------------------------------
# File formats


def test_grouplens_100k_loads_like_atomic(tmp_path: Path) -> None:
    gl = load_dataset("ml-100k", write_grouplens_100k(tmp_path / "gl"))
    at = load_dataset("ml-100k", write_atomic(tmp_path / "atomic"))
    for frame in ("ratings", "users", "items"):
        pd.testing.assert_frame_equal(getattr(gl, frame), getattr(at, frame))
    assert gl.fingerprint() == at.fingerprint()
    assert gl.source != at.source
    # Content checks, so that two equally wrong parsers cannot pass.
    assert gl.users["raw_id"].tolist() == ["2", "4", "10", "33"]  # numeric order
    assert gl.users["gender"].tolist() == [1, 1, 0, 0]
    assert gl.users["age_group"].tolist() == [2, 1, 0, 1]  # 53, 35, 24, 45
    assert gl.items["raw_id"].tolist() == ["1", "2", "3", "5", "7", "12"]
    assert gl.items["title"].tolist()[2] == "Café au Lait"
    assert np.isnan(gl.items.loc[3, "year"]) and gl.items.loc[3, "genres"] == ("unknown",)
    assert gl.items.loc[5, "year"] == 1942.0
    first = gl.ratings.iloc[0]  # user 0 = raw "2": earliest is item "12" at 891717700
    assert (first["user"], first["item"], first["rating"], first["timestamp"]) == (0, 5, 5.0, 891717700)
    assert len(gl.ratings) == len(RATINGS)


def test_data_dir_with_nested_folder_and_other_atomic_stem(tmp_path: Path) -> None:
    write_grouplens_100k(tmp_path / "ml-100k")
    assert load_dataset("ml-100k", tmp_path).n_users == 4
    write_atomic(tmp_path / "other", stem="movies")
    assert load_dataset("ml-100k", tmp_path / "other").n_items == 6


def write_grouplens_1m(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ratings.dat").write_text(
        "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n2::3408::4::978300275\n3::661::2::978297867\n",
        encoding="latin-1",
    )
    (directory / "users.dat").write_text(
        "1::F::1::10::48067\n2::M::56::16::70072\n3::M::45::12::55117\n9::F::35::0::00000\n",
        encoding="latin-1",
    )
    (directory / "movies.dat").write_text(
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "3408::Erin Brockovich (2000)::Drama\n"
        "3952::Contender, The (2000)::Drama|Thriller\n"
        "17::Misérables, Les (1995)::Drama|Musical\n",
        encoding="latin-1",
    )
    return directory


def test_ml1m_format(tmp_path: Path) -> None:
    ds = load_dataset("ml-1m", write_grouplens_1m(tmp_path / "ml-1m"))
    # Only rated users (1, 2, 3) and items (661, 1193, 3408) are kept, in numeric raw-id order.
    assert (ds.n_users, ds.n_items, len(ds.ratings)) == (3, 3, 5)
    assert ds.users["raw_id"].tolist() == ["1", "2", "3"]
    assert ds.users["gender"].tolist() == [1, 0, 0]
    assert ds.users["age"].tolist() == [1, 56, 45]
    assert ds.users["age_group"].tolist() == [0, 2, 2]  # code 45 = 45-49 -> over 45
    assert ds.users["occupation"].tolist() == ["K-12 student", "self-employed", "programmer"]
    assert ds.items["raw_id"].tolist() == ["661", "1193", "3408"]
    assert ds.items["year"].tolist() == [1996.0, 1975.0, 2000.0]
    assert ds.items["title"].tolist()[0] == "James and the Giant Peach"
    assert ds.items["genres"].tolist()[0] == ("Animation", "Children's", "Musical")
    assert ds.ratings[["user", "item"]].values.tolist() == [[0, 1], [0, 0], [1, 1], [1, 2], [2, 0]]
    # The parent folder is accepted too.
    assert load_dataset("ml-1m", tmp_path).fingerprint() == ds.fingerprint()


def test_ml1m_age_code_35_is_middle_group(tmp_path: Path) -> None:
    d = write_grouplens_1m(tmp_path)
    (d / "ratings.dat").write_text("9::661::4::1\n", encoding="latin-1")
    ds = load_dataset("ml-1m", d)
    assert ds.users["age_group"].tolist() == [1] and ds.users["occupation"].tolist() == ["other"]


# --------------------------------------------------------------------------------------------
# Errors


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(DatasetError) as e:
        load_dataset("ml-20m")
    for name in DATASETS:
        assert name in str(e.value)


def test_recbole_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "recbole" else real(n, *a))
    with pytest.raises(DatasetError) as e:
        load_dataset("ml-100k")
    msg = str(e.value)
    assert "pip install --no-deps recbole==1.2.1" in msg and "make demo" in msg and "--data-dir" in msg


def test_recbole_without_dataset_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "dataset_example" / "ml-100k").mkdir(parents=True)
    fake = SimpleNamespace(submodule_search_locations=[str(tmp_path)])
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: fake)
    with pytest.raises(DatasetError, match=r"ml-100k\.inter.*missing"):
        find_embedded_ml100k()


@pytest.mark.parametrize("missing", ["u.data", "u.user", "u.item"])
def test_grouplens_missing_file(tmp_path: Path, missing: str) -> None:
    d = write_grouplens_100k(tmp_path / "gl")
    (d / missing).unlink()
    with pytest.raises(DatasetError) as e:
        load_dataset("ml-100k", d)
    assert missing in str(e.value) and str(d) in str(e.value)


def test_ml1m_missing_file_and_missing_dir(tmp_path: Path) -> None:
    d = write_grouplens_1m(tmp_path / "ml1m")
    (d / "movies.dat").unlink()
    with pytest.raises(DatasetError, match=r"missing file movies\.dat"):
        load_dataset("ml-1m", d)
    with pytest.raises(DatasetError, match="not embedded.*--data-dir"):
        load_dataset("ml-1m")
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("ml-1m", tmp_path / "nowhere")


def _corrupt(tmp_path: Path, file: str, text: str, encoding: str = "latin-1") -> Path:
    d = write_grouplens_100k(tmp_path / "gl")
    (d / file).write_bytes(text.encode(encoding))
    return d


@pytest.mark.parametrize(
    "file, text, expected",
    [
        ("u.data", "", r"u\.data: the file is empty"),
        ("u.data", "10\t1\t5\n", r"u\.data: expected 4 .* found 3"),
        ("u.data", "10\t1\tfive\t881250949\n", r"u\.data: rating .* 'five'"),
        ("u.data", "10\t1\t5\t8812.5\n", r"u\.data: timestamp .* integer"),
        ("u.data", "10\t1\t5\t1\n10\t1\t4\t2\n", r"u\.data: .*more than once"),
        ("u.data", "10\t99\t5\t1\n", r"u\.data rates items with no line in .*u\.item"),
        ("u.data", "77\t1\t5\t1\n", r"u\.data rates users with no line in .*u\.user"),
        ("u.user", "10|24|X|technician|0\n", r"u\.user: gender must be M or F, found 'X'"),
        ("u.user", "10|24|M|technician|0\n10|25|M|other|0\n", r"u\.user: id '10' appears on more than one line"),
        ("u.item", "1|Toy Story (1995)|01-Jan-1995||x|0\n", r"u\.item: expected 24 .* found 6"),
    ],
)
def test_corrupt_grouplens_files(tmp_path: Path, file: str, text: str, expected: str) -> None:
    with pytest.raises(DatasetError, match=expected):
        load_dataset("ml-100k", _corrupt(tmp_path, file, text))


def test_corrupt_item_date_and_flags(tmp_path: Path) -> None:
    flags = "|".join(["0"] * 19)
    d = _corrupt(tmp_path, "u.item", f"1|Toy Story (1995)|1995/01/01||x|{flags}\n")
    with pytest.raises(DatasetError, match=r"u\.item: line 1: release date '1995/01/01'"):
        load_dataset("ml-100k", d)
    d = _corrupt(tmp_path, "u.item", f"1|Toy Story (1995)|01-Jan-1995||x|{flags[:-1]}7\n")
    with pytest.raises(DatasetError, match=r"u\.item: the 19 genre columns"):
        load_dataset("ml-100k", d)


def test_corrupt_atomic_files(tmp_path: Path) -> None:
    d = write_atomic(tmp_path / "a")
    (d / "ml-100k.user").write_text("user_id:token\tage:token\n1\t20\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"ml-100k\.user: header lacks column\(s\) gender, occupation"):
        load_dataset("ml-100k", d)
    d = write_atomic(tmp_path / "b")
    header = b"item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    (d / "ml-100k.item").write_bytes(header + b"1\t\xe9\t1995\tDrama\n")
    with pytest.raises(DatasetError, match=r"ml-100k\.item: not valid utf-8"):
        load_dataset("ml-100k", d)
    d = write_atomic(tmp_path / "c")
    (d / "ml-100k.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"ml-100k\.inter: has no data rows"):
        load_dataset("ml-100k", d)


def test_corrupt_ml1m_files(tmp_path: Path) -> None:
    d = write_grouplens_1m(tmp_path)
    (d / "users.dat").write_text("1::F::30::10::48067\n", encoding="latin-1")
    with pytest.raises(DatasetError, match=r"users\.dat: Age must be one of the codes"):
        load_dataset("ml-1m", d)
    d = write_grouplens_1m(tmp_path)
    (d / "ratings.dat").write_text("1::1193::5\n", encoding="latin-1")
    with pytest.raises(DatasetError, match=r"ratings\.dat: expected 4 '::'-separated columns per line, found 3"):
        load_dataset("ml-1m", d)


def test_not_a_dataset_directory(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(DatasetError, match=r"not an ml-100k directory.*u\.data.*readme\.txt"):
        load_dataset("ml-100k", tmp_path)


def test_synthetic_option_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="drop data_dir"):
        load_dataset("synthetic", tmp_path)
    with pytest.raises(DatasetError, match="only to dataset 'synthetic'"):
        load_dataset("ml-100k", synthetic={"n_users": 5})
    with pytest.raises(DatasetError, match="bad synthetic options"):
        load_dataset("synthetic", synthetic={"n_user": 5})
    with pytest.raises(DatasetError, match="n_users >= 1"):
        make_synthetic(n_users=0)


# --------------------------------------------------------------------------------------------
# Synthetic data


def test_synthetic_deterministic_and_seeded() -> None:
    a = make_synthetic(200, 150, 20, seed=3)
    b = load_dataset("synthetic", synthetic={"n_users": 200, "n_items": 150, "mean_interactions": 20, "seed": 3})
    c = load_dataset("synthetic", seed=4, synthetic={"n_users": 200, "n_items": 150, "mean_interactions": 20})
    for frame in ("ratings", "users", "items"):
        pd.testing.assert_frame_equal(getattr(a, frame), getattr(b, frame))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert "seed=3" in a.source and "seed=4" in c.source


def test_synthetic_shape_and_realism() -> None:
    ds = make_synthetic(2000, 400, 30, seed=0)
    r = ds.ratings
    assert ds.n_users == 2000 and ds.n_items == 400
    assert r["user"].nunique() == 2000  # every user has interactions
    assert r.groupby("user").size().min() >= 5 and r.groupby("user").size().max() <= 400
    assert 20 < len(r) / 2000 < 40
    assert not r.duplicated(["user", "item"]).any()
    assert set(np.unique(r["rating"])) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert 0.45 < (r["rating"] >= 4).mean() < 0.7
    assert 0.25 < ds.users["gender"].mean() < 0.33
    assert 28 < ds.users["age"].mean() < 40 and set(ds.users["age_group"]) == {0, 1, 2}
    assert ds.items["genres"].map(len).between(1, 3).all()
    assert ds.items["year"].between(1922, 1998).all()
    # Sorted by (user, time, item), like the loaders.
    key = list(zip(r["user"], r["timestamp"], r["item"]))
    assert key == sorted(key)


def test_synthetic_tiny_sizes() -> None:
    ds = make_synthetic(n_users=3, n_items=2, mean_interactions=50, seed=1)
    assert ds.n_users == 3 and ds.n_items == 2
    assert ds.ratings.groupby("user").size().tolist() == [2, 2, 2]  # capped at n_items
    one = make_synthetic(n_users=1, n_items=1, seed=0)
    assert len(one.ratings) == 1


def _attribute_auc(ds: Dataset, attribute: str) -> float:
    """Cross-validated ROC-AUC of a logistic regression on per-user item counts."""
    r = ds.ratings
    x = sp.csr_matrix((np.ones(len(r)), (r["user"], r["item"])), shape=(ds.n_users, ds.n_items))
    y = ds.users[attribute].to_numpy()
    if attribute == "age_group":
        y = (y == 2).astype(int)  # over 45 vs the rest
    with threadpool_limits(limits=1):  # a BLAS pool on a busy machine spins for nothing
        proba = cross_val_predict(LogisticRegression(C=0.1, max_iter=2000), x, y, cv=5, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, proba))


def test_synthetic_planted_signal_is_detectable() -> None:
    """Over five data seeds: the planted signal is found in every one, and without it the
    attacker is at chance on average. Thresholds from seeds 0-9 (and 100-104 with two BLAS
    threads): with signal 2, gender AUC 0.92 (SD 0.02, min 0.89) and age AUC 0.86 (SD 0.03,
    min 0.82), so 0.75 and 0.7 are over 4 SD below; with signal 0, the AUCs have SD 0.04
    around 0.50, so the mean of five has SD 0.018 and 0.06 is over 3 SD."""
    strong, null = [], []
    for seed in range(5):
        kwargs = dict(n_users=800, n_items=300, mean_interactions=50, seed=seed)
        with_signal, without = make_synthetic(signal=2.0, **kwargs), make_synthetic(signal=0.0, **kwargs)
        strong.append([_attribute_auc(with_signal, a) for a in ("gender", "age_group")])
        null.append([_attribute_auc(without, a) for a in ("gender", "age_group")])
        # The users are the same people in both (attributes do not depend on the signal).
        pd.testing.assert_frame_equal(with_signal.users, without.users)
    strong, null = np.array(strong), np.array(null)
    assert strong[:, 0].min() > 0.75 and strong[:, 1].min() > 0.7, strong
    assert np.all(np.abs(null.mean(axis=0) - 0.5) < 0.06), null


# --------------------------------------------------------------------------------------------
# Splits


def _check_ranking_invariants(data: RankingData, ds: Dataset, domain_items: np.ndarray, min_rating: float, population: np.ndarray) -> None:
    """Invariants of one domain's leave-one-out data against the dataset it came from (the
    ratings of the split's population of users)."""
    r = ds.ratings
    local = np.full(ds.n_items, -1)
    local[domain_items] = np.arange(domain_items.size)
    in_dom = (local[r["item"].to_numpy()] >= 0) & np.isin(r["user"].to_numpy(), population)
    users = r["user"].to_numpy()[in_dom]
    items = local[r["item"].to_numpy()[in_dom]]
    times = r["timestamp"].to_numpy()[in_dom]
    pos = r["rating"].to_numpy()[in_dom] >= min_rating
    seen = sp.csr_matrix((np.ones(users.size), (users, items)), shape=(ds.n_users, data.n_items)).toarray() > 0
    when = {(u, i): t for u, i, t in zip(users, items, times)}

    assert data.n_users == ds.n_users and data.n_items == domain_items.size
    # Every domain item has a positive; all positives are accounted for.
    assert np.all(np.bincount(items[pos], minlength=data.n_items) > 0)
    ev = data.eval_users("test")
    assert np.array_equal(ev, data.eval_users("valid"))
    assert data.n_train + 2 * ev.size == int(pos.sum())
    pos_count = np.bincount(users[pos], minlength=ds.n_users)
    # Evaluated: >= 3 positives and enough unseen items for a full list of negatives.
    n_neg = data.test_negatives.shape[1]
    enough_unseen = data.n_items - seen.sum(axis=1) >= n_neg
    assert np.array_equal(ev, np.flatnonzero((pos_count >= 3) & enough_unseen))
    assert data.n_train + 2 * ev.size == int(pos.sum())
    not_ev = np.setdiff1d(np.arange(ds.n_users), ev)
    assert np.all(data.test_items[not_ev] == NO_ITEM) and np.all(data.valid_negatives[not_ev] == -1)
    # Train arrays are ordered by (user, time, item).
    train_t = np.array([when[(u, i)] for u, i in zip(data.train_users, data.train_items)])
    key = list(zip(data.train_users.tolist(), train_t.tolist(), data.train_items.tolist()))
    assert key == sorted(key)
    histories = data.histories()
    for u in ev:
        t_test, t_valid = when[(u, data.test_items[u])], when[(u, data.valid_items[u])]
        assert data.test_items[u] != data.valid_items[u]
        assert data.test_items[u] not in set(histories[u]) and data.valid_items[u] not in set(histories[u])
        assert (t_valid, data.valid_items[u]) < (t_test, data.test_items[u])
        assert all((when[(u, i)], i) < (t_valid, data.valid_items[u]) for i in histories[u])
        for negs in (data.valid_negatives[u], data.test_negatives[u]):
            assert np.unique(negs).size == negs.size
            assert negs.min() >= 0 and negs.max() < data.n_items
            assert not seen[u, negs].any()  # never rated by the user, at any rating


def test_leave_one_out_order_ties_and_short_users() -> None:
    #           user 0: four positives, two at the same time; user 1: two; user 2: none
    users = np.array([0, 0, 0, 0, 1, 1])
    items = np.array([5, 3, 1, 0, 2, 4])
    times = np.array([10, 30, 30, 5, 1, 2])
    data = leave_one_out(3, 40, users, items, times, seed=0, n_negatives=7)
    # user 0 in (time, item) order: 0@5, 5@10, 1@30, 3@30 -> test 3, valid 1, train [0, 5]
    assert (data.test_items[0], data.valid_items[0]) == (3, 1)
    assert data.histories()[0].tolist() == [0, 5]
    assert data.histories()[1].tolist() == [2, 4] and data.test_items[1] == NO_ITEM
    assert data.valid_items[2] == NO_ITEM and data.histories()[2].size == 0
    assert data.test_negatives.shape == (3, 7) and np.all(data.test_negatives[1:] == -1)
    assert not set(data.test_negatives[0]) & {0, 1, 3, 5}
    # Items seen with any rating are excluded when given.
    seen_u, seen_i = np.arange(30) * 0, np.arange(30)
    data = leave_one_out(3, 40, users, items, times, seed=0, n_negatives=10, seen_users=seen_u, seen_items=seen_i)
    assert np.all(data.valid_negatives[0] >= 30) and np.all(data.test_negatives[0] >= 30)
    assert np.array_equal(np.sort(data.test_negatives[0]), np.arange(30, 40))


def test_leave_one_out_errors_and_determinism() -> None:
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(50), 6)
    items = np.concatenate([rng.choice(300, 6, replace=False) for _ in range(50)])
    times = rng.integers(0, 1000, users.size)
    a = leave_one_out(50, 300, users, items, times, seed=1)
    b = leave_one_out(50, 300, users, items, times, seed=1)
    c = leave_one_out(50, 300, users, items, times, seed=2)
    assert np.array_equal(a.test_negatives, b.test_negatives) and np.array_equal(a.valid_negatives, b.valid_negatives)
    assert not np.array_equal(a.test_negatives, c.test_negatives)
    assert not np.array_equal(a.valid_negatives, a.test_negatives)  # drawn separately
    assert np.array_equal(a.test_items, c.test_items)  # the split itself does not depend on the seed
    with pytest.raises(SplitError, match="fewer than n_negatives=295 unseen items"):
        leave_one_out(50, 300, users, items, times, seed=0, n_negatives=295, too_few_unseen="raise")
    # By default such users are not evaluated: all their positives train.
    skipped = leave_one_out(50, 300, users, items, times, seed=0, n_negatives=295)
    assert skipped.eval_users().size == 0 and skipped.n_train == users.size
    # A user who has seen exactly 300 - 294 items is still evaluated with n_negatives=294.
    ok = leave_one_out(50, 300, users, items, times, seed=0, n_negatives=294, too_few_unseen="raise")
    assert ok.eval_users().size == 50 and np.all(np.sort(ok.test_negatives, axis=1) == ok.test_negatives)
    with pytest.raises(SplitError, match="more than once"):
        leave_one_out(2, 5, np.array([0, 0]), np.array([1, 1]), np.array([1, 2]), seed=0, n_negatives=1)


def test_negatives_are_uniform() -> None:
    # One user who has seen items 0..9 of 30: every unseen item should be drawn ~equally often.
    counts = np.zeros(30)
    for s in range(200):
        d = leave_one_out(1, 30, np.zeros(10, int), np.arange(10), np.arange(10), seed=s, n_negatives=5)
        counts += np.bincount(d.test_negatives[0], minlength=30)
    assert counts[:10].sum() == 0
    assert counts[10:].min() > 25 and counts[10:].max() < 75  # expected 50 each


def _check_split(split: DomainSplit, ds: Dataset) -> None:
    assert isinstance(split, DomainSplit)
    assert not set(split.source_items) & set(split.target_items)
    for items in (split.source_items, split.target_items):
        assert np.all(np.diff(items) > 0)  # contiguous ids in dataset item order
    for data, items in ((split.source, split.source_items), (split.target, split.target_items)):
        _check_ranking_invariants(data, ds, items, split.description["min_rating"], split.population)
        _check_rating_log(data)
    import json

    json.dumps(split.description)  # JSON-able


def _check_rating_log(data: RankingData) -> None:
    """The domain's training ratings: every training positive, no held-out item, and the
    ratings below the threshold too (what LDP on rating values perturbs)."""
    log = data.ratings
    users, items = log.positives()
    assert np.array_equal(users, data.train_users) and np.array_equal(items, data.train_items)
    held = set(zip(*data.held_out_pairs()))
    assert not held & set(zip(log.users.tolist(), log.items.tolist()))
    assert (log.ratings < log.min_rating).any()


def test_population_overlap_keeps_users_present_in_both_domains(ml100k: Dataset) -> None:
    overlap, every = (split_domains(ml100k, by="year", seed=0, population=p) for p in ("overlap", "all"))
    both = np.intersect1d(np.unique(every.source.train_users), np.unique(every.target.train_users))
    # Every user of the overlap has training data in both domains; nobody else has any data.
    for data in (overlap.source, overlap.target):
        assert set(np.unique(data.train_users)) == set(overlap.population)
        outside = np.setdiff1d(np.arange(ml100k.n_users), overlap.population)
        assert np.all(data.test_items[outside] == NO_ITEM)
    assert set(both) <= set(overlap.population)
    assert overlap.description["population"] == {"rule": "overlap", "users": 768, "users_in_both_domains": 768, "dropped_users": 175}
    assert every.population.size == ml100k.n_users and every.description["population"]["dropped_users"] == 0
    with pytest.raises(SplitError, match="valid: overlap, all"):
        split_domains(ml100k, population="some")


def test_year_split_on_ml100k(ml100k: Dataset) -> None:
    split = split_domains(ml100k, by="year", seed=0, population="all")
    _check_split(split, ml100k)
    d = split.description
    threshold = d["year_threshold"]
    year = ml100k.items["year"].to_numpy()
    assert np.all(year[split.target_items] >= threshold)
    assert np.all(~(year[split.source_items] >= threshold))  # older or unknown
    # The default threshold balances positives best among all candidate years.
    pos = ml100k.ratings[ml100k.ratings["rating"] >= 4]
    py = year[pos["item"].to_numpy()]
    gaps = {int(t): abs(int((py >= t).sum()) - int((~(py >= t)).sum())) for t in np.unique(py[~np.isnan(py)])}
    assert gaps[threshold] == min(gaps.values())
    assert (threshold, d["source"]["positives"], d["target"]["positives"]) == (1994, 27924, 27451)
    assert (d["source"]["eval_users"], d["target"]["eval_users"]) == (680, 933)
    assert split.source.n_users == split.target.n_users == 943


def test_year_split_unknown_year_goes_to_source_and_given_threshold(tmp_path: Path) -> None:
    # One more rating: raw user "10" (user 2) gives 4 stars to the unknown-year movie (item 3).
    ratings = [*RATINGS, ("10", "5", 4, 881250980)]
    ds = load_dataset("ml-100k", write_grouplens_100k(tmp_path / "gl", ratings=ratings))
    # Positives (>= 4) in the source (< 1990 or unknown): user 2 has items 5, 4, 3 -> evaluated;
    # nobody has 3 positives among the newer items 0, 1, 2, so the target cannot be evaluated.
    with pytest.raises(SplitError, match="no user of the target domain can be evaluated"):
        split_domains(ds, year_threshold=1990, n_negatives=0)
    split = split_domains(ds, year_threshold=1990, n_negatives=0, min_rating=1)
    assert split.source_items.tolist() == [3, 4, 5]  # the unknown year goes to the source
    assert split.target_items.tolist() == [0, 1, 2]
    assert split.description["rule"].startswith("target: year >= 1990")
    assert split.source.eval_users().tolist() == [2]
    assert (split.source.test_items[2], split.source.valid_items[2]) == (0, 1)  # items 3, 4 locally
    assert split.source.histories()[2].tolist() == [2]  # item 5, rated first
    assert split.target.eval_users().tolist() == [2] and split.target.test_items[2] == 2  # Café, rated last
    with pytest.raises(SplitError, match="no user of the source domain"):  # 3 items, all seen
        split_domains(ds, year_threshold=1990, n_negatives=1, min_rating=1)


def test_genre_split(ml100k: Dataset) -> None:
    split = split_domains(ml100k, by="genre", seed=0)
    _check_split(split, ml100k)
    genres = ml100k.items["genres"]
    src, tgt = set(DEFAULT_SOURCE_GENRES), set(DEFAULT_TARGET_GENRES)
    for items, own in ((split.source_items, src), (split.target_items, tgt)):
        for i in items:
            first = next(g for g in genres[i] if g in src | tgt)
            assert first in own
    # Items with no genre in either group are dropped (e.g. documentaries, "unknown").
    dropped = [i for i, gs in enumerate(genres) if not (set(gs) & (src | tgt))]
    assert dropped and not set(dropped) & (set(split.source_items) | set(split.target_items))
    assert split.description["dropped_items"] == len(dropped)


def test_genre_split_options_and_errors(ml100k: Dataset) -> None:
    split = split_domains(ml100k, by="genre", source_genres=["Comedy"], target_genres=["Horror"], n_negatives=20)
    genres = ml100k.items["genres"]
    assert all(next(g for g in genres[i] if g in {"Comedy", "Horror"}) == "Horror" for i in split.target_items)
    with pytest.raises(SplitError, match="disjoint"):
        split_domains(ml100k, by="genre", source_genres=["Comedy"], target_genres=["Comedy", "Horror"])
    with pytest.raises(SplitError, match="do not occur.*its genres are"):
        split_domains(ml100k, by="genre", source_genres=["Comedy"], target_genres=["Telenovela"])
    with pytest.raises(SplitError, match="valid: year, genre"):
        split_domains(ml100k, by="decade")
    with pytest.raises(SplitError, match="only to by='genre'"):
        split_domains(ml100k, by="year", source_genres=["Comedy"])


def test_split_determinism_on_synthetic() -> None:
    # The size the scenario tests use (tests/conftest.py), with the default 99 negatives.
    ds = make_synthetic(400, 300, 40, signal=2.0, seed=0)
    a, b, c = (split_domains(ds, seed=s) for s in (0, 0, 1))
    _check_split(a, ds)
    for name in ("source", "target"):
        # Users with too few unseen items for 99 negatives are not evaluated, and are counted
        # (58 in the source and 23 in the target of this data).
        part = a.description[name]
        assert part["eval_users"] > 250 and part["skipped_few_unseen"] > 0
        data = getattr(a, name)
        evaluated = data.test_items != NO_ITEM
        pos = np.bincount(data.train_users, minlength=400) + 2 * evaluated
        assert part["skipped_few_unseen"] == int(((pos >= 3) & ~evaluated).sum())
    assert a.description == b.description
    for x, y in ((a.source, b.source), (a.target, b.target)):
        for field in ("train_items", "test_items", "valid_negatives", "test_negatives"):
            assert np.array_equal(getattr(x, field), getattr(y, field))
    assert not np.array_equal(a.target.test_negatives, c.target.test_negatives)
    assert np.array_equal(a.target.test_items, c.target.test_items)
    # Source and target negatives come from independent streams.
    assert a.description["year_threshold"] == c.description["year_threshold"]


# --------------------------------------------------------------------------------------------
# Public users


def test_public_users_fraction_and_stratification() -> None:
    rng = np.random.default_rng(0)
    gender = (rng.random(1000) < 0.3).astype(np.int64)
    gender[:20] = -1  # unknown to the holder: never public
    attrs = UserAttributes(gender=gender, age_group=np.zeros(1000, dtype=np.int64))
    for fraction in (0.8, 0.5, 0.1):
        pub = public_users(attrs, fraction, seed=0)
        assert np.all(np.diff(pub) > 0) and pub.dtype == np.int64
        assert not set(pub) & set(range(20))
        for g in (0, 1):
            members = np.flatnonzero(gender == g)
            share = np.isin(members, pub).mean()
            assert abs(share - fraction) <= 1 / members.size
    assert np.array_equal(public_users(attrs, 0.8, seed=3), public_users(attrs, 0.8, seed=3))
    assert not np.array_equal(public_users(attrs, 0.8, seed=3), public_users(attrs, 0.8, seed=4))
    assert public_users(attrs, 1.0).size == 980
    # Only users of the population can be public.
    population = np.arange(500, 1000)
    assert set(public_users(attrs, 1.0, population=population)) == set(population)
    with pytest.raises(SplitError, match=r"in \(0, 1\]"):
        public_users(attrs, 0.0)


def test_public_users_on_ml100k(ml100k: Dataset) -> None:
    attrs = ml100k.attributes()
    pub = public_users(attrs, 0.8, seed=0)
    assert pub.size == round(0.8 * 670) + round(0.8 * 273)
    assert abs(attrs.gender[pub].mean() - attrs.gender.mean()) < 0.005
