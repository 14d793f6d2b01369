"""Item-based collaborative filtering (paper 004's "Item"): item-item cosine similarity of the
members' binary interaction columns; a user's score for an item is the sum of its
similarities to the items in the user's history (every neighbour counts).

Training reads only the members' histories; a user outside them is scored the same way from
their own history (fold-in), with the similarities the members gave.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import Recommender, binary_matrix


class ItemCF(Recommender):
    name = "item"

    def _fit(self, rows: np.ndarray, items: np.ndarray) -> dict[str, Any]:
        x = np.zeros((self.users.size, self.n_items), dtype=np.float64)
        x[rows, items] = 1.0
        co = x.T @ x
        norm = np.sqrt(np.diag(co))
        denom = np.outer(norm, norm)
        sim = np.divide(co, denom, out=np.zeros_like(co), where=denom > 0)
        np.fill_diagonal(sim, 0.0)  # an item is not its own neighbour
        self.similarity = sim.astype(np.float32)
        self._members = x.astype(np.float32)
        return {"items_with_interactions": int((norm > 0).sum())}

    def member_scores(self, users: np.ndarray) -> np.ndarray:
        return self._members[self.rows_of(users)] @ self.similarity

    def fold_in_scores(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
        return binary_matrix(histories, self.n_items) @ self.similarity
