"""SplitMix64's finaliser: a fast, well-mixed public hash of item ids (and of a seed), so
that anything chosen "at random per item" (a sketch's buckets, a round's negative pool) is
the same for every device and the server without anyone sending it."""

from __future__ import annotations

import numpy as np

MASK = np.uint64(0xFFFFFFFFFFFFFFFF)
GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64s (wrapping arithmetic, on arrays and scalars)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return (x ^ (x >> np.uint64(31))) & MASK
