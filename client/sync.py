"""Delta sync on the device: keep the item table between rounds and patch it with the rows
the server says changed.

With the run's ``sync = "delta"`` the server sends the whole table at first contact and
afterwards only the rows moved since the version the device acknowledged (its last
successful reply), each tagged with the table's ``version`` (and a delta with its
``base``). The device keeps the table it trained on and refuses a delta whose base it does
not hold (a lost or older table): the error reply makes the server send the whole table
next time. In simulation :func:`synced_table` keeps it in the node's ``context.state``; a
real device keeps it in its encrypted store, written by the ClientApp together with the
user vector after training (:func:`store_state`).
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, Context

from fedrec.client import edge
from fedrec.client.store import DeviceStore
from fedrec.common import records

TABLE = "table"  # context.state: ArrayRecord {factors, bias, version}
VERSION = "item-version"  # a device store's state entry: the synced table's version


class StaleTableError(RuntimeError):
    """A delta arrived for a table version this device does not hold."""


def synced_table(items: ArrayRecord, context: Context, store: DeviceStore | None = None
                 ) -> tuple[np.ndarray, np.ndarray, int | None]:
    """The item table a train message gives this device, patched in delta sync, and its
    version (None in full sync). Kept in ``context.state`` when there is no ``store``."""
    arrays = records.record_to_arrays(items)
    if "version" not in arrays:  # full sync: the message is the table, nothing kept
        return arrays["factors"], arrays["bias"], None
    version = int(arrays["version"][0])
    if "base" not in arrays:
        factors, bias = arrays["factors"], arrays["bias"]
    else:
        base, n_items = int(arrays["base"][0]), int(arrays["n-items"][0])
        held = _load(context, store)
        if held is None or held[2] != base or len(held[0]) != n_items:
            have = "no table" if held is None else f"version {held[2]} of {len(held[0])} rows"
            raise StaleTableError(f"a delta from version {base} of {n_items} rows, but this "
                                  f"device holds {have}: it needs the whole table")
        factors, bias = held[0].copy(), held[1].copy()
        ids = arrays["ids"]
        factors[ids], bias[ids] = arrays["factors"], arrays["bias"]
    if store is None:
        context.state[TABLE] = records.arrays_to_record(
            {"factors": factors, "bias": bias, "version": np.array([version], dtype=np.int64)})
    return factors, bias, version


def store_state(version: int | None) -> dict[str, np.ndarray]:
    """The store entry recording which table version the device holds (none in full
    sync), to write with the table itself."""
    return {} if version is None else {VERSION: np.array([version], dtype=np.int64)}


def _load(context: Context, store: DeviceStore | None
          ) -> tuple[np.ndarray, np.ndarray, int] | None:
    if store is not None:
        factors, bias, version = store.get(edge.FACTORS), store.get(edge.BIAS), store.get(VERSION)
        if factors is None or bias is None or version is None:
            return None
        return factors, bias, int(version[0])
    if TABLE not in context.state.array_records:
        return None
    held = records.record_to_arrays(context.state[TABLE])
    return held["factors"], held["bias"], int(held["version"][0])
