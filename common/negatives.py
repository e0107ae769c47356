"""Negative sampling for implicit feedback: items a user has not interacted with in training.

The sampler sees only training positives; it knows nothing of evaluation items, so it can
neither train on them nor deliberately avoid them (either would leak the test set).
Devices may draw from a round's public pool instead of the whole catalogue
(:func:`negative_pool`), so that a round moves few rows.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from fedrec.common.hashing import GOLDEN, splitmix64

# The largest popularity skew: (count + 1)^alpha stays finite in float64 for any count a
# catalogue holds (10^9 events: 10^90), and 1 is already plain popularity.
MAX_ALPHA = 10.0


def check_alpha(value: object, name: str = "alpha") -> float:
    """``value`` as a popularity skew, or a ValueError naming ``name``: a real number in
    [-MAX_ALPHA, MAX_ALPHA] (a NaN, an infinity or a huge skew would make the draws'
    weights overflow and every draw the last item)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number. Found {value!r}.")
    if not (np.isfinite(value) and abs(value) <= MAX_ALPHA):
        raise ValueError(f"{name} must be a finite number in [-{MAX_ALPHA:g}, "
                         f"{MAX_ALPHA:g}]. Found {value!r}.")
    return float(value)


class NegativeSampler:
    """Draws, for each requested user, one item outside that user's training positives.

    ``alpha`` skews draws towards popular items (probability ∝ (count + 1)^alpha; 0 is
    uniform). The one added keeps every item a possible negative: with count^alpha, an
    item no training event names would never be drawn, never be pushed down, and rise to
    the top of everyone's list (on ML-100K, alpha 0.05 took 76 % of the top 10).
    """

    def __init__(self, user: np.ndarray, item: np.ndarray, n_items: int,
                 alpha: float = 0.0, max_rounds: int = 50) -> None:
        if n_items < 1:
            raise ValueError(f"Number of items must be >= 1. Found {n_items}.")
        self.alpha = check_alpha(alpha)
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
            weight = (self.counts.astype(np.float64) + 1.0) ** self.alpha
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


# ---- a round's public pool of negatives -------------------------------------------------
MIN_POOL = 64  # a pool never holds fewer items than this (or the whole catalogue if smaller)


def pool_seed(seed: int, server_round: int, rounds: int) -> int:
    """The hash seed of the pool ``server_round`` draws from: one pool serves ``rounds``
    rounds in turn, each pool a hash of the run's ``seed`` and the pool's number alone
    (the server sends it as the round config's ``negative-pool-seed``)."""
    if rounds < 1:
        raise ValueError(f"negative-pool-rounds must be >= 1. Found {rounds}.")
    period = max(0, server_round - 1) // rounds
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps, as SplitMix64 wants
        key = splitmix64(np.uint64(seed % 2**64) ^ splitmix64(np.uint64(period) + GOLDEN))
    return int(key >> np.uint64(1))  # fits a signed 64-bit config value


@lru_cache(maxsize=8)
def _pool(share: float, seed: int, n_items: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        h = splitmix64(np.arange(n_items, dtype=np.uint64) + np.uint64(seed % 2**64))
    inside = np.flatnonzero(h < np.uint64(min(share * 2.0**64, 2.0**64 - 2**11)))
    want = min(n_items, MIN_POOL)
    if len(inside) < want:  # a small catalogue: the items of lowest hash
        inside = np.sort(np.argpartition(h, want - 1)[:want])
    inside.flags.writeable = False
    return inside


def negative_pool(share: float, seed: int, n_items: int) -> np.ndarray | None:
    """The public pool of negatives named by ``seed`` (:func:`pool_seed`): each item of the
    catalogue is in it with probability ``share``, by a hash of the seed and the item
    alone, so every device and the server name the same items without sending them, an
    item's membership does not change as the catalogue grows, and nothing in it depends on
    any device's data. Sorted item ids, at least :data:`MIN_POOL` of them; None (the whole
    catalogue) when ``share`` is 1 or the catalogue is no larger than that.

    Why: with negatives drawn from the whole catalogue, every implicit event nudges rows
    all over it, so delta sync has to send a device most rows it has (the synthetic
    100,000-item shop moves a tenth of its catalogue a tick). With a pool, a round's
    updates name only the users' positives and the pool's rows."""
    if not 0 < share <= 1:
        raise ValueError(f"negative-pool must be in (0, 1]. Found {share}.")
    if share >= 1 or n_items <= MIN_POOL:
        return None
    return _pool(float(share), int(seed), int(n_items))
