"""Folding devices' sparse item updates into one step, as pure functions.

Each item's update is the weighted mean over the devices that touched it. Weighting options
(:mod:`fedrec.common.weighting`), against imbalance: ``uniform`` (every device counts once)
and ``capped`` (by the number of the device's examples on that item, at most ``cap``). ``sum`` adds
the devices' updates instead of averaging them: in a stream, each is a run of online SGD
steps, and applied in full they compose as the steps of one learner would. Except on a
round's public negative pool (:func:`~fedrec.common.negatives.negative_pool`), whose rows
the strategy folds by their mean (:meth:`Aggregate.averaged`): every device's negatives of
the round land on those few rows, each step taken against the same stale row, and summed
they pile up into one step many times an online learner's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedrec.common.schema import ItemUpdate
from fedrec.common.weighting import WEIGHTINGS, check_weighting, weights

__all__ = ["WEIGHTINGS", "Accumulator", "Aggregate", "aggregate", "weights"]


@dataclass(frozen=True)
class Aggregate:
    """Per-item weighted means of the accepted updates of one round."""

    ids: np.ndarray  # (m,) sorted unique item ids
    rows: np.ndarray  # (m, k)
    bias: np.ndarray  # (m,)
    weight: np.ndarray  # (m,) total weight behind each row
    devices: np.ndarray  # (m,) how many devices touched each row

    def averaged(self, ids: np.ndarray) -> Aggregate:
        """This aggregate with the rows of ``ids`` divided by the number of devices that
        moved each (a ``sum`` fold's rows made means; the others left as they are)."""
        on = np.isin(self.ids, ids)
        scale = np.where(on, 1.0 / np.maximum(self.devices, 1.0), 1.0)
        return Aggregate(self.ids, self.rows * scale[:, None], self.bias * scale, self.weight,
                         self.devices)

    def without(self, ids: np.ndarray) -> Aggregate:
        """This aggregate less the rows of ``ids``."""
        keep = ~np.isin(self.ids, ids)
        return Aggregate(self.ids[keep], self.rows[keep], self.bias[keep], self.weight[keep],
                         self.devices[keep])


class Accumulator:
    """Running per-item weighted sums: each accepted update is folded in as it arrives, so a
    round holds one dense table of sums, not every device's rows.

    A device's ids are unique, so one scatter-add per update is exact (no row repeats
    within it).
    """

    def __init__(self, n_items: int, n_factors: int, weighting: str = "uniform",
                 cap: float = 10.0) -> None:
        self.weighting, self.cap = check_weighting(weighting), cap
        self.rows = np.zeros((n_items, n_factors), dtype=np.float64)
        self.bias = np.zeros(n_items, dtype=np.float64)
        self.weight = np.zeros(n_items, dtype=np.float64)
        self.devices = np.zeros(n_items, dtype=np.int64)

    def add(self, update: ItemUpdate) -> None:
        ids = update.ids
        if self.weighting in ("uniform", "sum"):  # the common case: no multiply
            self.rows[ids] += update.rows
            self.bias[ids] += update.bias
            self.weight[ids] += 1.0
        else:
            w = weights(update, self.weighting, self.cap)
            self.rows[ids] += update.rows * w[:, None]
            self.bias[ids] += update.bias * w
            self.weight[ids] += w
        self.devices[ids] += 1

    def result(self) -> Aggregate:
        ids = np.flatnonzero(self.devices)
        wsum = self.weight[ids]
        if self.weighting == "sum":  # every device's update in full, not averaged
            return Aggregate(ids, self.rows[ids], self.bias[ids], wsum,
                             self.devices[ids].astype(np.float64))
        return Aggregate(ids, self.rows[ids] / wsum[:, None], self.bias[ids] / wsum, wsum,
                         self.devices[ids].astype(np.float64))


def aggregate(updates: Sequence[ItemUpdate], weighting: str = "uniform",
              cap: float = 10.0) -> Aggregate:
    """Per-item weighted mean of ``updates``."""
    if not updates:
        return Aggregate(np.empty(0, np.int64), np.empty((0, 0)), np.empty(0), np.empty(0),
                         np.empty(0))
    n_items = max((int(u.ids.max()) + 1 for u in updates if len(u.ids)), default=0)
    acc = Accumulator(n_items, updates[0].rows.shape[1], weighting, cap)
    for update in updates:
        acc.add(update)
    return acc.result()
