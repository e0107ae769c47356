"""A count sketch (Charikar, Chen, Farach-Colton 2002) of a device's items: how secagg+dp
chooses its row set from a catalogue too large for one value per item.

The row-choice round of secagg+dp sums every device's popularity vector (one value per
item) under noise and keeps the items with the largest noisy counts. On a catalogue of
100,000 items that vector is 100,000 values a device would mask and send. A count sketch
folds it into ``depth`` rows of ``width`` buckets: each item adds its value, times a random
sign, to one bucket per row; an item's count is read back as the median over rows of its
signed buckets. Heavy items (the ones worth a row) stand out of their buckets' collisions
when ``width`` is well above the number of heavy items; light items' estimates are noise,
which is what the choice ignores anyway.

The sketch is linear, so the sum of devices' sketches is the sketch of the summed counts,
and SecAgg+ and the Skellam noise carry it unchanged. Its hashes are public, fixed by the
run's seed and the sketch's shape: they depend on no device's data. Each item's bucket and
sign is a hash of the item alone (SplitMix64), so a device computes them for its own items
only; a catalogue size the round claims costs it nothing. Each device clips its
whole sketch to the round's norm, so the sensitivity (and ε) is that of any other vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedrec.common.hashing import GOLDEN, splitmix64

DEPTH = 3  # rows: the median of three resists one collision with a heavy item


@dataclass(frozen=True)
class Sketch:
    """The public shape and hashes of a count sketch over ``n_items`` items."""

    n_items: int
    width: int
    seed: int = 0
    depth: int = DEPTH

    def __post_init__(self) -> None:
        if self.n_items < 1 or self.width < 1 or self.depth < 1:
            raise ValueError(f"a sketch needs n_items, width and depth >= 1; found "
                             f"{self.n_items}, {self.width}, {self.depth}")

    @classmethod
    def of_values(cls, n_items: int, values: int, seed: int = 0) -> Sketch:
        """The sketch of ``values`` values in all (``depth`` rows of ``values // depth``)."""
        return cls(n_items, max(1, values // DEPTH), seed)

    @property
    def dim(self) -> int:
        return self.depth * self.width

    def hashes(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``items``' buckets (flattened over rows) and signs, ``(depth, len(items))``
        each: a hash of the run's seed, the sketch's shape, the row and the item."""
        items = np.asarray(items, np.int64).astype(np.uint64)
        key = np.zeros(1, np.uint64)
        for part in (self.seed, self.n_items, self.width, 23):  # the shape's own key
            key = splitmix64(key ^ np.uint64(part % 2**64) + GOLDEN)
        rows = np.arange(self.depth, dtype=np.uint64)[:, None]
        h = splitmix64(splitmix64(items[None, :] + key) + rows * GOLDEN)
        bucket = (h % np.uint64(self.width)).astype(np.int64)
        bucket += (np.arange(self.depth) * self.width)[:, None]
        sign = ((h >> np.uint64(63)).astype(np.int64) * 2 - 1).astype(np.float64)
        return bucket, sign

    def encode(self, items: np.ndarray, values: np.ndarray, clip: float) -> np.ndarray:
        """The sketch of ``values`` at ``items`` (items outside the catalogue left out),
        scaled so that its L2 norm is at most ``clip``."""
        items = np.asarray(items, np.int64)
        keep = (items >= 0) & (items < self.n_items)
        items, values = items[keep], np.asarray(values, np.float64)[keep]
        bucket, sign = self.hashes(items)
        out = np.bincount(bucket.ravel(), weights=(sign * values[None, :]).ravel(),
                          minlength=self.dim)
        norm = float(np.linalg.norm(out))
        return out * (clip / norm) if norm > clip else out

    def estimate(self, total: np.ndarray) -> np.ndarray:
        """Every item's count read from a (summed) sketch: the median over rows of its
        signed buckets."""
        total = np.asarray(total, np.float64)
        if total.shape != (self.dim,):
            raise ValueError(f"a sketch of {self.dim} values; found shape {total.shape}")
        bucket, sign = self.hashes(np.arange(self.n_items))
        return np.median(total[bucket] * sign, axis=0)
