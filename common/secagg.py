"""The dense vector a device hands to secure aggregation, and what its sum tells the server.

SecAgg+ (Flower's ``SecAggPlusWorkflow`` and ``secaggplus_mod``) sums vectors of one shape
from every device of a round and reveals only the sum. A sparse update is densified over the
whole catalogue: the weighted rows and biases (zero where the device has no row), the
weights, a 0/1 touched mask, and two scaled statistics (the sum and count of the ratings
the device trained on, from which the server keeps the global mean μ without seeing any
device's own). From the sum the server recovers exactly what the plain fold would compute:
per-item weighted means (``Σ w·row / Σ w``), how many devices touched each item, and μ.

Values must lie within SecAgg+'s clipping range: rows are pseudo-gradients (small), weights
are scaled into [0, 1] (``capped``: divided by the cap).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedrec.common.schema import ItemUpdate
from fedrec.common.weighting import check_weighting, weights

STAT_SCALE = 2.0 ** 14  # rating sums and counts are sent divided by this (within ±8)
TOUCHED_MIN = 0.5  # a summed touched mask above this names an item (the mask is 0/1)


@dataclass(frozen=True)
class DenseSum:
    """What the server reads from the sum of a round's dense vectors."""

    ids: np.ndarray  # items some device touched
    rows: np.ndarray  # their weighted mean update (``sum`` weighting: the sum)
    bias: np.ndarray
    weight: np.ndarray  # total weight behind each row
    devices: np.ndarray  # how many devices touched each row
    rating_sum: float
    rating_count: float


def densify(update: ItemUpdate, n_items: int, weighting: str = "uniform", cap: float = 10.0,
            rating_sum: float = 0.0, rating_count: float = 0.0) -> list[np.ndarray]:
    """The device's vector: ``[w·rows (n×k), w·bias (n), w (n), touched (n), stats (2)]``."""
    check_weighting(weighting)
    w = weights(update, weighting, cap)
    if weighting == "capped":
        w = w / cap
    k = update.rows.shape[1] if update.rows.ndim == 2 else 0
    rows = np.zeros((n_items, k), dtype=np.float32)
    bias = np.zeros(n_items, dtype=np.float32)
    weight = np.zeros(n_items, dtype=np.float32)
    touched = np.zeros(n_items, dtype=np.float32)
    rows[update.ids] = update.rows * w[:, None]
    bias[update.ids] = update.bias * w
    weight[update.ids] = w
    touched[update.ids] = 1.0
    stats = np.array([rating_sum, rating_count], dtype=np.float32) / STAT_SCALE
    return [rows, bias, weight, touched, stats]


def read_sum(arrays: list[np.ndarray], weighting: str = "uniform") -> DenseSum:
    """The round's update from the element-wise *sum* of every device's :func:`densify`."""
    if len(arrays) != 5:
        raise ValueError(f"a secure sum has 5 arrays; found {len(arrays)}")
    rows, bias, weight, touched, stats = (np.asarray(a, dtype=np.float64) for a in arrays)
    ids = np.flatnonzero(touched > TOUCHED_MIN)
    w = weight[ids]
    if weighting == "sum":
        out_rows, out_bias = rows[ids], bias[ids]
    else:
        safe = np.where(w > 0, w, 1.0)
        out_rows, out_bias = rows[ids] / safe[:, None], bias[ids] / safe
    return DenseSum(ids, out_rows, out_bias, w, np.rint(touched[ids]),
                    float(stats[0] * STAT_SCALE), float(stats[1] * STAT_SCALE))
