"""Item updates a ``secagg`` device holds back until their rows' block comes up.

When the server sums a public block of rows each round (:class:`~fedrec.common.secagg.Block`)
rather than the whole catalogue, a device's update names rows outside the block too. It
keeps them here and sends them in the round whose block covers them. A row held over
several rounds is sent as the mean of its updates (each a step from the table the device
had then), so a held row is never longer than the longest of them and stays within the
server's norm bound; its counts add up. A row is held at most until the block has gone once
round the catalogue, so what a device holds is bounded by the rows it touches in one cycle.

In simulation the held rows live in the node's ``context.state``; on a real device in its
encrypted store (:class:`~fedrec.client.store.DeviceStore`), in the same file as its user
vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedrec.common.schema import ItemUpdate
from fedrec.common.secagg import Block

KEY = "secagg-held"  # context.state / store: one float64 array, a row per held item


@dataclass(frozen=True)
class Held:
    """The held rows: an update plus how many rounds' updates each row is the mean of."""

    update: ItemUpdate
    merged: np.ndarray  # (m,) float64

    @classmethod
    def empty(cls, k: int) -> Held:
        return cls(ItemUpdate(np.empty(0, np.int64), np.empty((0, k), np.float32),
                              np.empty(0, np.float32), np.empty(0, np.float32)),
                   np.empty(0, np.float64))

    def __len__(self) -> int:
        return len(self.update.ids)

    def add(self, new: ItemUpdate) -> Held:
        """The held rows with ``new`` merged in (a row in both: the running mean)."""
        old = self.update
        if len(old.ids) and old.rows.shape[1] != new.rows.shape[1]:
            return Held(new, np.ones(len(new.ids)))  # the table changed shape: start over
        ids = np.union1d(old.ids, new.ids).astype(np.int64)
        k = new.rows.shape[1]
        total = np.zeros((len(ids), k), np.float64)
        bias = np.zeros(len(ids), np.float64)
        counts = np.zeros(len(ids), np.float64)
        merged = np.zeros(len(ids), np.float64)
        for update, times in ((old, self.merged), (new, np.ones(len(new.ids)))):
            at = np.searchsorted(ids, update.ids)
            total[at] += update.rows * times[:, None]
            bias[at] += update.bias * times
            counts[at] += update.counts
            merged[at] += times
        return Held(ItemUpdate(ids, (total / merged[:, None]).astype(np.float32),
                               (bias / merged).astype(np.float32),
                               counts.astype(np.float32)), merged)

    def take(self, block: Block) -> tuple[ItemUpdate, Held]:
        """The held rows inside ``block`` (to send now) and what stays held."""
        u = self.update
        inside = block.contains(u.ids) & (u.ids < block.n_items)
        return _rows(u, inside), Held(_rows(u, ~inside), self.merged[~inside])

    def to_array(self) -> np.ndarray:
        """One float64 array: ``[id, merged, count, bias, row…]`` per held row."""
        u = self.update
        return np.column_stack([u.ids.astype(np.float64), self.merged,
                                u.counts.astype(np.float64), u.bias.astype(np.float64),
                                u.rows.astype(np.float64)]) if len(u.ids) else \
            np.empty((0, 4 + u.rows.shape[1]), np.float64)

    @classmethod
    def from_array(cls, array: np.ndarray | None, k: int) -> Held:
        """The held rows saved by :meth:`to_array`; what does not fit a table of ``k``
        factors (or is not finite, or names a row twice) is dropped: a held update is only
        ever a device's own work, never worth failing a round over."""
        if array is None or array.ndim != 2 or array.shape[1] != 4 + k or not len(array):
            return cls.empty(k)
        a = np.asarray(array, np.float64)
        ids = a[:, 0]
        ok = np.isfinite(a).all(axis=1) & (ids >= 0) & (ids == np.floor(ids)) & (a[:, 1] >= 1)
        a = a[ok]
        ids = a[:, 0].astype(np.int64)
        if len(np.unique(ids)) != len(ids) or (len(ids) > 1 and (np.diff(ids) <= 0).any()):
            return cls.empty(k)
        return cls(ItemUpdate(ids, a[:, 4:].astype(np.float32), a[:, 3].astype(np.float32),
                              a[:, 2].astype(np.float32)), a[:, 1].copy())


def _rows(update: ItemUpdate, keep: np.ndarray) -> ItemUpdate:
    return ItemUpdate(update.ids[keep], update.rows[keep], update.bias[keep],
                      update.counts[keep])
