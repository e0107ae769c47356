"""Folding devices' sparse item updates into one step, as pure functions.

Each item's update is the weighted mean over the devices that touched it. Weighting options,
against imbalance: ``uniform`` (every device counts once), ``count`` (by the number of the
device's examples on that item) and ``capped`` (count, but at most ``cap``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedrec.common.optim import sum_rows
from fedrec.common.schema import ItemUpdate

WEIGHTINGS = ("uniform", "count", "capped")


@dataclass(frozen=True)
class Aggregate:
    """Per-item weighted means of the accepted updates of one round."""

    ids: np.ndarray  # (m,) sorted unique item ids
    rows: np.ndarray  # (m, k)
    bias: np.ndarray  # (m,)
    weight: np.ndarray  # (m,) total weight behind each row
    devices: np.ndarray  # (m,) how many devices touched each row


def weights(update: ItemUpdate, weighting: str, cap: float = 10.0) -> np.ndarray:
    """The weight of each row of one device's update."""
    if weighting == "uniform":
        return np.ones(len(update.ids), dtype=np.float64)
    if weighting == "count":
        return update.counts.astype(np.float64)
    if weighting == "capped":
        return np.minimum(update.counts.astype(np.float64), cap)
    raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}. Found {weighting!r}.")


def aggregate(updates: Sequence[ItemUpdate], weighting: str = "uniform",
              cap: float = 10.0) -> Aggregate:
    """Per-item weighted mean of ``updates`` (vectorised over all devices' rows at once)."""
    if not updates:
        k = 0
        return Aggregate(np.empty(0, np.int64), np.empty((0, k)), np.empty(0), np.empty(0),
                         np.empty(0))
    ids = np.concatenate([u.ids for u in updates])
    w = np.concatenate([weights(u, weighting, cap) for u in updates])
    k = updates[0].rows.shape[1]
    # One table [w·rows | w·bias | w | 1] so a single sort sums everything per item.
    table = np.empty((len(ids), k + 3), dtype=np.float64)
    table[:, :k] = np.concatenate([u.rows for u in updates])
    table[:, k] = np.concatenate([u.bias for u in updates])
    table[:, : k + 1] *= w[:, None]
    table[:, k + 1] = w
    table[:, k + 2] = 1.0
    uniq, sums = sum_rows(ids, table)
    wsum = sums[:, k + 1]
    return Aggregate(uniq, sums[:, :k] / wsum[:, None], sums[:, k] / wsum, wsum, sums[:, k + 2])
