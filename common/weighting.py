"""How much each row of a device's update counts when rows from several devices meet.

``uniform`` (every device counts once), ``count`` (by the number of the device's examples on
that item), ``capped`` (count, but at most ``cap``), ``sum`` (devices' updates added, not
averaged). The server's fold (:mod:`fedrec.server.aggregate`) and the dense vector a device
hands to secure aggregation (:mod:`fedrec.common.secagg`) both weigh rows with this.
"""

from __future__ import annotations

import numpy as np

from fedrec.common.schema import ItemUpdate

WEIGHTINGS = ("uniform", "count", "capped", "sum")


def weights(update: ItemUpdate, weighting: str, cap: float = 10.0) -> np.ndarray:
    """The weight of each row of one device's update."""
    if weighting in ("uniform", "sum"):
        return np.ones(len(update.ids), dtype=np.float64)
    if weighting == "count":
        return update.counts.astype(np.float64)
    if weighting == "capped":
        return np.minimum(update.counts.astype(np.float64), cap)
    raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}. Found {weighting!r}.")
