"""Simulated devices' synced tables, shared: thousands of devices that each hold their own
copy of a 100k-row item table would need gigabytes, yet every copy is one of the versions the
server sent. :class:`TableArchive` keeps the server's table as last sent and, for each later
send, the rows that changed with their values before, so the table at any sent version is
rebuilt on demand. :class:`ArchiveKeeper` is the devices' :class:`~fedrec.client.sync.TableKeeper`
over it: a device remembers only which version it holds, and when it keeps a table the keeper
checks it is exactly the server's, bit for bit (so sharing changes nothing a device computes).
For the in-process engine with one worker (the keeper lives in this process).
"""

from __future__ import annotations

import numpy as np
from flwr.app import Context

from fedrec.client.sync import HeldTable
from fedrec.server.publish import PublishedTable


class TableArchive:
    """The item table at every version sent (see the module docstring)."""

    def __init__(self) -> None:
        self.factors: np.ndarray | None = None
        self.bias: np.ndarray | None = None
        self.static: dict[str, np.ndarray] = {}
        self.version = -1
        # per send: (version, ids changed since the previous send, their values before)
        self.log: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []

    def sent(self, table: PublishedTable, static: dict[str, np.ndarray]) -> None:
        """Record the table as it is sent now (call before each round's messages go)."""
        p = table
        if self.factors is None:
            self.factors, self.bias = p.factors.copy(), p.bias.copy()
        else:
            n_old = len(self.factors)
            moved = table.changed_since(self.version)
            moved = moved[moved < n_old]
            if len(moved):
                self.log.append((table.round, moved, self.factors[moved].copy(),
                                 self.bias[moved].copy()))
                self.factors[moved], self.bias[moved] = p.factors[moved], p.bias[moved]
            if table.n_items > n_old:
                self.factors = np.concatenate([self.factors, p.factors[n_old:]])
                self.bias = np.concatenate([self.bias, p.bias[n_old:]])
        self.static = {k: np.array(v) for k, v in static.items()}
        self.version = table.round

    def table(self, version: int, n_items: int) -> HeldTable:
        """A fresh copy of the table sent at ``version`` with ``n_items`` rows."""
        if self.factors is None or version > self.version or n_items > len(self.factors):
            raise KeyError(f"no table version {version} of {n_items} rows was sent")
        factors, bias = self.factors[:n_items].copy(), self.bias[:n_items].copy()
        for v, ids, old_f, old_b in reversed(self.log):
            if v <= version:
                break
            keep = ids < n_items
            factors[ids[keep]], bias[ids[keep]] = old_f[keep], old_b[keep]
        return HeldTable(factors, bias, version,
                         {k: v[:n_items].copy() for k, v in self.static.items()})

    def matches(self, table: HeldTable) -> bool:
        """Whether ``table`` is bit for bit the one last sent."""
        return (table.version == self.version and self.factors is not None
                and table.n_items == len(self.factors)
                and np.array_equal(table.factors, self.factors)
                and np.array_equal(table.bias, self.bias)
                and table.static.keys() == self.static.keys()
                and all(np.array_equal(table.static[k], self.static[k]) for k in self.static))


class ArchiveKeeper:
    """Devices' tables as (version, rows) into a :class:`TableArchive`."""

    def __init__(self, archive: TableArchive) -> None:
        self.archive = archive
        self.held: dict[int, tuple[int, int]] = {}
        self.checked = 0  # tables verified equal to the server's

    def load(self, context: Context) -> HeldTable | None:
        held = self.held.get(context.node_id)
        return None if held is None else self.archive.table(*held)

    def keep(self, context: Context, table: HeldTable) -> None:
        if not self.archive.matches(table):
            raise AssertionError(f"node {context.node_id}'s synced table (version "
                                 f"{table.version}, {table.n_items} rows) differs from the "
                                 f"server's version {self.archive.version}")
        self.checked += 1
        self.held[context.node_id] = (int(table.version), table.n_items)


class LocalArchive(TableArchive):
    """A :class:`TableArchive` fed from the tables devices keep rather than from the
    server: for devices in a worker process, which sees what its devices were sent but
    not the server's table. Versions arrive in order (a round's devices all keep the
    version of that round)."""

    def record(self, table: HeldTable) -> None:
        """Take ``table`` as the newest version."""
        if self.factors is None:
            self.factors, self.bias = table.factors.copy(), table.bias.copy()
        else:
            n_old = len(self.factors)
            moved = np.flatnonzero((table.factors[:n_old] != self.factors).any(axis=1)
                                   | (table.bias[:n_old] != self.bias))
            if len(moved):
                self.log.append((int(table.version), moved, self.factors[moved].copy(),
                                 self.bias[moved].copy()))
                self.factors[moved], self.bias[moved] = (table.factors[moved],
                                                         table.bias[moved])
            if table.n_items > n_old:
                self.factors = np.concatenate([self.factors, table.factors[n_old:]])
                self.bias = np.concatenate([self.bias, table.bias[n_old:]])
        self.static = {k: np.array(v) for k, v in table.static.items()}
        self.version = int(table.version)


class SharedKeeper(ArchiveKeeper):
    """The devices of one worker process, each version of the table kept once: a device
    remembers which version it holds; the first device to keep a new version records it,
    and every other device keeping that version must hold it bit for bit."""

    def __init__(self) -> None:
        super().__init__(LocalArchive())

    def keep(self, context: Context, table: HeldTable) -> None:
        if table.version is None or table.version < self.archive.version:
            raise AssertionError(f"node {context.node_id} keeps version {table.version}, "
                                 f"older than this worker's newest {self.archive.version}")
        if table.version > self.archive.version:
            self.archive.record(table)
        super().keep(context, table)
