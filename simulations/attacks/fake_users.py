"""Fake users: devices that train honestly, with fedrec's own device code, on crafted
histories that hold the target. Nothing they send is out of the ordinary: only what they
claim to have done is invented.

* ``fake-random``: the target and random items;
* ``fake-bandwagon``: the target and the most popular items (public interactions);
* ``fake-target``: the target and the items the public interactions put beside it most
  (items of the public users who have it), so its row moves into a real neighbourhood.

Knows: a public 1 % of the interactions (bandwagon and target histories).
"""

from __future__ import annotations

import numpy as np

from fedrec.simulations.attacks.base import Attack


class FakeRandom(Attack):
    name = "fake-random"
    knows = "the catalogue size"


class FakeBandwagon(Attack):
    name = "fake-bandwagon"
    knows = "a public 1 % of the interactions (popularity)"

    def history(self, device: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, 13, device])
        popular = self.k.popular(0.1)
        pick = rng.choice(popular, min(len(popular), self.k.history - 1), replace=False)
        return self._rated(np.append(pick, self.k.target))


class FakeTarget(Attack):
    name = "fake-target"
    knows = "a public 1 % of the interactions (what sits beside the target)"

    def history(self, device: int) -> tuple[np.ndarray, np.ndarray]:
        k = self.k
        beside = k.public_items[np.isin(k.public_users,
                                        k.public_users[k.public_items == k.target])]
        counts = np.bincount(beside, minlength=k.n_items).astype(np.float64)
        counts[k.target] = 0
        if counts.sum() == 0:  # no public user has the target: its popular neighbours
            counts = k.popularity.astype(np.float64)
            counts[k.target] = 0
        rng = np.random.default_rng([self.seed, 13, device])
        n = min(int((counts > 0).sum()), k.history - 1)
        pick = rng.choice(k.n_items, n, replace=False, p=counts / counts.sum())
        return self._rated(np.append(pick, k.target))
