"""A per-user artifact as the eavesdropper reassembled it (or as `load_artifact` read it back),
and the per-user feature matrices attacks are run on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Artifact:
    """A per-user artifact reassembled from its chunks: `arrays` excludes `user_ids`; every
    array has one row per entry of `user_ids`."""

    name: str
    kind: str
    meta: dict
    user_ids: np.ndarray
    arrays: dict[str, np.ndarray]
    complete: bool = True
    missing_chunks: tuple[int, ...] = ()
    sender: str = ""
    receiver: str = ""
    round: int = 0

    def features(self, field: str | None = None) -> np.ndarray:
        """Per-user feature matrix [n_users, d] (each row flattened, float32), rows ordered
        like `user_ids`. `field=None` concatenates every array in sorted name order."""
        names = [field] if field is not None else sorted(self.arrays)
        missing = [n for n in names if n not in self.arrays]
        if missing:
            raise KeyError(f"artifact {self.name!r} has no field {missing[0]!r}; fields: {sorted(self.arrays)}")
        n = int(self.user_ids.shape[0])
        blocks = []
        for key in names:
            arr = self.arrays[key]
            if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
                raise TypeError(f"artifact {self.name!r}: field {key!r} has non-numeric dtype {arr.dtype}")
            blocks.append(arr.reshape(n, -1).astype(np.float32))
        if not blocks:
            return np.zeros((n, 0), dtype=np.float32)
        return np.concatenate(blocks, axis=1)

    def features_for(self, user_ids: np.ndarray, field: str | None = None) -> np.ndarray:
        """Feature rows for the given users (first occurrence of each id); raises if one is absent."""
        feats = self.features(field)
        unique_ids, first = np.unique(np.asarray(self.user_ids, dtype=np.int64), return_index=True)
        wanted = np.asarray(user_ids, dtype=np.int64).reshape(-1)
        pos = np.searchsorted(unique_ids, wanted)
        clipped = np.minimum(pos, max(0, unique_ids.size - 1))
        found = (pos < unique_ids.size) & (unique_ids[clipped] == wanted) if unique_ids.size else np.zeros(wanted.size, bool)
        if not found.all():
            absent = wanted[~found]
            raise KeyError(f"artifact {self.name!r} has no rows for users {absent[:10].tolist()} ({absent.size} missing)")
        return feats[first[clipped]]

    def file_info(self) -> dict:
        """Everything but the arrays, as stored next to them by `Eavesdropper.save`."""
        return {
            "name": self.name,
            "kind": self.kind,
            "meta": self.meta,
            "complete": self.complete,
            "missing_chunks": list(self.missing_chunks),
            "sender": self.sender,
            "receiver": self.receiver,
            "round": self.round,
        }
