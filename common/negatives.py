"""Negative sampling for implicit feedback: items a user has not interacted with in training.

The sampler sees only training positives; it knows nothing of evaluation items, so it can
neither train on them nor deliberately avoid them (either would leak the test set).
"""

from __future__ import annotations

import numpy as np


class NegativeSampler:
    """Draws, for each requested user, one item outside that user's training positives.

    ``alpha`` skews draws towards popular items (probability ∝ count^alpha; 0 is uniform).
    """

    def __init__(self, user: np.ndarray, item: np.ndarray, n_items: int,
                 alpha: float = 0.0, max_rounds: int = 50) -> None:
        if n_items < 1:
            raise ValueError(f"Number of items must be >= 1. Found {n_items}.")
        self.alpha = alpha
        self.max_rounds = max_rounds
        self.keys = np.empty(0, dtype=np.int64)
        self.counts = np.zeros(0, dtype=np.int64)
        self.n_items = 0
        self.cdf: np.ndarray | None = None
        self.extend(user, item, n_items)

    def extend(self, user: np.ndarray, item: np.ndarray, n_items: int | None = None) -> None:
        """Add training positives (and grow the catalogue to ``n_items``)."""
        largest = int(item.max()) + 1 if len(item) else 0
        self.n_items = max(self.n_items, int(n_items or 0), largest)
        self.keys = np.union1d(self.keys, _key(user, item))
        self.counts = np.bincount(item, minlength=self.n_items) + np.pad(
            self.counts, (0, self.n_items - len(self.counts)))
        if self.alpha:
            weight = np.maximum(self.counts.astype(np.float64) ** self.alpha, 1e-12)
            self.cdf = np.cumsum(weight) / weight.sum()

    def _draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.cdf is None:
            return rng.integers(0, self.n_items, size=n)
        idx = np.searchsorted(self.cdf, rng.random(n), side="right")
        return np.minimum(idx, self.n_items - 1)

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Whether each (user, item) pair is a training positive."""
        key = _key(users, items)
        pos = np.searchsorted(self.keys, key)
        pos = np.minimum(pos, len(self.keys) - 1) if len(self.keys) else pos
        return (self.keys[pos] == key) if len(self.keys) else np.zeros(len(key), dtype=bool)

    def sample(self, users: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One negative per entry of ``users``.

        Returns the items and a mask of the entries that found one (a user who has
        interacted with every item has no negative).
        """
        items = self._draw(len(users), rng)
        bad = self.is_positive(users, items)
        for _ in range(self.max_rounds):
            if not bad.any():
                break
            idx = np.flatnonzero(bad)
            items[idx] = self._draw(len(idx), rng)
            bad[idx] = self.is_positive(users[idx], items[idx])
        return items.astype(np.int32), ~bad


def _key(user: np.ndarray, item: np.ndarray) -> np.ndarray:
    """One int64 per (user, item) pair, independent of the catalogue's size."""
    return (np.asarray(user, dtype=np.int64) << 32) | np.asarray(item, dtype=np.int64)
