"""What an eavesdropper captured, on disk: one safetensors file per reassembled artifact, a
users table, and an index of every intercept; `load_artifact` reads an artifact file back.

Kept apart from the tap itself (attacks/tap.py), which captures, decodes and reassembles:
this module only exports and imports what was captured, so anyone can rerun attacks on it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from .artifact import Artifact
from .jsonable import json_safe

if TYPE_CHECKING:  # annotation only: the tap imports this module
    from .tap import Eavesdropper

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def save_capture(
    tap: Eavesdropper, directory: Path | str, users: pd.DataFrame | None = None, kinds: Iterable[str] | None = None
) -> list[Path]:
    """Write what `tap` captured into `directory` (see `Eavesdropper.save`); returns the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    wanted = None if kinds is None else set(kinds)
    artifacts = {n: a for n, a in tap.artifacts().items() if wanted is None or a.kind in wanted}
    written: list[Path] = []
    files: dict[str, str] = {}
    used: set[str] = set()
    for name, art in artifacts.items():
        stem = _SAFE_NAME.sub("_", name) or "artifact"
        while stem in used:
            stem += "_"
        used.add(stem)
        path = directory / f"artifact-{stem}.safetensors"
        tensors = {"user_ids": np.ascontiguousarray(art.user_ids)}
        tensors.update({k: np.ascontiguousarray(v) for k, v in art.arrays.items()})
        # One metadata key keeps the file bytes deterministic.
        save_file(tensors, str(path), metadata={"cdrsim": json.dumps(json_safe(art.file_info()), sort_keys=True)})
        files[name] = path.name
        written.append(path)

    users_path = directory / "users.csv"
    users_table(artifacts, users).to_csv(users_path, index=False)
    written.append(users_path)

    index_path = directory / "index.json"
    index = {
        "summary": tap.summary(),
        "artifact_files": files,
        "intercepts": [rec.describe() for rec in tap.intercepts],
    }
    index_path.write_text(json.dumps(json_safe(index), indent=1, sort_keys=True))
    written.append(index_path)
    return written


def users_table(artifacts: Mapping[str, Artifact], users: pd.DataFrame | None) -> pd.DataFrame:
    """Every user id seen in an artifact (and every id in `users`), whether it was intercepted,
    and the known labels from `users` (its `user_id` column, or its index)."""
    seen = np.unique(np.concatenate([a.user_ids for a in artifacts.values()])) if artifacts else np.zeros(0, dtype=np.int64)
    table = pd.DataFrame({"user_id": seen.astype(np.int64), "intercepted": True})
    if users is None:
        return table
    labels = users.copy()
    if "user_id" not in labels.columns:
        labels = labels.rename_axis("user_id").reset_index()
    try:
        labels["user_id"] = labels["user_id"].astype(np.int64)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            "users must identify users by integer ids, in a 'user_id' column or as its index "
            f"(the ids the artifacts carry); got {labels['user_id'].dtype}"
        ) from exc
    labels = labels.drop(columns=["intercepted"], errors="ignore")
    merged = table.merge(labels, on="user_id", how="outer")
    merged["intercepted"] = merged["intercepted"].astype("boolean").fillna(False).astype(bool)
    return merged.sort_values("user_id", kind="stable").reset_index(drop=True)


def load_artifact(path: Path | str) -> Artifact:
    """Read back an artifact written by `Eavesdropper.save`."""
    path = Path(path)
    with safe_open(str(path), framework="numpy") as f:
        info = json.loads((f.metadata() or {}).get("cdrsim", "{}"))
    tensors = load_file(str(path))
    if "user_ids" not in tensors:
        raise ValueError(f"{path} has no 'user_ids' tensor; it was not written by Eavesdropper.save")
    user_ids = tensors.pop("user_ids")
    return Artifact(
        name=str(info.get("name", path.stem)),
        kind=str(info.get("kind", "")),
        meta=dict(info.get("meta", {})),
        user_ids=user_ids,
        arrays=tensors,
        complete=bool(info.get("complete", True)),
        missing_chunks=tuple(info.get("missing_chunks", ())),
        sender=str(info.get("sender", "")),
        receiver=str(info.get("receiver", "")),
        round=int(info.get("round", 0)),
    )
