"""The server's side of the neighbours part (:mod:`fedrec.common.neighbours`).

It keeps the three sums over devices, and for each device the ratings it has counted (item
and residual, in the order they came), so that it pairs a device's new ratings with its
earlier ones and counts no item of a device twice. Every ``refresh`` rounds it makes the
top-``k`` table devices are sent with their train messages. Its state is a checkpoint's
``run/neighbours.*`` arrays (checked on load by name).
"""

from __future__ import annotations

from logging import WARNING

import numpy as np
from flwr.common.logger import log

from fedrec.common.neighbours import (
    MAX_ITEMS,
    REPLY_KEYS,
    NeighbourStats,
    NeighbourTable,
    check_contribution,
)
from fedrec.common.schema import InvalidReplyError

STATE = "neighbours"  # the checkpoint's run-array owner


class NeighbourServer:
    """The sums, the devices' counted ratings and the table devices are sent."""

    def __init__(self, k: int, history: int, refresh: int, n_items: int) -> None:
        if k < 1 or history < 1 or refresh < 1:
            raise ValueError(f"neighbours needs k, history and refresh >= 1. Found {k}, "
                             f"{history}, {refresh}.")
        self.k, self.history, self.refresh = k, history, refresh
        self.stats = NeighbourStats(min(n_items, MAX_ITEMS))
        self.items: dict[int, np.ndarray] = {}  # node -> its counted items, in order
        self.residuals: dict[int, np.ndarray] = {}
        self.table = NeighbourTable.empty(k)
        self.version = 0  # the round the table was made (devices keep it until it changes)
        self.beyond = 0  # ratings of items past MAX_ITEMS, not counted (catalogue too big)
        self._warned = False

    # ---- a round ------------------------------------------------------------------------
    def check(self, node: int, arrays: dict, n_items: int, width: float, claimed: float
              ) -> tuple[np.ndarray, np.ndarray]:
        """A reply's ``neighbours`` arrays, checked against what ``node`` has counted
        (:func:`~fedrec.common.neighbours.check_contribution`): (items, residuals)."""
        if sorted(arrays) != sorted(REPLY_KEYS):
            raise InvalidReplyError("neighbours.keys", f"expected {list(REPLY_KEYS)}, found "
                                    f"{sorted(map(str, arrays))[:10]}")
        items, residuals = arrays.get("items"), arrays.get("residuals")
        counted = np.sort(self.items.get(node, np.empty(0, np.int64)))
        res = check_contribution(items, residuals, counted, n_items, width, claimed)
        return items, res

    def fold(self, node: int, items: np.ndarray, residuals: np.ndarray,
             n_items: int) -> None:
        """A checked contribution (:meth:`check`) added to the sums."""
        self.stats.grow(min(n_items, MAX_ITEMS))
        inside = items < MAX_ITEMS
        if not inside.all():
            self.beyond += int((~inside).sum())
            if not self._warned:
                log(WARNING, "neighbours: the catalogue has %s items; ratings of items past "
                    "the first %s are not counted", n_items, MAX_ITEMS)
                self._warned = True
            items, residuals = items[inside], residuals[inside]
        old = self.items.get(node, np.empty(0, np.int64))
        old_res = self.residuals.get(node, np.empty(0))
        h = self.history
        self.stats.add(old[-h:], old_res[-h:], items, residuals, h)
        self.items[node] = np.concatenate([old, items])
        self.residuals[node] = np.concatenate([old_res, residuals])

    def end_round(self, server_round: int) -> None:
        """The table refreshed every ``refresh`` rounds."""
        if server_round % self.refresh == 0:
            self.table = self.stats.table(self.k)
            self.version = server_round

    def summary(self) -> dict[str, float]:
        return {"neighbour-devices": float(len(self.items)),
                "neighbour-ratings": float(sum(len(v) for v in self.items.values())),
                "neighbour-beyond": float(self.beyond)}

    # ---- checkpoint ---------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        nodes = np.array(sorted(self.items), dtype=np.uint64)
        lengths = np.array([len(self.items[int(n)]) for n in nodes], dtype=np.int64)
        def cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
            return np.concatenate(parts).astype(dtype) if parts else np.empty(0, dtype)

        return {**self.stats.arrays(), **{f"table-{k}": v for k, v in
                                          self.table.arrays().items()},
                "nodes": nodes, "lengths": lengths,
                "items": cat([self.items[int(n)] for n in nodes], np.int64),
                "residuals": cat([self.residuals[int(n)] for n in nodes], np.float64),
                "beyond": np.array([self.beyond], np.int64),
                "version": np.array([self.version], np.int64)}

    def load(self, arrays: dict, n_items: int, width: float) -> None:
        """Restore :meth:`state` from a checkpoint; ValueError naming the field."""
        self.stats = NeighbourStats.from_arrays(arrays, n_items)
        table = NeighbourTable.from_arrays(
            {"ids": arrays.get("table-ids"), "sims": arrays.get("table-sims")}, n_items)
        if table.ids.shape[1] != self.k:
            raise ValueError(f"neighbours.table-ids: {table.ids.shape[1]} neighbours an item "
                             f"where the run has {self.k}")
        nodes, lengths = arrays.get("nodes"), arrays.get("lengths")
        items, residuals = arrays.get("items"), arrays.get("residuals")
        beyond, version = arrays.get("beyond"), arrays.get("version")
        for name, a, dtype in (("version", version, np.int64), ("nodes", nodes, np.uint64),
                               ("lengths", lengths, np.int64), ("items", items, np.int64),
                               ("residuals", residuals, np.float64),
                               ("beyond", beyond, np.int64)):
            if not isinstance(a, np.ndarray) or a.dtype != dtype or a.ndim != 1:
                raise ValueError(f"neighbours.{name}: expected a 1-d {np.dtype(dtype)} array")
        if len(lengths) != len(nodes) or (lengths < 1).any() or \
                lengths.sum() != len(items) or len(residuals) != len(items):
            raise ValueError("neighbours.lengths: must give each node's count of items and "
                             "residuals (>= 1 each)")
        if len(np.unique(nodes)) != len(nodes):
            raise ValueError("neighbours.nodes: repeated nodes")
        if len(items) and (items.min() < 0 or items.max() >= self.stats.n_items):
            raise ValueError("neighbours.items: ids outside the statistics")
        if not np.isfinite(residuals).all() or len(beyond) != 1 or beyond[0] < 0 or \
                len(version) != 1 or version[0] < 0:
            raise ValueError("neighbours.residuals, beyond and version: finite values, "
                             "one count, one round")
        self.items, self.residuals = {}, {}
        start = 0
        for node, n in zip(nodes.tolist(), lengths.tolist(), strict=True):
            mine = items[start:start + n]
            if len(np.unique(mine)) != n:
                raise ValueError(f"neighbours.items: node {node} counts an item twice")
            self.items[int(node)] = mine.copy()
            self.residuals[int(node)] = residuals[start:start + n].copy()
            start += n
        self.table, self.beyond, self.version = table, int(beyond[0]), int(version[0])
