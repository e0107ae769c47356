"""PipAttack (Zhang et al., WSDM 2022): make the target look like the popular items, by
pulling its row towards their rows and its bias towards theirs.

Knows: a public 1 % of the interactions (which items are popular), the table it is sent
and the norm bound.
"""

from __future__ import annotations

import numpy as np

from fedrec.common.schema import ItemUpdate
from fedrec.simulations.attacks.base import Attack, Request, merge, movement_update


class PipAttack(Attack):
    name = "pipattack"
    knows = "a public 1 % of the interactions (popularity), the table it is sent, the bound"

    def craft(self, request: Request, device: int) -> tuple[ItemUpdate, dict[str, float]]:
        update, metrics = self.honest(request, device)
        t, popular = self.k.target, self.k.popular()
        towards = request.factors[popular].mean(axis=0) - request.factors[t]
        lift = max(0.5, float(request.bias[popular].mean() - request.bias[t]))
        crafted = movement_update(np.array([t]), towards[None, :], np.array([lift]),
                                  self.k.max_norm)
        return merge(update, crafted), metrics
