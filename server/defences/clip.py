"""``clip``: a per-row norm bound learned from each round's replies, in place of a fixed one.

The bound is ``factor`` × the median, over the round's devices, of each device's longest
row (factors and bias together); every row longer than that is shortened to it (its
direction kept). A minority of devices cannot move a median, so whatever they send, no
row of theirs counts for more than an ordinary device's longest row; the fixed published
bound (``max-norm``, default 10) stays as the hard limit a reply must pass at all.
"""

from __future__ import annotations

import numpy as np

from fedrec.common.schema import ItemUpdate
from fedrec.server.defences.base import Defence


def row_norms(update: ItemUpdate) -> np.ndarray:
    """Each row's L2 norm, factors and bias together (as the server's check measures it)."""
    rows = update.rows.astype(np.float64)
    bias = update.bias.astype(np.float64)
    return np.sqrt(np.einsum("ij,ij->i", rows, rows) + bias * bias)


def learned_bound(updates: list[ItemUpdate], factor: float = 1.0) -> float | None:
    """``factor`` × the median of the devices' longest rows (None: no device sent a row)."""
    longest = [float(row_norms(u).max()) for u in updates if len(u.ids)]
    return factor * float(np.median(longest)) if longest else None


class LearnedClip(Defence):
    name = "clip"

    def __init__(self, factor: float = 1.0) -> None:
        super().__init__()
        if not factor > 0:
            raise ValueError(f"clip factor must be > 0. Found {factor}.")
        self.factor = factor

    def screen(self, updates: list[ItemUpdate], factors: np.ndarray | None = None
               ) -> list[ItemUpdate | None]:
        bound = learned_bound(updates, self.factor)
        self.last = {"bound": bound or 0.0, "rows": 0.0}
        if bound is None:
            return list(updates)
        out: list[ItemUpdate | None] = []
        for u in updates:
            norms = row_norms(u)
            long = norms > bound
            if not long.any():
                out.append(u)
                continue
            self.last["rows"] += float(long.sum())
            scale = np.where(long, bound / np.maximum(norms, 1e-30), 1.0)
            out.append(ItemUpdate(u.ids, (u.rows * scale[:, None]).astype(np.float32),
                                  (u.bias * scale).astype(np.float32), u.counts))
        return out
