"""MovieLens readers: the embedded RecBole copy of ML-100K, GroupLens ml-100k and ml-1m.

Every reader returns a `Dataset` with contiguous 0-based user and item ids (raw ids remapped
in sorted order, numerically when all raw ids are integers). Only users and items that occur
in the ratings are kept; every rated user and item must have a metadata row.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .dataset import Dataset, DatasetError, age_group_of, order_by_user_time_item

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


def load_movielens(name: str, data_dir: str | Path | None = None) -> Dataset:
    """ "ml-100k" (the embedded copy without `data_dir`, else a GroupLens or RecBole directory)
    or "ml-1m" (a GroupLens directory; never embedded)."""
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
            return load_movielens("ml-100k", nested)
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


def _sorted_ids(ids: np.ndarray) -> np.ndarray:
    """Raw ids as strings, sorted numerically when they are all integers, else lexically."""
    ids = np.asarray(ids, dtype=object).astype(str)
    if all(s.isdigit() for s in ids):
        return ids[np.argsort(ids.astype(np.int64), kind="stable")].astype(object)
    return np.sort(ids).astype(object)
