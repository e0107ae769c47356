"""Building replies by hand, as a device (honest or not) would send them: to messages the
strategy really sent, each given its id by a grid's push as Flower's grids do."""

from __future__ import annotations

import numpy as np
from flwr.app import Message, MetricRecord, RecordDict

from fedrec.common import records
from fedrec.simulations.benches.hostile import raw_record


def sent(strategy, grid, nodes, server_round: int = 1) -> dict[int, Message]:
    """The strategy's train messages of a round to ``nodes``, pushed (so each has its id),
    by destination node."""
    messages = strategy.train_messages(strategy.round_config(server_round), list(nodes))
    grid.push_messages(messages)
    return {m.metadata.dst_node_id: m for m in messages}


def update_arrays(ids=(1, 2), k: int = 8, value: float = 0.01) -> dict[str, np.ndarray]:
    m = len(ids)
    return {"ids": np.asarray(ids, np.int64), "rows": np.full((m, k), value, np.float32),
            "bias": np.zeros(m, np.float32), "counts": np.ones(m, np.float32)}


def train_reply(to: Message, arrays: dict | None = None, metrics: dict | None = None
                ) -> Message:
    """A train reply to ``to`` carrying ``arrays`` and ``metrics`` exactly as given (Flower's
    type checks bypassed: a device may send anything)."""
    arrays = update_arrays() if arrays is None else arrays
    metrics = {"num-examples": 2.0, "train-loss": 1.0} if metrics is None else metrics
    return Message(RecordDict({records.UPDATE: records.arrays_to_record(arrays),
                               records.METRICS: raw_record(MetricRecord(), metrics)}),
                   reply_to=to)
