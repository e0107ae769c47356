"""``copies``: the pairs model's defence (:mod:`fedrec.common.pairs`): devices whose item
sets are near copies of each other are set aside, and their counts taken back out.

A push on the pairs model has colluding devices claim the target with the items most
customers take, so that the target becomes their neighbour in everyone's scores; the
cheapest such push sends one set from every device. Honest customers' sets are rarely near
copies: among the sets of at least ``min_size`` items, no honest device had two others at
Jaccard similarity ``tau`` (0.8) or more, on twenty generated 2,000-event shops or on
ML-100K's 943 users (README, *Item pairs*). So where a device's set has at least
``group - 1`` others that close, that group's devices are set aside. The table is a sum of
sets, so a device set aside later has its pairs subtracted exactly, and its later counts
are refused.

What it does not do: colluders who make their sets differ (each adding other items, or
each taking another few of the popular items) are no longer copies, and still push; that is
measured in the README beside this.

Vectorised: the sets as a 0/1 matrix, intersections by matrix product in blocks of
``block`` devices (memory ``block × devices`` float32).
"""

from __future__ import annotations

import numpy as np


class Copies:
    name = "copies"

    def __init__(self, tau: float = 0.8, group: int = 3, min_size: int = 3,
                 block: int = 1024) -> None:
        if not 0 < tau <= 1 or group < 2 or min_size < 1 or block < 1:
            raise ValueError(f"copies needs tau in (0, 1], group >= 2, min_size >= 1. "
                             f"Found {tau}, {group}, {min_size}.")
        self.tau, self.group, self.min_size, self.block = tau, group, min_size, block

    def copies(self, sets: list[np.ndarray], n_items: int) -> np.ndarray:
        """Indices (into ``sets``) of the devices with at least ``group - 1`` others whose
        set is at Jaccard similarity ``tau`` or more, and those others (sets smaller than
        ``min_size`` are never compared)."""
        sizes = np.array([len(s) for s in sets], np.int64)
        big = np.flatnonzero(sizes >= self.min_size)
        if len(big) < self.group:
            return np.empty(0, np.int64)
        x = np.zeros((len(big), n_items), np.float32)
        rows = np.repeat(np.arange(len(big)), sizes[big])
        x[rows, np.concatenate([sets[i] for i in big])] = 1.0
        size = sizes[big].astype(np.float32)
        flagged = np.zeros(len(big), bool)
        for start in range(0, len(big), self.block):
            part = slice(start, start + self.block)
            inter = x[part] @ x.T
            union = size[part, None] + size[None, :] - inter
            close = inter >= self.tau * union  # (no division)
            close[np.arange(close.shape[0]), np.arange(start, start + close.shape[0])] = False
            many = close.sum(axis=1) >= self.group - 1
            flagged[start:start + close.shape[0]] |= many
            if many.any():
                flagged |= close[many].any(axis=0)
        return big[flagged]
