"""``budget``: a bound on how far one reply may move the table as a whole, learned from
devices' replies.

``clip`` bounds each row a reply moves, not how many: a reply moving every row of the
table at that bound passed it whole. One such device in every round (``fedrec bench
stream --freezers 1 --freeze-norm 1``) cost the ML-100K implicit stream a fifth of its
hits, and took the ratings stream's RMSE after warm-up from 0.93 to 2.02 (its rounds hold
about four devices, and the Count rule steps a row a few devices have moved at several
times their move). An honest device's moves are few and uneven: most of a reply's squared
length is in its few positive rows, the rest spread thinly over its sampled negatives (on
the implicit stream a reply's squared length is about 5 of its longest row's squares at
the median, 84 at the 99th percentile, against 1,682 for a reply moving every row at the
bound).

A reply's *energy* is the sum of its rows' squared norms (factors and bias together). The
budget is ``factor`` × the median energy over this round's devices and recent others (the
window :mod:`~fedrec.server.defences.window`, as ``clip`` takes its median over); a reply
above it is scaled down whole, every row alike (its directions kept), to the budget. A
minority cannot move a median, so no reply moves the table further than ``factor``
ordinary devices' replies do together, however it spreads its moves. Run after ``clip``,
it measures the rows clip left. The window is in the checkpoint (``budget-recent``).
"""

from __future__ import annotations

import numpy as np

from fedrec.common.schema import ItemUpdate
from fedrec.server.defences.base import Defence, scaled
from fedrec.server.defences.clip import row_norms
from fedrec.server.defences.window import WINDOW, RecentMedian

# The budget, in median replies' energy. Chosen on the streams the stream presets are tuned
# on (2026-12-07; `fedrec bench stream --models federated-incremental`, ML-100K's 20 %
# prefix `--prefix 0.2` and `--dataset synthetic:seed=7`, each kind, with and without one
# freezer at `--freeze-norm 1`): the smallest factor tried whose honest figure after
# warm-up stays within 0.5 % of the run without it on every stream. Honest, then with the
# freezer (RMSE on ratings, HR@10 on implicit; prefix explicit / prefix implicit / shop 7
# explicit / shop 7 implicit):
#   without budget   0.9479, 1.7001 / 0.1624, 0.1216 / 0.7339, 0.7588 / 0.1587, 0.1383
#   factor 20        0.9478, 1.0023 / 0.1624, 0.1434 / 0.7339, 0.7324 / 0.1587, 0.1582
#   factor 10        0.9477, 0.9725 / 0.1626, 0.1502 / 0.7339, 0.7323 / 0.1586, 0.1581
#   factor 5         0.9479, 0.9590 / 0.1619, 0.1545 / 0.7338, 0.7322 / 0.1586, 0.1578
FACTOR = 5.0
STATE = "budget-recent"  # its checkpoint entry: [node, energy], oldest first


def energy(update: ItemUpdate) -> float:
    """The sum of the update's squared row norms, factors and bias together."""
    return float((row_norms(update) ** 2).sum())


class Budget(Defence):
    name = "budget"

    def __init__(self, factor: float = FACTOR, window: int = WINDOW) -> None:
        super().__init__()
        if isinstance(factor, bool) or not isinstance(factor, int | float) \
                or not (np.isfinite(factor) and factor >= 1):
            raise ValueError(f"budget factor must be a number >= 1. Found {factor!r}.")
        self.factor = float(factor)
        self.recent = RecentMedian(window)  # node -> its latest reply's energy

    def screen(self, updates: list[ItemUpdate], factors: np.ndarray | None = None,
               nodes: list[int] | None = None) -> list[ItemUpdate | None]:
        energies = [energy(u) for u in updates]
        median = self.recent.median([e if len(u.ids) else None
                                     for u, e in zip(updates, energies, strict=True)], nodes)
        self.last = {"bound": 0.0 if median is None else self.factor * median,
                     "replies": 0.0}
        if median is None:
            return list(updates)
        bound = self.factor * median
        out: list[ItemUpdate | None] = []
        for u, e in zip(updates, energies, strict=True):
            if not e > bound:
                out.append(u)
                continue
            self.last["replies"] += 1.0
            out.append(scaled(u, np.sqrt(bound / e)))
        return out

    def state(self) -> dict:
        return {STATE: self.recent.state()}

    def load(self, run: dict) -> None:
        self.recent.load(run.get(STATE, []))
