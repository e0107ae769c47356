"""The recent devices a learned bound takes its median over (``clip``, ``budget``).

A round of a stream has a handful of devices: a median over one round alone lets five
devices present in every round be its majority (``fedrec bench stream --freezers 5``). So
a learned bound is the median over this round's devices and the most recent others, up
to ``window`` distinct devices, each by its latest value, when the server says which node
sent each update. A round larger than the window is taken over itself. The window is in
the checkpoint, so a restarted server keeps it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

WINDOW = 200  # distinct devices a median is taken over, when a round has fewer
MAX_WINDOW = 10_000  # the largest window (what a checkpoint may hold)


class RecentMedian:
    """Each recent node's latest value, oldest first; :meth:`median` takes a round's."""

    def __init__(self, window: int = WINDOW) -> None:
        if isinstance(window, bool) or not isinstance(window, int) \
                or not 1 <= window <= MAX_WINDOW:
            raise ValueError(f"window must be a whole number in [1, {MAX_WINDOW}]. "
                             f"Found {window!r}.")
        self.window = window
        self.values: OrderedDict[int, float] = OrderedDict()  # node -> its latest value

    def median(self, values: Sequence[float | None], nodes: Sequence[int] | None
               ) -> float | None:
        """The median of this round's ``values`` (one per update; None: the update sent no
        row, and does not count) with the window's; the round's enter the window
        (``nodes``: who sent each update; None: unknown, the round's median alone, the
        window unchanged). None when no update of the round has a value."""
        if nodes is not None and len(nodes) != len(values):
            raise ValueError(f"{len(nodes)} nodes for {len(values)} updates")
        sent = [i for i, v in enumerate(values) if v is not None]
        if not sent:
            return None
        if nodes is None:
            return float(np.median([values[i] for i in sent]))
        # This round's devices enter by their value, not by arrival: which of them a full
        # window drops first must not depend on the order replies arrived in (Ray's
        # differs from the in-process engine's; equal values drop alike).
        for node, value in sorted(((nodes[i], float(values[i])) for i in sent),
                                  key=lambda e: e[1]):
            self.values[node] = value
            self.values.move_to_end(node)
        while len(self.values) > max(self.window, len(sent)):  # (this round's: newest)
            self.values.popitem(last=False)
        return float(np.median(list(self.values.values())))

    def state(self) -> list[list]:
        """The newest ``window`` entries as [node, value] pairs, oldest first (a round
        larger than the window is taken over itself: older entries would not count)."""
        return [[int(node), value] for node, value in list(self.values.items())[-self.window:]]

    def load(self, entries: Sequence[Sequence]) -> None:
        """Restore :meth:`state` (entries checked by the checkpoint's loader)."""
        self.values = OrderedDict((int(node), float(value)) for node, value in entries)
