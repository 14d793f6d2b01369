"""A synthetic MovieLens-like dataset with a planted dependence of interactions on gender and
age, of any size (tests, scale runs, and data cdrsim was never tuned on)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .dataset import Dataset, DatasetError, age_group_of, order_by_user_time_item

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
    ids = np.int32 if max(n_users, n_items) < 2**31 else np.int64  # ids while the interactions are drawn
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
        # Kept compact until the end (ids fit in 32 bits, ratings are small integers): the
        # interactions are the bulk of the memory at a million users.
        out_users.append(users_c.astype(ids))
        out_items.append(items_c.astype(ids))
        out_ratings.append(rating.astype(np.float32))
        out_times.append(when.astype(np.int64))

    user_col, item_col, time_col = (_joined(parts) for parts in (out_users, out_items, out_times))
    order = order_by_user_time_item(user_col, time_col, item_col)
    # Each column is put in order and the unordered one dropped before the next; the frame
    # keeps the arrays as they are (no copy into one block).
    columns = {}
    for name, parts, dtype in (("user", user_col, np.int64), ("item", item_col, np.int64), ("rating", out_ratings, np.float32)):
        values = _joined(parts) if isinstance(parts, list) else parts
        columns[name] = values[order].astype(dtype, copy=False)
        del values
    del user_col, item_col
    columns["timestamp"] = time_col[order]
    del time_col, order
    ratings = pd.DataFrame(columns, copy=False)
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


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """The parts in one array; the list is emptied so that the parts can be freed."""
    out = np.concatenate(parts)
    parts.clear()
    return out


def _standardise(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)
