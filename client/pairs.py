"""A device's side of the ``pairs`` model (:mod:`fedrec.common.pairs`): it counts its
distinct items into the server's table, and scores with the table it is sent.

Both tasks come as query messages with a ``pairs`` config record. A count names the items
this device has not counted yet, and those that left its latest ``cap``; the device keeps
which it has (``context.state`` in simulation, its encrypted store on a real device). The
server says how many items it has counted for the device and their fingerprint
(:func:`~fedrec.common.pairs.digest`), which tells the device whether its last reply
arrived: a reply lost on the way is sent again, and a server that lost its table (counted
0) gets every item afresh.

On a real device (one with a store) the table and weight of every test round are kept in
the store, for the app's :class:`~fedrec.client.edge.EdgeClient` to recommend with.

Every device holds its latest event out (:meth:`~fedrec.common.partition.UserRows.holding_out`):
the server counts without it first, scores it to choose popularity's weight, then asks
for it too (``include="all"``) before the test rows are scored.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict

from fedrec.client import edge
from fedrec.client.device import rank_metrics
from fedrec.client.rows import device_store, local_rows
from fedrec.common import pairs, records
from fedrec.common.partition import UserRows
from fedrec.common.segments import Segments

COUNTED = "pairs-counted"  # context.state / store: the items counted, then those sent since
SENT = "pairs-sent"


def answer(msg: Message, context: Context, run_config: Mapping) -> Message:
    """The reply to a ``pairs`` message: a count, or an evaluation's metrics. ValueError
    naming the field for a task or value this device does not know."""
    cfg = msg.content.config_records[pairs.RECORD]
    task = str(cfg.get("task", ""))
    if task == pairs.COUNT:
        return count(msg, cfg, context, run_config)
    if task == pairs.EVALUATE:
        return evaluate(msg, cfg, context, run_config)
    raise ValueError(f"pairs.task: expected one of {', '.join(pairs.TASKS)}, found {task!r}")


def held_rows(context: Context, run_config: Mapping, store: object | None) -> UserRows:
    """This device's implicit rows with its latest training event held out."""
    return local_rows(context, run_config, store, explicit=False).holding_out(1)


def _int(cfg: ConfigRecord, key: str, low: int) -> int:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"pairs.{key}: expected a whole number >= {low}, found {value!r}")
    return int(value)


def count(msg: Message, cfg: ConfigRecord, context: Context, run_config: Mapping) -> Message:
    """The items this device has not counted, and those that left its latest ``cap``
    distinct items: its counted set becomes exactly those."""
    include = str(cfg.get("include", ""))
    if include not in pairs.INCLUDE:
        raise ValueError(f"pairs.include: expected one of {', '.join(pairs.INCLUDE)}, "
                         f"found {include!r}")
    cap, n_items = _int(cfg, "cap", 1), _int(cfg, "n-items", 1)
    server_counted = _int(cfg, "counted", 0)
    with device_store(context) as store:
        rows = held_rows(context, run_config, store)
        items = rows.train_items if include == "train" else \
            np.concatenate([rows.train_items, rows.valid_items])
        items = items[items < n_items]
        server_digest = _int(cfg, "digest", 0)
        counted, sent = _load(context, store, COUNTED), _load(context, store, SENT)
        if len(sent) == server_counted and pairs.digest(sent) == server_digest:
            counted = sent  # the last reply arrived
        elif len(counted) != server_counted or pairs.digest(counted) != server_digest:
            if server_counted:
                raise ValueError(f"pairs.counted: the server counted {server_counted} items "
                                 f"of this device, not the ones it has a record of")
            counted = np.empty(0, np.int64)  # the server starts over
        target = pairs.latest_distinct(items, cap)
        new = np.setdiff1d(target, counted).astype(np.int64)
        drop = np.setdiff1d(counted, target).astype(np.int64)  # left its latest cap
        _store(context, store, {COUNTED: counted, SENT: target})
    reply = {"new": new, **({"drop": drop} if len(drop) else {})}
    return Message(RecordDict({pairs.RECORD: records.arrays_to_record(reply)}),
                   reply_to=msg)


def evaluate(msg: Message, cfg: ConfigRecord, context: Context, run_config: Mapping
             ) -> Message:
    """This device's ranking metrics with the table sent, at popularity's weight
    ``weight``, on its held-out event (``on="validation"``) or its test rows."""
    on = str(cfg.get("on", ""))
    if on not in ("validation", "test"):
        raise ValueError(f"pairs.on: expected validation or test, found {on!r}")
    weight = cfg.get("weight")
    if isinstance(weight, bool) or not isinstance(weight, int | float) or \
            not 0 <= weight < 1e6:
        raise ValueError(f"pairs.weight: expected a number in [0, 1e6), found {weight!r}")
    cap = _int(cfg, "cap", 1)
    arrays = records.record_to_arrays(msg.content.array_records[pairs.TABLE])
    table = pairs.check_table(arrays.get("counts"))
    n_items = len(table)
    segments = Segments.from_config(cfg)
    with device_store(context) as store:
        rows = held_rows(context, run_config, store)
        if store is not None and on == "test":  # the app recommends with it (EdgeClient)
            store.put_many(edge.pairs_state(table, float(weight), cap))
    if on == "validation":
        trained, test = rows.train_items, rows.valid_items
    else:
        trained = np.concatenate([rows.train_items, rows.valid_items])
        test = rows.test_items
    trained, test = trained[trained < n_items], test[test < n_items]
    scores = pairs.scores(table, pairs.latest_distinct(trained, cap), float(weight))
    metrics = rank_metrics(scores, trained, test, 10, segments)
    return Message(RecordDict({records.METRICS: records.metrics_to_record(metrics)}),
                   reply_to=msg)


def _load(context: Context, store: object | None, key: str) -> np.ndarray:
    if store is not None:
        got = store.get(key)
    elif key in context.state.array_records:
        got = records.array_view(context.state[key]["items"])
    else:
        got = None
    return np.empty(0, np.int64) if got is None else np.asarray(got, np.int64)


def _store(context: Context, store: object | None, arrays: dict[str, np.ndarray]) -> None:
    if store is not None:
        store.put_many(arrays)
        return
    for key, items in arrays.items():
        context.state[key] = records.arrays_to_record({"items": items.astype(np.int64)})
