"""How much each row of a device's update counts when rows from several devices meet.

``uniform`` (every device counts once), ``capped`` (by the number of the device's examples
on that item, but at most ``cap``), ``sum`` (devices' updates added, not averaged). The
server's fold (:mod:`fedrec.server.aggregate`) and the dense vector a device hands to secure
aggregation (:mod:`fedrec.common.secagg`) both weigh rows with this.

Every weighting bounds one device's weight on a row (1, or ``cap``): the counts a device
claims are its own word, so an uncapped ``count`` weighting would let one reply outweigh
every other device on each row it names. It was removed for that reason.
"""

from __future__ import annotations

import numpy as np

from fedrec.common.schema import ItemUpdate

WEIGHTINGS = ("uniform", "capped", "sum")
REMOVED = {"count": "one device's claimed counts would outweigh every other device on a "
                    "row; use 'capped' (the count, at most cap)"}


def weights(update: ItemUpdate, weighting: str, cap: float = 10.0) -> np.ndarray:
    """The weight of each row of one device's update."""
    if weighting in ("uniform", "sum"):
        return np.ones(len(update.ids), dtype=np.float64)
    if weighting == "capped":
        return np.minimum(update.counts.astype(np.float64), cap)
    raise ValueError(weighting_error(weighting))


def weighting_error(weighting: str) -> str:
    """Why ``weighting`` is refused, naming the ones there are."""
    why = f" ({REMOVED[weighting]})" if weighting in REMOVED else ""
    return f"weighting must be one of {', '.join(WEIGHTINGS)}. Found {weighting!r}{why}."


def check_weighting(weighting: str) -> str:
    """``weighting`` if it is one; raises ValueError naming the choices otherwise."""
    if weighting not in WEIGHTINGS:
        raise ValueError(weighting_error(weighting))
    return weighting
