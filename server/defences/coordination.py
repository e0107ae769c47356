"""``coordination``: devices whose rows on one item point the same way are set aside.

Honest devices' updates to an item's row follow their own user vectors; once the few
directions all users share are taken off (:meth:`Coordination.own_parts`), two of them
rarely point the same way (none in 40 rounds of ML-100K implicit, 943 devices, about
770,000 rows a round, not even a pair sharing a code in rounds 1-10; without taking them
off, 64 devices a round would be set aside).
Each row's remainder (its factors) is hashed to the signs of its
projections on ``bits`` random directions (fixed by the seed: SimHash, so rows with a
small angle between them share a code); where at least ``group`` devices' rows on the same
item share a code, those devices' whole replies are set aside this round and counted.
Vectorised: one projection of every row of the round, one ``unique`` over (item, code)
keys (about 0.5 s for ML-100K's 770,000 rows a round).

With fewer than ``min_factors`` (16) factors it does nothing: in so few dimensions honest
rows point alike too (a 4-factor shop's replies share codes).

What it does not do: an attacker who adds noise to each device's row no longer shares
codes. Little is enough where the crafted row lies along the item's own row (as a push on
the target's row does: the part left once that direction is taken off is about a tenth of
the row, so a 1° jitter becomes about 14° between what is compared). Those attacks are
measured in the bench (``push-noise``, ``push-jitter``) and bounded by ``clip``.
"""

from __future__ import annotations

import numpy as np

from fedrec.common.schema import ItemUpdate
from fedrec.server.defences.base import Defence


class Coordination(Defence):
    name = "coordination"

    def __init__(self, group: int = 4, bits: int = 62, common: int = 4,
                 sample: int = 20_000, min_factors: int = 16, seed: int = 0) -> None:
        super().__init__()
        self.common, self.sample, self.min_factors = common, sample, min_factors
        if group < 2 or not 1 <= bits <= 62:
            raise ValueError(f"coordination needs group >= 2 and bits in [1, 62]. Found "
                             f"{group} and {bits}.")
        self.group, self.bits, self.seed = group, bits, seed

    def codes(self, rows: np.ndarray) -> np.ndarray:
        """Each row's SimHash code (an int64 of ``bits`` signs)."""
        planes = np.random.default_rng([self.seed, 271]).standard_normal(
            (rows.shape[1], self.bits)).astype(np.float32)
        signs = (rows.astype(np.float32, copy=False) @ planes) > 0
        return signs.astype(np.int64) @ (np.int64(1) << np.arange(self.bits, dtype=np.int64))

    def own_parts(self, rows: np.ndarray, sent: np.ndarray | None = None) -> np.ndarray:
        """Each row's factors (as a unit vector) without the round's ``common`` main
        directions: honest users' vectors share a few directions (the popular taste), and
        along them honest rows point alike; what is left is each device's own part, which
        only copies share. The directions are the top singular vectors of (a sample of)
        the round's unit rows, where each row counts once, so a minority of devices cannot
        set them. (The bias is left out: it is one number, alike in every honest row.)
        With ``sent`` (the rows the devices were sent), each row's part along its own
        item's row is taken off first: weight decay pulls every device's update to an
        item along that row alike (on ML-100K's ratings, 4.6 % of honest replies would
        be set aside without it). The row and the common directions are taken off
        together (the row's part outside them last): taken off one after the other, what
        is left of the row's own direction is alike in every device's row on it (ML-100K
        implicit, rounds 3-4: 76 honest replies set aside)."""
        x = rows.astype(np.float32)
        if sent is not None:  # each row without its part along the row it was sent
            q = sent.astype(np.float32)
            q = q / np.maximum(np.sqrt(np.einsum("ij,ij->i", q, q)), 1e-30)[:, None]
            x -= np.einsum("ij,ij->i", x, q)[:, None] * q
        x /= np.maximum(np.sqrt(np.einsum("ij,ij->i", x, x)), 1e-30)[:, None]
        if self.common and len(x) > self.common:
            rng = np.random.default_rng([self.seed, 272])
            sample = x[rng.choice(len(x), min(self.sample, len(x)), replace=False)]
            top = np.linalg.svd(sample.astype(np.float64), full_matrices=False)[2][
                :self.common].astype(np.float32)
            x -= (x @ top.T) @ top
            if sent is not None:  # then along what the sent row has outside them
                q -= (q @ top.T) @ top
                q /= np.maximum(np.sqrt(np.einsum("ij,ij->i", q, q)), 1e-30)[:, None]
                x -= np.einsum("ij,ij->i", x, q)[:, None] * q
        return x

    def flagged(self, updates: list[ItemUpdate], factors: np.ndarray | None = None
                ) -> np.ndarray:
        """Which devices (indices into ``updates``) sent a row sharing an item and a code
        with at least ``group − 1`` other devices."""
        sizes = [len(u.ids) for u in updates]
        if not sum(sizes):
            return np.zeros(len(updates), dtype=bool)
        device = np.repeat(np.arange(len(updates)), sizes)
        ids = np.concatenate([u.ids for u in updates])
        rows = np.concatenate([u.rows for u in updates])
        if rows.shape[1] < self.min_factors:
            return np.zeros(len(updates), dtype=bool)
        code = self.codes(self.own_parts(rows, None if factors is None else factors[ids]))
        nonzero = np.concatenate([(np.abs(u.rows).sum(axis=1) + np.abs(u.bias)) > 0
                                  for u in updates])
        # One int64 key per (item, code): a multiply-xor mix, so distinct pairs collide
        # with odds of about one in 2**64 per pair.
        with np.errstate(over="ignore"):
            key = (code[nonzero] * np.int64(-7046029254386353131)) ^ ids[nonzero]
        _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
        crowded = counts[inverse] >= self.group
        out = np.zeros(len(updates), dtype=bool)
        out[device[nonzero][crowded]] = True
        return out

    def screen(self, updates: list[ItemUpdate], factors: np.ndarray | None = None,
               nodes: list[int] | None = None) -> list[ItemUpdate | None]:
        flagged = self.flagged(updates, factors)
        self.last = {"set-aside": float(flagged.sum())}
        return [None if f else u for u, f in zip(updates, flagged, strict=True)]
