"""Where a device's rows come from: its encrypted store on a real device, the simulated
partition of its user otherwise."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import numpy as np
from flwr.app import Context

from fedrec.client.store import DeviceStore, read_key_file
from fedrec.common.data.interactions import EventType
from fedrec.common.partition import UserRows, simulated_partitions
from fedrec.common.settings import RunSettings

__all__ = ["device_store", "local_rows", "store_rows"]


@contextmanager
def device_store(context: Context) -> Iterator[DeviceStore | None]:
    """The device's encrypted store, open for one message, when the node was started with
    ``store=PATH`` (and ``store-key-file=PATH``: 32 raw bytes, or 64 hex digits); None in
    simulation."""
    path = context.node_config.get("store")
    if not path:
        yield None
        return
    key_file = context.node_config.get("store-key-file")
    if not key_file:
        raise ValueError("node config has store= but no store-key-file=")
    with DeviceStore(str(path), key=read_key_file(str(key_file))) as store:
        yield store


def store_rows(store: DeviceStore, explicit: bool) -> UserRows:
    """Training rows from the store's events: ratings for an explicit model, every other
    event (view, cart, purchase) as one positive for an implicit one. Nothing is held out
    on a real device."""
    events = store.events()
    rating = events["event"] == int(EventType.RATING)
    keep = rating if explicit else ~rating
    items = events["item"][keep]
    values = events["value"][keep] if explicit else np.ones(int(keep.sum()), np.float32)
    empty = np.empty(0, np.int64)
    return UserRows(items, values.astype(np.float32), empty, np.empty(0, np.float32))


def local_rows(context: Context, run_config: Mapping, store: DeviceStore | None = None,
               explicit: bool | None = None) -> UserRows:
    """This node's user's rows: from its ``store`` on a real device, otherwise (simulation)
    the partition named by ``partition-id``."""
    if store is not None:
        if explicit is None:
            explicit = RunSettings.from_run_config(dict(run_config)).explicit
        return store_rows(store, explicit)
    c = run_config
    parts = simulated_partitions(str(c.get("dataset", RunSettings.dataset)),
                                 str(c.get("protocol", RunSettings.protocol)),
                                 int(c.get("fold", RunSettings.fold)),
                                 str(c.get("data-dir", RunSettings.data_dir)),
                                 bool(RunSettings.parse_value(
                                     "validation", c.get("validation", False))))
    return parts.user(int(context.node_config["partition-id"]))
