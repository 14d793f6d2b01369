"""Datasets: MovieLens-100K (embedded RecBole copy or a GroupLens directory), MovieLens-1M, and a
synthetic generator with a planted dependence between user attributes and interactions.

Every loader returns the same `Dataset`: ratings with contiguous 0-based user and item ids
(raw ids remapped in sorted order, numerically when all raw ids are integers), one row of
attributes per user and one row of metadata per item. Only users and items that occur in the
ratings are kept; every rated user and item must have a metadata row.

Conventions (documented here because they decide figures downstream):

- gender: 0 = M, 1 = F.
- age_group (PrivNet's groups): 0 = under 35, 1 = 35 to 45, 2 = over 45. ML-100K has exact
  ages (45 -> group 1). ML-1M only has bracket codes (1, 18, 25, 35, 45, 50, 56 = lower bound
  of each bracket); code 35 (35-44) is group 1 and code 45 (45-49) and above are group 2, so
  that a bracket is never split across groups.
- year: the release year (float, NaN if unknown). GroupLens ml-100k: the year of the release
  date, else a "(YYYY)" in the title. RecBole atomic files: `release_year` when it is a
  four-digit year, else a "(YYYY)" in the title (one item has release_year "V" and "(1995)"
  in its title). ML-1M: the "(YYYY)" at the end of the title.
- genres: a tuple in the order the file lists them (ML-100K's "unknown" genre is kept as a
  genre name). Titles lose a trailing " (YYYY)" so that GroupLens and RecBole titles match.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.data import UserAttributes

DATASETS = ("ml-100k", "ml-1m", "synthetic")

RECBOLE_PIN = "recbole==1.2.1"
ML100K_FILES = ("u.data", "u.user", "u.item")
ML1M_FILES = ("ratings.dat", "users.dat", "movies.dat")
ATOMIC_SUFFIXES = (".inter", ".user", ".item")

# Genre flags of GroupLens u.item, in file order (u.genre).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip

# ML-1M occupation codes (its README).
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip
ML1M_AGE_CODES = (1, 18, 25, 35, 45, 50, 56)

_TITLE_YEAR = re.compile(r"\((\d{4})\)")
_TRAILING_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")


class DatasetError(Exception):
    """A dataset could not be found or read; the message says what, where, and how to fix it."""


# --------------------------------------------------------------------------------------------
# The container


@dataclass(frozen=True)
class Dataset:
    """One rating dataset with user attributes and item metadata.

    - `ratings`: columns user:int64 (0..n_users-1), item:int64 (0..n_items-1), rating:float32,
      timestamp:int64; sorted by (user, timestamp, item); no repeated (user, item) pair.
    - `users`: index = user id; gender (0=M, 1=F), age (int), age_group (0: <35, 1: 35-45,
      2: >45), occupation (str), raw_id (the id in the source files, str).
    - `items`: index = item id; year (float, NaN if unknown), genres (tuple of str), title,
      raw_id (str).
    - `source`: where it came from (a path, or "synthetic(seed=..., ...)").
    """

    name: str
    ratings: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    source: str

    def __post_init__(self) -> None:
        r = self.ratings
        for col, dtype in (("user", np.int64), ("item", np.int64), ("rating", np.float32), ("timestamp", np.int64)):
            if col not in r.columns or r[col].dtype != dtype:
                raise ValueError(f"Dataset.ratings needs column {col!r} of dtype {np.dtype(dtype)}; got {dict(r.dtypes)}")
        if not np.array_equal(self.users.index.to_numpy(), np.arange(len(self.users))):
            raise ValueError("Dataset.users must be indexed by user id 0..n_users-1")
        if not np.array_equal(self.items.index.to_numpy(), np.arange(len(self.items))):
            raise ValueError("Dataset.items must be indexed by item id 0..n_items-1")
        if len(r) and (r["user"].max() >= len(self.users) or r["item"].max() >= len(self.items)):
            raise ValueError("Dataset.ratings refers to a user or item id without a metadata row")

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def attributes(self) -> UserAttributes:
        return UserAttributes(
            gender=self.users["gender"].to_numpy(np.int64),
            age_group=self.users["age_group"].to_numpy(np.int64),
        )

    def fingerprint(self) -> str:
        """sha256 of the content (ratings, users, items), independent of name and source.

        The same data read from different formats has the same fingerprint.
        """
        h = hashlib.sha256(b"cdrsim-dataset-v1\0")
        for label, frame in (("ratings", self.ratings), ("users", self.users), ("items", self.items)):
            h.update(f"{label}:{len(frame)}\0".encode())
            h.update(_canonical_bytes(frame.index.to_numpy(), "index"))
            for col in sorted(frame.columns):
                h.update(_canonical_bytes(frame[col].to_numpy(), col))
        return h.hexdigest()

    def summary(self) -> dict[str, Any]:
        """A few JSON-able figures for logs and config.json."""
        pos = int((self.ratings["rating"] >= 4).sum())
        return {
            "name": self.name,
            "source": self.source,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_ratings": len(self.ratings),
            "n_positives(rating>=4)": pos,
            "female_fraction": round(float(self.users["gender"].mean()), 4) if self.n_users else 0.0,
            "fingerprint": self.fingerprint(),
        }


def _canonical_bytes(values: np.ndarray, name: str) -> bytes:
    """Deterministic bytes of one column (not pickle, not pandas' hashing)."""
    head = f"{name}\0".encode()
    if values.dtype.kind in "iufb":
        kind = values.dtype.kind
        arr = values.astype("<f8" if kind == "f" else "<i8", copy=False)
        if kind == "f":
            arr = np.where(np.isnan(arr), np.nan, arr)  # one NaN bit pattern
        return head + kind.encode() + np.ascontiguousarray(arr).tobytes()
    parts = []
    for v in values:
        if isinstance(v, tuple):
            parts.append("\x1e".join(map(str, v)))
        else:
            parts.append(str(v))
    return head + b"s" + "\x1f".join(parts).encode("utf-8")


# --------------------------------------------------------------------------------------------
# Entry point


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    seed: int = 0,
    synthetic: dict[str, Any] | None = None,
) -> Dataset:
    """Load a dataset by name.

    - "ml-100k": with no `data_dir`, the RecBole atomic copy inside the installed recbole
      wheel; with `data_dir`, a GroupLens ml-100k directory (u.data, u.user, u.item) or a
      directory with RecBole atomic files (<name>.inter/.user/.item).
    - "ml-1m": a GroupLens ml-1m directory (ratings.dat, users.dat, movies.dat); needs `data_dir`.
    - "synthetic": `make_synthetic(seed=seed, **synthetic)`; a "seed" key in `synthetic` wins
      over `seed`.
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    if name == "synthetic":
        if data_dir is not None:
            raise DatasetError("the synthetic dataset is generated, not read: drop data_dir / --data-dir")
        options = dict(synthetic or {})
        options.setdefault("seed", seed)
        try:
            return make_synthetic(**options)
        except TypeError as exc:
            raise DatasetError(f"bad synthetic options {sorted(options)}: {exc}") from exc
    if synthetic:
        raise DatasetError(f"synthetic options apply only to dataset 'synthetic', not {name!r}: drop them")
    if name == "ml-100k":
        if data_dir is None:
            return load_atomic(find_embedded_ml100k(), name="ml-100k")
        directory = _existing_dir(data_dir, name)
        if all((directory / f).is_file() for f in ML100K_FILES):
            return load_grouplens_100k(directory)
        if _atomic_stem(directory) is not None:
            return load_atomic(directory, name="ml-100k")
        nested = directory / "ml-100k"
        if nested.is_dir():
            return load_dataset("ml-100k", nested)
        raise DatasetError(
            f"{directory} is not an ml-100k directory: expected GroupLens files {', '.join(ML100K_FILES)} "
            f"or RecBole atomic files ml-100k.inter/.user/.item; found {_listing(directory)}. "
            "Point --data-dir at the unzipped ml-100k folder, or leave it out to use the embedded copy."
        )
    # ml-1m
    if data_dir is None:
        raise DatasetError(
            "ml-1m is not embedded (its licence forbids redistribution): download ml-1m.zip from "
            "https://grouplens.org/datasets/movielens/1m/, unzip it and pass --data-dir path/to/ml-1m"
        )
    directory = _existing_dir(data_dir, name)
    if not all((directory / f).is_file() for f in ML1M_FILES) and (directory / "ml-1m").is_dir():
        directory = directory / "ml-1m"
    return load_grouplens_1m(directory)


def _existing_dir(data_dir: str | Path, name: str) -> Path:
    directory = Path(data_dir).expanduser()
    if not directory.is_dir():
        raise DatasetError(f"--data-dir {directory} for {name} does not exist or is not a directory")
    return directory


def _listing(directory: Path, limit: int = 12) -> str:
    names = sorted(p.name for p in directory.iterdir())
    if not names:
        return "an empty directory"
    more = f", ... ({len(names)} files)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# --------------------------------------------------------------------------------------------
# RecBole atomic format (the embedded ml-100k)


def find_embedded_ml100k() -> Path:
    """The ml-100k atomic files shipped in the recbole wheel, located without importing recbole
    (its imports need packages this project does not install)."""
    how = (
        f"install the wheel alone with `pip install --no-deps {RECBOLE_PIN}` (or run `make demo`), "
        "or pass --data-dir with a GroupLens ml-100k directory"
    )
    try:
        spec = importlib.util.find_spec("recbole")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(f"the embedded MovieLens-100K comes with the recbole package, which is not installed: {how}")
    package = Path(next(iter(spec.submodule_search_locations)))
    directory = package / "dataset_example" / "ml-100k"
    missing = [f"ml-100k{s}" for s in ATOMIC_SUFFIXES if not (directory / f"ml-100k{s}").is_file()]
    if missing:
        raise DatasetError(
            f"recbole is installed at {package} but {', '.join(missing)} is missing from {directory}; "
            f"reinstall it: `pip install --force-reinstall --no-deps {RECBOLE_PIN}`, or {how.split(', or ')[-1]}"
        )
    return directory


def _atomic_stem(directory: Path) -> str | None:
    """The common stem of <stem>.inter/.user/.item in `directory`, if exactly one exists."""
    stems = sorted(p.stem for p in directory.glob("*.inter"))
    stems = [s for s in stems if all((directory / f"{s}{suf}").is_file() for suf in ATOMIC_SUFFIXES)]
    if "ml-100k" in stems:
        return "ml-100k"
    return stems[0] if len(stems) == 1 else None


def load_atomic(directory: str | Path, name: str = "ml-100k") -> Dataset:
    """RecBole atomic files: tab separated, typed headers such as `user_id:token`."""
    directory = Path(directory)
    stem = _atomic_stem(directory)
    if stem is None:
        raise DatasetError(
            f"no RecBole atomic files in {directory}: expected <name>.inter, <name>.user and <name>.item; "
            f"found {_listing(directory) if directory.is_dir() else 'no such directory'}"
        )
    paths = {suf: directory / f"{stem}{suf}" for suf in ATOMIC_SUFFIXES}
    inter = _read_atomic(paths[".inter"], ("user_id", "item_id", "rating", "timestamp"))
    user = _read_atomic(paths[".user"], ("user_id", "age", "gender", "occupation"))
    item = _read_atomic(paths[".item"], ("item_id", "movie_title", "release_year", "class"))

    ratings = pd.DataFrame(
        {
            "user_raw": inter["user_id"],
            "item_raw": inter["item_id"],
            "rating": _numeric(inter["rating"], paths[".inter"], "rating"),
            "timestamp": _integer(inter["timestamp"], paths[".inter"], "timestamp"),
        }
    )
    age = _integer(user["age"], paths[".user"], "age")
    users = pd.DataFrame(
        {
            "raw_id": user["user_id"],
            "gender": _gender(user["gender"], paths[".user"]),
            "age": age,
            "age_group": age_group_of(age),
            "occupation": user["occupation"],
        }
    )
    years = item["release_year"].where(item["release_year"].str.fullmatch(r"\d{4}"), "")
    items = pd.DataFrame(
        {
            "raw_id": item["item_id"],
            "year": _year(years, item["movie_title"]),
            "genres": [tuple(g.split()) for g in item["class"]],
            "title": item["movie_title"].map(_clean_title),
        }
    )
    files = {"ratings": paths[".inter"], "users": paths[".user"], "items": paths[".item"]}
    return _assemble(name, str(directory), ratings, users, items, files)


def _read_atomic(path: Path, needed: tuple[str, ...]) -> pd.DataFrame:
    frame = _read_table(path, sep="\t", header=True, encoding="utf-8")
    renamed = {c: c.split(":", 1)[0] for c in frame.columns}
    frame = frame.rename(columns=renamed)
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DatasetError(
            f"{path}: header lacks column(s) {', '.join(missing)} (found {', '.join(renamed.values())}); "
            "is this a RecBole atomic file of MovieLens?"
        )
    return frame[list(needed)]


# --------------------------------------------------------------------------------------------
# GroupLens formats


def load_grouplens_100k(directory: str | Path) -> Dataset:
    """A GroupLens ml-100k directory: u.data (tab), u.user (|), u.item (|, latin-1)."""
    directory = Path(directory)
    paths = {f: directory / f for f in ML100K_FILES}
    _require(paths.values(), "ml-100k", "https://grouplens.org/datasets/movielens/100k/")
    data = _read_table(paths["u.data"], sep="\t", n_cols=4, encoding="latin-1")
    user = _read_table(paths["u.user"], sep="|", n_cols=5, encoding="latin-1")
    item = _read_table(paths["u.item"], sep="|", n_cols=5 + len(ML100K_GENRES), encoding="latin-1")

    ratings = pd.DataFrame(
        {
            "user_raw": data[0],
            "item_raw": data[1],
            "rating": _numeric(data[2], paths["u.data"], "rating (column 3)"),
            "timestamp": _integer(data[3], paths["u.data"], "timestamp (column 4)"),
        }
    )
    age = _integer(user[1], paths["u.user"], "age (column 2)")
    users = pd.DataFrame(
        {
            "raw_id": user[0],
            "gender": _gender(user[2], paths["u.user"]),
            "age": age,
            "age_group": age_group_of(age),
            "occupation": user[3],
        }
    )
    dates = pd.to_datetime(item[2], format="%d-%b-%Y", errors="coerce")
    bad = (item[2] != "") & dates.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DatasetError(f"{paths['u.item']}: line {row + 1}: release date {item[2].iloc[row]!r} is not like 01-Jan-1995")
    flags = item[list(range(5, 5 + len(ML100K_GENRES)))]
    if not flags.isin(["0", "1"]).all().all():
        raise DatasetError(f"{paths['u.item']}: the 19 genre columns (6-24) must be 0 or 1")
    flag_values = flags.to_numpy() == "1"
    date_years = dates.dt.year.astype("float64").fillna(-1).astype(int).astype(str).where(dates.notna(), "")
    items = pd.DataFrame(
        {
            "raw_id": item[0],
            "year": _year(date_years, item[1]),
            "genres": [tuple(g for g, on in zip(ML100K_GENRES, row) if on) for row in flag_values],
            "title": item[1].map(_clean_title),
        }
    )
    files = {"ratings": paths["u.data"], "users": paths["u.user"], "items": paths["u.item"]}
    return _assemble("ml-100k", str(directory), ratings, users, items, files)


def load_grouplens_1m(directory: str | Path) -> Dataset:
    """A GroupLens ml-1m directory: ratings.dat, users.dat, movies.dat ('::' separated, latin-1)."""
    directory = Path(directory)
    paths = {f: directory / f for f in ML1M_FILES}
    _require(paths.values(), "ml-1m", "https://grouplens.org/datasets/movielens/1m/")
    data = _read_table(paths["ratings.dat"], sep="::", n_cols=4, encoding="latin-1")
    user = _read_table(paths["users.dat"], sep="::", n_cols=5, encoding="latin-1")
    movie = _read_table(paths["movies.dat"], sep="::", n_cols=3, encoding="latin-1")

    ratings = pd.DataFrame(
        {
            "user_raw": data[0],
            "item_raw": data[1],
            "rating": _numeric(data[2], paths["ratings.dat"], "Rating (field 3)"),
            "timestamp": _integer(data[3], paths["ratings.dat"], "Timestamp (field 4)"),
        }
    )
    age = _integer(user[2], paths["users.dat"], "Age (field 3)")
    if not age.isin(ML1M_AGE_CODES).all():
        bad = sorted(set(age[~age.isin(ML1M_AGE_CODES)].tolist()))[:5]
        raise DatasetError(f"{paths['users.dat']}: Age must be one of the codes {ML1M_AGE_CODES}, found {bad}")
    occupation = _integer(user[3], paths["users.dat"], "Occupation (field 4)")
    if not occupation.between(0, len(ML1M_OCCUPATIONS) - 1).all():
        raise DatasetError(f"{paths['users.dat']}: Occupation must be a code 0..{len(ML1M_OCCUPATIONS) - 1}")
    users = pd.DataFrame(
        {
            "raw_id": user[0],
            "gender": _gender(user[1], paths["users.dat"]),
            "age": age,
            # Bracket codes: 35 means 35-44 (group 1); 45 means 45-49, so group 2 from there on.
            "age_group": np.select([age < 35, age < 45], [0, 1], 2).astype(np.int64),
            "occupation": occupation.map(lambda c: ML1M_OCCUPATIONS[c]),
        }
    )
    items = pd.DataFrame(
        {
            "raw_id": movie[0],
            "year": _year(pd.Series([""] * len(movie)), movie[1]),
            "genres": [tuple(g for g in s.split("|") if g) for s in movie[2]],
            "title": movie[1].map(_clean_title),
        }
    )
    files = {"ratings": paths["ratings.dat"], "users": paths["users.dat"], "items": paths["movies.dat"]}
    return _assemble("ml-1m", str(directory), ratings, users, items, files)


def _require(paths, name: str, url: str) -> None:
    for path in paths:
        if not path.is_file():
            raise DatasetError(
                f"{name}: missing file {path.name} in {path.parent} (found {_listing(path.parent)}); "
                f"unzip the GroupLens {name} archive from {url} there"
            )


# --------------------------------------------------------------------------------------------
# Parsing helpers


def _read_table(path: Path, *, sep: str, encoding: str, n_cols: int | None = None, header: bool = False) -> pd.DataFrame:
    """Read a delimited text file as strings; any problem becomes a DatasetError naming the file."""
    shown = sep
    try:
        if len(sep) > 1:
            # Multi-character separators need pandas' slow python engine: map them to a tab
            # (MovieLens .dat files contain no tabs) and keep the fast C parser.
            text = path.read_text(encoding=encoding)
            if "\t" in text:
                raise DatasetError(f"{path}: contains a tab character; expected fields separated by {sep!r} only")
            source: Any = io.StringIO(text.replace(sep, "\t"))
            sep = "\t"
        else:
            source = path
        frame = pd.read_csv(
            source,
            sep=sep,
            header=0 if header else None,
            dtype=str,
            keep_default_na=False,
            quoting=csv.QUOTE_NONE,
            encoding=encoding if source is path else None,
            skip_blank_lines=True,
        )
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{path}: the file is empty; re-extract the dataset archive") from None
    except pd.errors.ParserError as exc:
        raise DatasetError(f"{path}: cannot be parsed as {shown!r}-separated text: {exc}") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not valid {encoding} text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be read: {exc}") from None
    if frame.empty:
        raise DatasetError(f"{path}: has no data rows; re-extract the dataset archive")
    if n_cols is not None and frame.shape[1] != n_cols:
        raise DatasetError(
            f"{path}: expected {n_cols} {shown!r}-separated columns per line, found {frame.shape[1]}; "
            "is this the right file of the right dataset?"
        )
    return frame


def _numeric(values: pd.Series, path: Path, column: str) -> pd.Series:
    out = pd.to_numeric(values, errors="coerce")
    bad = out.isna() | ~np.isfinite(out.to_numpy(dtype=float, na_value=np.nan))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DatasetError(f"{path}: {column} must be a number, found {values.iloc[row]!r} in data row {row + 1}")
    return out.astype(np.float64)


def _integer(values: pd.Series, path: Path, column: str) -> pd.Series:
    out = _numeric(values, path, column)
    frac = out.to_numpy() != np.round(out.to_numpy())
    if frac.any():
        row = int(np.flatnonzero(frac)[0])
        raise DatasetError(f"{path}: {column} must be an integer, found {values.iloc[row]!r} in data row {row + 1}")
    return out.astype(np.int64)


def _gender(values: pd.Series, path: Path) -> pd.Series:
    mapped = values.str.upper().map({"M": 0, "F": 1})
    if mapped.isna().any():
        row = int(np.flatnonzero(mapped.isna().to_numpy())[0])
        raise DatasetError(f"{path}: gender must be M or F, found {values.iloc[row]!r} in data row {row + 1}")
    return mapped.astype(np.int64)


def _year(primary: pd.Series, titles: pd.Series) -> pd.Series:
    """Year from `primary` (str, '' if unknown), else from a '(YYYY)' in the title, else NaN."""
    prim = pd.to_numeric(pd.Series(primary.to_numpy()), errors="coerce").to_numpy(dtype=np.float64)
    from_title = np.array([_title_year(t) for t in titles], dtype=np.float64)
    return pd.Series(np.where(np.isnan(prim), from_title, prim), index=titles.index, dtype=np.float64)


def _title_year(title: str) -> float:
    years = _TITLE_YEAR.findall(title)
    return float(years[-1]) if years else np.nan


def _clean_title(title: str) -> str:
    return _TRAILING_YEAR.sub("", title).strip()


def age_group_of(age: pd.Series | np.ndarray) -> np.ndarray:
    """PrivNet's groups from exact ages: 0 = under 35, 1 = 35 to 45 (inclusive), 2 = over 45."""
    a = np.asarray(age)
    return np.select([a < 35, a <= 45], [0, 1], 2).astype(np.int64)


def _assemble(
    name: str,
    source: str,
    ratings: pd.DataFrame,
    users: pd.DataFrame,
    items: pd.DataFrame,
    files: dict[str, Path],
) -> Dataset:
    """Check referential integrity and remap raw ids to contiguous ints in sorted order."""
    for label, frame in (("users", users), ("items", items)):
        dup = frame["raw_id"].duplicated()
        if dup.any():
            raise DatasetError(f"{files[label]}: id {frame['raw_id'][dup].iloc[0]!r} appears on more than one line")
    user_ids = _sorted_ids(ratings["user_raw"].unique())
    item_ids = _sorted_ids(ratings["item_raw"].unique())
    users = users.set_index("raw_id")
    items = items.set_index("raw_id")
    for label, ids, meta in (("users", user_ids, users), ("items", item_ids, items)):
        unknown = ids[~np.isin(ids, meta.index.to_numpy())]
        if unknown.size:
            raise DatasetError(
                f"{files['ratings']} rates {label} with no line in {files[label]} "
                f"({unknown.size} of them, e.g. {', '.join(map(str, unknown[:3]))}); the files do not belong together"
            )
    user = pd.Index(user_ids).get_indexer(ratings["user_raw"]).astype(np.int64)
    item = pd.Index(item_ids).get_indexer(ratings["item_raw"]).astype(np.int64)
    out = pd.DataFrame(
        {
            "user": user,
            "item": item,
            "rating": ratings["rating"].to_numpy(np.float32),
            "timestamp": ratings["timestamp"].to_numpy(np.int64),
        }
    )
    dup = out.duplicated(["user", "item"])
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise DatasetError(
            f"{files['ratings']}: user {user_ids[user[row]]} rates item {item_ids[item[row]]} "
            f"more than once ({int(dup.sum())} repeated pairs); each (user, item) pair must appear once"
        )
    order = order_by_user_time_item(out["user"].to_numpy(), out["timestamp"].to_numpy(), out["item"].to_numpy())
    out = out.iloc[order].reset_index(drop=True)

    users = users.loc[user_ids].reset_index()
    users.index = pd.RangeIndex(len(users), name="user")
    users = users[["gender", "age", "age_group", "occupation", "raw_id"]].astype(
        {"gender": np.int64, "age": np.int64, "age_group": np.int64}
    )
    items = items.loc[item_ids].reset_index()
    items.index = pd.RangeIndex(len(items), name="item")
    items = items[["year", "genres", "title", "raw_id"]].astype({"year": np.float64})
    return Dataset(name=name, ratings=out, users=users, items=items, source=source)


def order_by_user_time_item(user: np.ndarray, time: np.ndarray, item: np.ndarray) -> np.ndarray:
    """Indices sorting by (user, time, item); one argsort of a packed key when it fits in int64
    (several times faster than np.lexsort on millions of rows)."""
    if user.size == 0:
        return np.zeros(0, dtype=np.int64)
    t0, t1 = int(time.min()), int(time.max())
    n_u, n_t, n_i = int(user.max()) + 1, t1 - t0 + 1, int(item.max()) + 1
    if int(user.min()) >= 0 and int(item.min()) >= 0 and n_u * n_t * n_i < 2**62:
        key = (user.astype(np.int64) * n_t + (time.astype(np.int64) - t0)) * n_i + item.astype(np.int64)
        return np.argsort(key, kind="stable")
    return np.lexsort((item, time, user))


def _sorted_ids(ids: np.ndarray) -> np.ndarray:
    """Raw ids as strings, sorted numerically when they are all integers, else lexically."""
    ids = np.asarray(ids, dtype=object).astype(str)
    if all(s.isdigit() for s in ids):
        return ids[np.argsort(ids.astype(np.int64), kind="stable")].astype(object)
    return np.sort(ids).astype(object)


# --------------------------------------------------------------------------------------------
# Synthetic data


# Genres with base weights (roughly ML-100K's genre counts) and planted affinities: gender
# affinity > 0 leans female, age affinity > 0 leans older. Directions follow what is commonly
# reported for MovieLens; the magnitudes only matter relative to `signal`.
SYNTHETIC_GENRES: dict[str, tuple[float, float, float]] = {
    # genre: (weight, gender affinity, age affinity)
    "Action": (250, -0.7, -0.1),
    "Adventure": (135, -0.3, 0.0),
    "Animation": (42, 0.1, -0.4),
    "Children's": (122, 0.4, -0.3),
    "Comedy": (505, 0.2, -0.3),
    "Crime": (109, -0.3, 0.1),
    "Documentary": (50, 0.0, 0.4),
    "Drama": (725, 0.3, 0.3),
    "Fantasy": (22, 0.1, -0.2),
    "Film-Noir": (24, -0.3, 0.7),
    "Horror": (92, -0.2, -0.6),
    "Musical": (56, 0.7, 0.5),
    "Mystery": (61, 0.1, 0.4),
    "Romance": (247, 0.9, 0.1),
    "Sci-Fi": (101, -0.7, -0.2),
    "Thriller": (251, -0.2, 0.0),
    "War": (71, -0.6, 0.6),
    "Western": (27, -0.5, 0.7),
}
SYNTHETIC_OCCUPATIONS = {
    "student": 0.21, "other": 0.11, "educator": 0.10, "administrator": 0.08, "engineer": 0.07,
    "programmer": 0.07, "librarian": 0.05, "writer": 0.05, "executive": 0.03, "scientist": 0.03,
    "artist": 0.03, "technician": 0.03, "marketing": 0.03, "entertainment": 0.02,
    "healthcare": 0.02, "retired": 0.015, "lawyer": 0.013, "salesman": 0.013, "none": 0.01,
    "doctor": 0.007, "homemaker": 0.007,
}  # fmt: skip
SIGNAL_SCALE = 0.11  # signal=1 gives ML-100K-like leakage (gender AUC ~0.77 from item counts)
_T0 = 874_724_710  # ML-100K's first timestamp (1997-09-20), so synthetic times look alike
_DAY = 86_400


def make_synthetic(
    n_users: int = 1000,
    n_items: int = 1200,
    mean_interactions: float = 60,
    signal: float = 1.0,
    seed: int = 0,
    *,
    p_female: float = 0.29,
    min_interactions: int = 5,
    n_factors: int = 8,
    chunk_elements: int = 4_000_000,
) -> Dataset:
    """A MovieLens-like dataset with a planted dependence of interactions on gender and age.

    Users: gender ~ Bernoulli(p_female); age ~ 14 + Gamma(3, 6.5) (mean ~34, like ML-100K),
    occupation from ML-100K-like frequencies (mostly "student" under 23). Items: release years
    skewed to the 1990s, 1-3 genres. Each item has a gender affinity and an age affinity (mean of
    its genres' affinities plus item noise; older movies lean to older users), standardised over
    items. A user's preference for an item is

        popularity_i + <theta_u, phi_i> + signal * (g_u * a_gender_i + z_age_u * a_age_i)

    with g_u = +1 for women, -1 for men and z_age_u the standardised age. Each user interacts
    with n_u ~ LogNormal (mean `mean_interactions`, at least `min_interactions`, at most n_items)
    items drawn without replacement with probability proportional to exp(preference) (Gumbel
    top-k); ratings 1-5 grow with the user's standardised preference for the item, so positives
    (>= 4) carry the signal too. With signal = 0 nothing about the interactions, ratings or
    timestamps depends on gender or age. Runs in chunks of users (memory ~ chunk_elements).
    """
    if n_users < 1 or n_items < 1:
        raise DatasetError(f"make_synthetic needs n_users >= 1 and n_items >= 1, got {n_users}, {n_items}")
    if mean_interactions <= 0 or min_interactions < 1:
        raise DatasetError("make_synthetic needs mean_interactions > 0 and min_interactions >= 1")
    if not 0.0 <= p_female <= 1.0:
        raise DatasetError(f"p_female must be in [0, 1], got {p_female}")
    if signal < 0:
        raise DatasetError(f"signal must be >= 0, got {signal}")
    rng = np.random.default_rng(seed)

    # Users.
    gender = (rng.random(n_users) < p_female).astype(np.int64)
    age = np.clip(np.rint(14 + rng.gamma(3.0, 6.5, n_users)), 7, 80).astype(np.int64)
    occ_names = np.array(list(SYNTHETIC_OCCUPATIONS))
    occ_p = np.array(list(SYNTHETIC_OCCUPATIONS.values()))
    occupation = occ_names[rng.choice(occ_names.size, n_users, p=occ_p / occ_p.sum())]
    young_student = (age < 23) & (rng.random(n_users) < 0.7)
    occupation = np.where(young_student, "student", occupation)

    # Items.
    recent = rng.random(n_items) < 0.8
    year = np.where(recent, 1998 - np.floor(rng.exponential(3.0, n_items)), rng.integers(1926, 1991, n_items))
    year = np.clip(year, 1922, 1998).astype(np.float64)
    genre_names = list(SYNTHETIC_GENRES)
    weight, g_aff, a_aff = (np.array(v, dtype=np.float64) for v in zip(*SYNTHETIC_GENRES.values()))
    n_genres = 1 + rng.binomial(2, 0.35, n_items)
    keys = np.log(weight)[None, :] + rng.gumbel(size=(n_items, len(genre_names)))
    ranked = np.argsort(-keys, axis=1)
    member = np.zeros((n_items, len(genre_names)), dtype=bool)
    rows = np.repeat(np.arange(n_items), n_genres)
    cols = ranked[rows, np.concatenate([np.arange(k) for k in n_genres])]
    member[rows, cols] = True
    genres = [tuple(genre_names[j] for j in np.flatnonzero(m)) for m in member]
    counts = member.sum(axis=1)
    item_gender = member @ g_aff / counts + rng.normal(0.0, 0.4, n_items)
    item_age = member @ a_aff / counts + np.clip((1995 - year) / 30.0, 0, 2) + rng.normal(0.0, 0.4, n_items)
    item_gender = _standardise(item_gender)
    item_age = _standardise(item_age)

    # Collaborative structure independent of the attributes.
    popularity = rng.normal(0.0, 1.0, n_items)
    theta = rng.normal(0.0, 1.0, (n_users, n_factors))
    phi = rng.normal(0.0, 0.8 / np.sqrt(n_factors), (n_items, n_factors))
    mu = np.log(mean_interactions) - 0.5 * 0.8**2
    n_u = np.clip(np.rint(rng.lognormal(mu, 0.8, n_users)), min(min_interactions, n_items), n_items).astype(np.int64)
    start = _T0 + rng.integers(0, 210 * _DAY, n_users)
    span = (1 + rng.exponential(30.0, n_users)) * _DAY

    g_sign = np.where(gender == 1, 1.0, -1.0)
    z_age = (age - 34.0) / 12.0
    # Preference = W_u . F_i with item features F = [popularity, phi, a_gender, a_age] and user
    # weights W = [1, theta, s*g, s*z_age]; its mean and variance over items per user follow from
    # F's mean and covariance, so ratings need no pass over the full [users, items] matrix.
    strength = SIGNAL_SCALE * signal
    feats = np.column_stack([popularity, phi, item_gender, item_age])
    weights = np.column_stack([np.ones(n_users), theta, strength * g_sign, strength * z_age])
    f_mean = feats.mean(axis=0)
    f_cov = np.cov(feats, rowvar=False, bias=True) if n_items > 1 else np.zeros((feats.shape[1],) * 2)
    u_mean = weights @ f_mean
    u_sd = np.sqrt(np.maximum(np.einsum("uf,fg,ug->u", weights, f_cov, weights), 0.0)) + 1e-9
    feats32 = feats.astype(np.float32)
    # Chunks of users with similar n_u keep the per-row top-k work close to the output size.
    by_count = np.argsort(n_u, kind="stable")
    chunk = max(1, int(chunk_elements // n_items))
    out_users, out_items, out_ratings, out_times = [], [], [], []
    for lo in range(0, n_users, chunk):
        members = by_count[lo : lo + chunk]
        pref = weights[members].astype(np.float32) @ feats32.T
        # Gumbel top-k (Gumbel = -log Exp(1)): the k largest of pref + Gumbel noise are a draw
        # without replacement with probabilities proportional to exp(pref).
        exp_noise = rng.standard_exponential(pref.shape, dtype=np.float32)
        noisy = pref - np.log(np.maximum(exp_noise, np.float32(1e-30)))
        k = n_u[members]
        kmax = int(k.max())
        top = np.argpartition(-noisy, kmax - 1, axis=1)[:, :kmax] if kmax < n_items else np.argsort(-noisy, axis=1)
        rows = np.arange(members.size)[:, None]
        if int(k.min()) < kmax:
            top = top[rows, np.argsort(-noisy[rows, top], axis=1)]
        take = np.arange(top.shape[1])[None, :] < k[:, None]
        row_c = np.broadcast_to(rows, top.shape)[take]
        users_c = members[row_c]
        items_c = top[take]
        # Ratings follow the user's standardised preference for the item.
        z_sel = (pref[row_c, items_c] - u_mean[users_c]) / u_sd[users_c]
        rating = np.clip(np.rint(2.9 + 0.75 * z_sel + rng.normal(0.0, 0.9, z_sel.size)), 1, 5)
        when = start[users_c] + np.floor(rng.random(z_sel.size) * span[users_c]).astype(np.int64)
        out_users.append(users_c)
        out_items.append(items_c)
        out_ratings.append(rating)
        out_times.append(when)

    user_col = np.concatenate(out_users).astype(np.int64)
    item_col = np.concatenate(out_items).astype(np.int64)
    time_col = np.concatenate(out_times).astype(np.int64)
    order = order_by_user_time_item(user_col, time_col, item_col)
    ratings = pd.DataFrame(
        {
            "user": user_col[order],
            "item": item_col[order],
            "rating": np.concatenate(out_ratings).astype(np.float32)[order],
            "timestamp": time_col[order],
        }
    )
    users = pd.DataFrame(
        {
            "gender": gender,
            "age": age,
            "age_group": age_group_of(age),
            "occupation": occupation.astype(object),
            "raw_id": np.arange(n_users).astype(str).astype(object),
        },
        index=pd.RangeIndex(n_users, name="user"),
    )
    items = pd.DataFrame(
        {
            "year": year,
            "genres": pd.Series(genres, dtype=object).to_numpy(),
            "title": np.array([f"Synthetic movie {i}" for i in range(n_items)], dtype=object),
            "raw_id": np.arange(n_items).astype(str).astype(object),
        },
        index=pd.RangeIndex(n_items, name="item"),
    )
    source = (
        f"synthetic(seed={seed}, n_users={n_users}, n_items={n_items}, "
        f"mean_interactions={mean_interactions}, signal={signal}, p_female={p_female})"
    )
    return Dataset(name="synthetic", ratings=ratings, users=users, items=items, source=source)


def _standardise(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)


__all__: list[str] = [
    "DATASETS",
    "Dataset",
    "DatasetError",
    "age_group_of",
    "find_embedded_ml100k",
    "load_atomic",
    "load_dataset",
    "load_grouplens_100k",
    "load_grouplens_1m",
    "make_synthetic",
    "order_by_user_time_item",
]
