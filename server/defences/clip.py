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

from collections import OrderedDict

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


WINDOW = 200  # distinct devices the median is taken over, when a round has fewer
MAX_WINDOW = 10_000  # the largest window (what a checkpoint may hold)
STATE = "clip-recent"  # its checkpoint entry: [node, longest row], oldest first


class LearnedClip(Defence):
    name = "clip"

    def __init__(self, factor: float = 1.0, window: int = WINDOW) -> None:
        super().__init__()
        if not factor > 0:
            raise ValueError(f"clip factor must be > 0. Found {factor}.")
        if not 1 <= window <= MAX_WINDOW:
            raise ValueError(f"clip window must be in [1, {MAX_WINDOW}]. Found {window}.")
        self.factor, self.window = factor, window
        self.recent: OrderedDict[int, float] = OrderedDict()  # node -> its longest row

    def _bound(self, norms: list[np.ndarray], nodes: list[int] | None) -> float | None:
        """The bound from each update's row norms (and the window, given the nodes)."""
        longest = [(i, float(n.max())) for i, n in enumerate(norms) if len(n)]
        if not longest:
            return None
        if nodes is None:
            return self.factor * float(np.median([v for _, v in longest]))
        if len(nodes) != len(norms):
            raise ValueError(f"{len(nodes)} nodes for {len(norms)} updates")
        # This round's devices enter by their longest row, not by arrival: which of them a
        # full window drops first must not depend on the order replies arrived in (Ray's
        # differs from the in-process engine's; equal values drop alike).
        for i, value in sorted(longest, key=lambda entry: entry[1]):
            self.recent[nodes[i]] = value
            self.recent.move_to_end(nodes[i])
        while len(self.recent) > max(self.window, len(longest)):  # (this round's: newest)
            self.recent.popitem(last=False)
        return self.factor * float(np.median(list(self.recent.values())))

    def state(self) -> dict:
        """The window's newest ``window`` devices (a round larger than the window is
        clipped over itself: older entries would not count)."""
        kept = list(self.recent.items())[-self.window:]
        return {STATE: [[int(node), longest] for node, longest in kept]}

    def load(self, run: dict) -> None:
        self.recent = OrderedDict((int(node), float(longest))
                                  for node, longest in run.get(STATE, []))

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
            scale = np.where(long, bound / np.maximum(norms, 1e-30), 1.0)
            out.append(ItemUpdate(u.ids, (u.rows * scale[:, None]).astype(np.float32),
                                  (u.bias * scale).astype(np.float32), u.counts))
        return out
