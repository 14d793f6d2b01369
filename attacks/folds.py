"""Each user's latest row over a stream of per-user artifacts (a tap folding per-step traffic).

`LatestRows` keeps what the stream told about each user by its end: for every user id, the
row of the last artifact that carried it. It stores the artifacts' arrays as they come and
reduces them with numpy (one pass per `COMPACT_ROWS` rows), so memory stays bounded by the
number of distinct users, not by the length of the stream.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

COMPACT_ROWS = 1 << 16  # rows held before they are reduced to one per user


class LatestRows:
    def __init__(self) -> None:
        self._parts: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
        self._rows = 0

    def add(self, user_ids: np.ndarray, fields: Mapping[str, np.ndarray]) -> None:
        """Rows of one artifact: `fields[k][i]` belongs to user `user_ids[i]`."""
        users = np.asarray(user_ids).reshape(-1)
        self._parts.append((users, {k: np.asarray(v) for k, v in fields.items()}))
        self._rows += users.size
        if self._rows > COMPACT_ROWS and len(self._parts) > 1:
            self._compact()

    def latest(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(user ids ascending as int64, {field (sorted): each user's latest row, stacked})."""
        self._compact()
        if not self._parts:
            return np.zeros(0, dtype=np.int64), {}
        users, fields = self._parts[0]
        if users.size == 0:
            return users, {}
        return users, {k: fields[k] for k in sorted(fields)}

    def _compact(self) -> None:
        if not self._parts:
            return
        names = set(self._parts[0][1])
        uniform = all(set(f) == names and all(f[k].shape[:1] == u.shape for k in f) for u, f in self._parts)
        if uniform:
            try:
                users = np.concatenate([u for u, _ in self._parts]).astype(np.int64)
                fields = {k: np.concatenate([f[k] for _, f in self._parts]) for k in names}
            except ValueError:  # rows of one field with different shapes or dtypes
                uniform = False
        if not uniform:
            self._parts = [self._by_dict()]
            self._rows = self._parts[0][0].size
            return
        # The last occurrence of each user: the first in the reversed stream.
        unique, first_reversed = np.unique(users[::-1], return_index=True)
        last = users.size - 1 - first_reversed
        self._parts = [(unique, {k: v[last] for k, v in fields.items()})]
        self._rows = unique.size

    def _by_dict(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The same reduction row by row, for streams whose artifacts differ in fields or
        shapes: a user's latest artifact decides its fields; the fields listed are those of
        the lowest user id."""
        rows: dict[int, dict[str, np.ndarray]] = {}
        for users, fields in self._parts:
            for i, user in enumerate(users.tolist()):
                rows[int(user)] = {k: v[i] for k, v in fields.items()}
        ids = np.array(sorted(rows), dtype=np.int64)
        names = sorted(rows[int(ids[0])]) if ids.size else []
        return ids, {k: np.stack([rows[int(u)][k] for u in ids]) for k in names}
