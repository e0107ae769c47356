"""Delta sync on the device: keep the item table between rounds and patch it with the rows
the server says changed.

With the run's ``sync = "delta"`` the server sends the whole table at first contact and
afterwards only the rows moved since the version the device acknowledged (its last
successful reply) plus the rows added since (a growing catalogue), each message tagged with
the table's ``version`` and size, a delta also with its ``base`` (version and size). Static
per-row arrays (``static.NAME``, such as listing times) come whole with a whole table and,
in a delta, for the added rows only. The device keeps the table it trained on and refuses a
delta it cannot apply (a lost table, or one older than the base): the error reply makes the
server send the whole table next time.

Where the table is kept is a :class:`TableKeeper`'s job: the node's ``context.state`` in
simulation (:class:`StateKeeper`), the device's encrypted store on a real device
(:class:`StoreKeeper`, written by the ClientApp with the user vector after training).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from flwr.app import ArrayRecord, Context

from fedrec.client import edge
from fedrec.client.store import DeviceStore
from fedrec.common import records
from fedrec.common.ranking import HEAD_KEY

TABLE = "table"  # context.state: ArrayRecord {factors, bias, version, static.NAME}
VERSION = "item-version"  # a device store's state entry: the synced table's version
STATIC = ("listed",)  # the static per-row arrays a device store keeps as static.NAME
PREFIX = "static."
# What comes whole with every table message beside the rows (a shop's catalogue: the rows
# hidden now, never recommended; the category names its category indices stand for; the
# head a tail bonus ranks against, common.ranking).
EXTRAS = ("hidden", "category-names", HEAD_KEY)


class StaleTableError(RuntimeError):
    """A delta arrived for a table version this device does not hold."""


@dataclass
class HeldTable:
    """An item table as a device holds it: rows, biases, version (None: full sync, not
    versioned), the static per-row arrays and the message's :data:`EXTRAS`."""

    factors: np.ndarray
    bias: np.ndarray
    version: int | None
    static: dict[str, np.ndarray] = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return len(self.factors)


class TableKeeper(Protocol):
    """Where a device keeps its synced table between messages."""

    def load(self, context: Context) -> HeldTable | None:
        """The table this device holds (arrays the caller may change), or None."""

    def keep(self, context: Context, table: HeldTable) -> None:
        """Remember ``table`` as the one this device holds."""


class StateKeeper:
    """In the node's ``context.state`` (simulation; survives between messages)."""

    def load(self, context: Context) -> HeldTable | None:
        if TABLE not in context.state.array_records:
            return None
        held = records.record_to_arrays(context.state[TABLE])
        static = {k[len(PREFIX):]: np.array(v) for k, v in held.items()
                  if k.startswith(PREFIX)}
        return HeldTable(np.array(held["factors"]), np.array(held["bias"]),
                         int(held["version"][0]), static)

    def keep(self, context: Context, table: HeldTable) -> None:
        context.state[TABLE] = records.arrays_to_record(
            {"factors": table.factors, "bias": table.bias,
             "version": np.array([table.version], dtype=np.int64),
             **{PREFIX + k: v for k, v in table.static.items()}})


class StoreKeeper:
    """In the device's encrypted store; the ClientApp writes it (:func:`store_state`) with
    the user vector in one transaction after training, so :meth:`keep` writes nothing."""

    def __init__(self, store: DeviceStore) -> None:
        self.store = store

    def load(self, context: Context) -> HeldTable | None:
        s = self.store
        factors, bias, version = s.get(edge.FACTORS), s.get(edge.BIAS), s.get(VERSION)
        if factors is None or bias is None or version is None:
            return None
        static = {name: v for name in STATIC if (v := s.get(PREFIX + name)) is not None}
        # (kept where the app reads them: edge.table_state)
        for name, entry in (("category", edge.CATEGORY), ("sku", edge.SKU),
                            ("categories", edge.CATEGORIES)):
            if (values := s.get(entry)) is not None and len(values) == len(factors):
                static[name] = values
        return HeldTable(_writable(factors), _writable(bias), int(version[0]), static)

    def keep(self, context: Context, table: HeldTable) -> None:
        return None


def _writable(array: np.ndarray) -> np.ndarray:
    return array if array.flags.writeable else np.array(array)


def synced_table(items: ArrayRecord, context: Context,
                 keeper: TableKeeper | None = None) -> HeldTable:
    """The item table a train message gives this device, patched in delta sync (version
    None in full sync, where nothing is kept); ``keeper`` (default: ``context.state``)
    holds it between messages."""
    arrays = records.record_to_arrays(items)
    static = {k[len(PREFIX):]: v for k, v in arrays.items() if k.startswith(PREFIX)}
    extras = {k: arrays[k] for k in EXTRAS if k in arrays}
    if "version" not in arrays:  # full sync: the message is the table, nothing kept
        return HeldTable(arrays["factors"], arrays["bias"], None, static, extras)
    keeper = keeper or StateKeeper()
    version, n_items = (int(v) for v in arrays["version"])
    if "base" not in arrays:
        table = HeldTable(arrays["factors"], arrays["bias"], version, static)
    else:
        table = _patch(keeper.load(context), arrays, static, version, n_items)
    keeper.keep(context, table)
    table.extras.update(extras)
    return table


def _patch(held: HeldTable | None, arrays: dict[str, np.ndarray],
           static: dict[str, np.ndarray], version: int, n_items: int) -> HeldTable:
    """``held`` with the delta's rows written in. A delta from ``base`` applies to any
    table at least as new (its rows are a superset of what changed since the newer one)
    whose rows it covers up to ``n_items``."""
    base, base_n = (int(v) for v in arrays["base"])
    if held is None or held.version < base or not base_n <= held.n_items <= n_items \
            or any(len(held.static.get(name, ())) != held.n_items for name in static):
        have = "no table" if held is None else \
            f"version {held.version} of {held.n_items} rows"
        raise StaleTableError(f"a delta from version {base} of {base_n} rows, but this "
                              f"device holds {have}: it needs the whole table")
    ids, n_old = arrays["ids"], held.n_items
    if not (np.isin(np.arange(n_old, n_items), ids).all()):
        raise StaleTableError("a delta that does not cover the rows added since this "
                              "device's table: it needs the whole table")
    factors, bias, grow = held.factors, held.bias, n_items - n_old
    if grow:
        factors = np.concatenate([factors, np.zeros((grow, factors.shape[1]), factors.dtype)])
        bias = np.concatenate([bias, np.zeros(grow, bias.dtype)])
    factors[ids], bias[ids] = arrays["factors"], arrays["bias"]  # (held arrays: writable)
    # The delta's static rows start at its base size; this device may hold more already.
    out_static = {name: np.concatenate([held.static[name], values[n_old - base_n:]])
                  for name, values in static.items()}
    return HeldTable(factors, bias, version, out_static)


def store_state(table: HeldTable) -> dict[str, np.ndarray]:
    """The store entries recording which table version the device holds and its static
    arrays (none in full sync), to write with the table itself."""
    if table.version is None:
        return {}
    return {VERSION: np.array([table.version], dtype=np.int64),
            **{PREFIX + name: v for name, v in table.static.items() if name in STATIC}}
