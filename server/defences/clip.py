"""``clip``: a per-row norm bound learned from devices' replies, in place of a fixed one.

The bound is ``factor`` × the median, over devices, of each device's longest row (factors
and bias together); every row longer than that is shortened to it (its direction kept). A
minority of devices cannot move a median, so whatever they send, no row of theirs counts
for more than an ordinary device's longest row; the fixed published bound (``max-norm``,
default 10) stays as the hard limit a reply must pass at all.

The median is over this round's devices and, when the server says which node sent each
update, the most recent others up to :data:`WINDOW` distinct devices, each by its latest
reply. A round of a stream has a handful of devices: taken over one round alone, five
devices present in every round were the majority of every round, and their tiny rows set
a bound that cut every honest row to nothing (``fedrec bench stream --freezers 5``). The
window is in the checkpoint (``clip-recent``), so a restarted server keeps it.
"""

from __future__ import annotations

import numpy as np

from fedrec.common.schema import ItemUpdate
from fedrec.server.defences.base import Defence, scaled
from fedrec.server.defences.window import WINDOW, RecentMedian


def row_norms(update: ItemUpdate) -> np.ndarray:
    """Each row's L2 norm, factors and bias together (as the server's check measures it)."""
    rows = update.rows.astype(np.float64)
    bias = update.bias.astype(np.float64)
    return np.sqrt(np.einsum("ij,ij->i", rows, rows) + bias * bias)


def learned_bound(updates: list[ItemUpdate], factor: float = 1.0) -> float | None:
    """``factor`` × the median of the devices' longest rows (None: no device sent a row)."""
    longest = [float(row_norms(u).max()) for u in updates if len(u.ids)]
    return factor * float(np.median(longest)) if longest else None


STATE = "clip-recent"  # its checkpoint entry: [node, longest row], oldest first


class LearnedClip(Defence):
    name = "clip"

    def __init__(self, factor: float = 1.0, window: int = WINDOW) -> None:
        super().__init__()
        if not factor > 0:
            raise ValueError(f"clip factor must be > 0. Found {factor}.")
        self.factor = factor
        self.recent = RecentMedian(window)  # node -> its longest row

    def _bound(self, norms: list[np.ndarray], nodes: list[int] | None) -> float | None:
        """The bound from each update's row norms (and the window, given the nodes)."""
        median = self.recent.median([float(n.max()) if len(n) else None for n in norms],
                                    nodes)
        return None if median is None else self.factor * median

    def state(self) -> dict:
        return {STATE: self.recent.state()}

    def load(self, run: dict) -> None:
        self.recent.load(run.get(STATE, []))

    def screen(self, updates: list[ItemUpdate], factors: np.ndarray | None = None,
               nodes: list[int] | None = None) -> list[ItemUpdate | None]:
        all_norms = [row_norms(u) for u in updates]  # (once: for the bound and the cut)
        bound = self._bound(all_norms, nodes)
        self.last = {"bound": bound or 0.0, "rows": 0.0}
        if bound is None:
            return list(updates)
        out: list[ItemUpdate | None] = []
        for u, norms in zip(updates, all_norms, strict=True):
            long = norms > bound
            if not long.any():
                out.append(u)
                continue
            self.last["rows"] += float(long.sum())
            out.append(scaled(u, np.where(long, bound / np.maximum(norms, 1e-30), 1.0)))
        return out
