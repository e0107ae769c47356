"""Quantity perturbation: train honestly on a history that holds the target, then claim
enormous counts on every row (and the most examples the schema allows), so that a server
weighing devices by what they claim gives this device the round.

Knows: the reply schema's bounds (public).
"""

from __future__ import annotations

import numpy as np

from fedrec.common.replies import MAX_EVENTS
from fedrec.common.schema import ItemUpdate
from fedrec.simulations.attacks.base import Request
from fedrec.simulations.attacks.fake_users import FakeTarget


class Quantity(FakeTarget):
    name = "quantity"
    knows = "the reply schema's bounds, a public 1 % of the interactions"

    def craft(self, request: Request, device: int) -> tuple[ItemUpdate, dict[str, float]]:
        update, metrics = self.honest(request, device)
        inflated = ItemUpdate(update.ids, update.rows, update.bias,
                              np.full(len(update.ids), 1e6, dtype=np.float32))
        return inflated, {**metrics, "num-examples": float(MAX_EVENTS)}
