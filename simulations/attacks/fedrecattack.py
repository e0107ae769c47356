"""FedRecAttack (Rong et al., ICDE 2022): approximate users' vectors from a public share of
the interactions, then send the target's row the gradient that raises its score for them
most, scaled to the server's bound, beside honest-looking rows.

Knows: a public 1 % of the training interactions, the table it is sent, the server's norm
bound.

Each public user's vector is fitted against the table it is sent (ridge least squares of
its public items against as many random items, the table's rows as features); the crafted
movement is the gradient of ``Σ_u log σ(p̂_u·q_t + b_t)`` with respect to ``(q_t, b_t)``
(ratings: of ``−Σ_u (r_max − r̂_ut)²``).
"""

from __future__ import annotations

import numpy as np

from fedrec.common.schema import ItemUpdate
from fedrec.simulations.attacks.base import Attack, Request, merge, movement_update


class FedRecAttack(Attack):
    name = "fedrecattack"
    knows = "a public 1 % of the interactions, the table it is sent and the norm bound"

    def users_of(self, request: Request) -> np.ndarray:
        """Approximated vectors of the public users, fitted against this round's table."""
        q = request.factors.astype(np.float64)
        users, items = self.k.public_users, self.k.public_items
        uniq, inverse = np.unique(users, return_inverse=True)
        rng = np.random.default_rng([self.seed, 5, request.server_round])
        neg = rng.integers(0, self.k.n_items, len(items))
        # Per user: ridge fit of y (1 for public items, 0 for random ones) − bias on rows.
        k = q.shape[1]
        gram = np.zeros((len(uniq), k, k))
        rhs = np.zeros((len(uniq), k))
        for its, y in ((items, 1.0), (neg, 0.0)):
            rows = q[its]
            np.add.at(gram, inverse, rows[:, :, None] * rows[:, None, :])
            np.add.at(rhs, inverse, rows * y)
        gram += np.eye(k)[None] * 0.1
        return np.linalg.solve(gram, rhs[:, :, None])[:, :, 0]

    def craft(self, request: Request, device: int) -> tuple[ItemUpdate, dict[str, float]]:
        update, metrics = self.honest(request, device)
        t = self.k.target
        p = self.users_of(request)
        q_t, b_t = request.factors[t].astype(np.float64), float(request.bias[t])
        score = p @ q_t + b_t
        if self.k.explicit:
            weight = self.k.rating_range[1] - (request.mean + score)
        else:
            weight = 1.0 - 1.0 / (1.0 + np.exp(-score))
        towards = (weight[:, None] * p).sum(axis=0)
        crafted = movement_update(np.array([t]), towards[None, :],
                                  np.array([float(weight.sum())]), self.k.max_norm)
        return merge(update, crafted), metrics
