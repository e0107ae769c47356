"""fedrec's Flower ClientApp: a thin wrapper around :class:`fedrec.client.device.Device`.

In simulation a node's ``partition-id`` names the user whose events it holds. The device's
private user vector lives in the node's ``context.state`` and is never put in a reply.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedrec.client.device import Device, UserState
from fedrec.common import records
from fedrec.common.partition import Partitions, UserRows, simulated_partitions
from fedrec.common.settings import RunSettings

app = ClientApp()


def local_rows(context: Context) -> UserRows:
    """This node's user's rows (simulation: the partition named by ``partition-id``)."""
    c = context.run_config
    parts = _partitions(str(c.get("dataset", RunSettings.dataset)),
                        str(c.get("protocol", RunSettings.protocol)),
                        int(c.get("fold", RunSettings.fold)),
                        str(c.get("data-dir", RunSettings.data_dir)))
    return parts.user(int(context.node_config["partition-id"]))


def _partitions(dataset: str, protocol: str, fold: int, data_dir: str) -> Partitions:
    return simulated_partitions(dataset, protocol, fold, data_dir)


def _device(context: Context, rows: UserRows, seed: int) -> Device:
    state = None
    if records.USER in context.state.array_records:
        arrays = records.record_to_arrays(context.state[records.USER])
        state = UserState(arrays["factors"].copy(), float(arrays["bias"][0]))
    return Device(rows.train_items, rows.train_values, seed=seed, state=state)


def _save(context: Context, device: Device) -> None:
    if device.user is not None:
        context.state[records.USER] = records.arrays_to_record(
            {"factors": device.user.factors,
             "bias": np.array([device.user.bias], dtype=np.float32)})


def _seed(extra: dict, context: Context) -> int:
    pid = int(context.node_config.get("partition-id", 0))
    server_round = int(extra.get("server-round", 0))
    return int(extra.get("seed", 0)) * 1_000_003 + pid * 10_007 + server_round


def _prepare(msg: Message, context: Context) -> tuple:
    """Decode the server's message and restore this node's device."""
    config, extra = records.record_to_config(msg.content[records.CONFIG])
    factors, bias = records.record_to_items(msg.content[records.ITEMS])
    rows = local_rows(context)
    return config, extra, factors, bias, rows, _device(context, rows, _seed(extra, context))


@app.train()
def train(msg: Message, context: Context) -> Message:
    config, extra, factors, bias, _, device = _prepare(msg, context)
    update, metrics = device.train(factors, bias, float(extra["mean"]), config)
    _save(context, device)
    return Message(RecordDict({records.UPDATE: records.update_to_record(update),
                               records.METRICS: records.metrics_to_record(metrics)}),
                   reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    config, extra, factors, bias, rows, device = _prepare(msg, context)
    if config.loss == "mse":
        metrics = device.evaluate_ratings(
            factors, bias, float(extra["mean"]), rows.test_items, rows.test_values,
            (float(extra["rating-min"]), float(extra["rating-max"])))
    else:
        metrics = device.evaluate_ranking(factors, bias, rows.test_items)
    return Message(RecordDict({records.METRICS: records.metrics_to_record(metrics)}),
                   reply_to=msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Aggregate-only statistics for the server: the sum and count of this user's training
    ratings (the server needs the global mean μ)."""
    rows = local_rows(context)
    return Message(RecordDict({records.METRICS: MetricRecord(
        {"rating-sum": float(rows.train_values.sum()),
         "rating-count": float(len(rows.train_values))})}), reply_to=msg)


