"""An untargeted attack: degrade everyone's recommendations within the bounds. Each device
names the popular items (by the table's biases) and moves them against their own rows and
down, and names random items and moves them up, each row at the server's norm bound.

Knows: the table it is sent and the norm bound.
"""

from __future__ import annotations

import numpy as np

from fedrec.common.schema import ItemUpdate
from fedrec.simulations.attacks.base import Attack, Request, movement_update


class Untargeted(Attack):
    name = "untargeted"
    knows = "the table it is sent and the norm bound"
    targeted = False

    def craft(self, request: Request, device: int) -> tuple[ItemUpdate, dict[str, float]]:
        _, metrics = self.honest(request, device)
        n = len(request.bias)
        popular = np.argsort(-request.bias, kind="stable")[:max(10, n // 20)]
        rng = self.rng(device, request.server_round)
        junk = rng.choice(np.setdiff1d(np.arange(n), popular), len(popular), replace=False)
        ids = np.concatenate([popular, junk])
        rows = np.concatenate([-request.factors[popular], request.factors[popular].mean(
            axis=0)[None, :] - request.factors[junk]])
        bias = np.concatenate([-np.ones(len(popular)), np.ones(len(junk))])
        return movement_update(ids, rows, bias, self.k.max_norm), metrics
