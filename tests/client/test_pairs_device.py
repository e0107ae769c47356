"""A device's side of the pairs model refuses what a server's message gets wrong, by
name, and keeps its counted items as they were."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedrec.client import pairs as device
from fedrec.common import pairs, records
from fedrec.common.data.csvlog import write_csv_log
from fedrec.common.data.synthetic import ShopConfig, generate_shop


@pytest.fixture(scope="module")
def run_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("shop") / "shop.csv"
    write_csv_log(generate_shop(ShopConfig(n_users=20, n_items=30, n_events=600, seed=2)),
                  path)
    return {"dataset": f"csv:{path}", "protocol": "implicit-80-20"}


@pytest.fixture(autouse=True)
def identity():
    """Message() reads the task's identity, as Flower's runtime sets it."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1


def _context(run_config) -> Context:
    return Context(run_id=1, node_id=1001, node_config={"partition-id": 0},
                   state=RecordDict(), run_config=run_config)


def _count(**changes) -> Message:
    cfg = {"task": pairs.COUNT, "include": "train", "cap": 200, "n-items": 30,
           "counted": 0, "digest": pairs.digest(np.empty(0, np.int64)), **changes}
    cfg = {k: v for k, v in cfg.items() if v is not None}
    return Message(RecordDict({pairs.RECORD: ConfigRecord(cfg)}), dst_node_id=1001,
                   message_type=MessageType.QUERY)


def _evaluate(table=None, **changes) -> Message:
    cfg = {"task": pairs.EVALUATE, "on": "test", "weight": 1.0, "cap": 200, **changes}
    cfg = {k: v for k, v in cfg.items() if v is not None}
    table = np.eye(30, dtype=np.float32) if table is None else table
    return Message(RecordDict({pairs.RECORD: ConfigRecord(cfg),
                               pairs.TABLE: records.arrays_to_record({"counts": table})}),
                   dst_node_id=1001, message_type=MessageType.QUERY)


@pytest.mark.parametrize("changes, needle", [
    ({"task": "train"}, "pairs.task"),
    ({"task": None}, "pairs.task"),
    ({"include": "some"}, "pairs.include"),
    ({"cap": 0}, "pairs.cap"),
    ({"cap": True}, "pairs.cap"),
    ({"cap": "200"}, "pairs.cap"),
    ({"cap": 2.5}, "pairs.cap"),
    ({"n-items": None}, "pairs.n-items"),
    ({"counted": -1}, "pairs.counted"),
    ({"counted": 3}, "pairs.counted"),  # the server claims items this device never sent
    ({"digest": None}, "pairs.digest"),
])
def test_a_bad_count_message_is_refused_by_name_and_changes_nothing(run_config, changes,
                                                                    needle):
    context = _context(run_config)
    with pytest.raises(ValueError, match=needle):
        device.answer(_count(**changes), context, run_config)
    assert device.COUNTED not in context.state.array_records
    assert device.SENT not in context.state.array_records


@pytest.mark.parametrize("changes, table, needle", [
    ({"on": "train"}, None, "pairs.on"),
    ({"weight": float("nan")}, None, "pairs.weight"),
    ({"weight": 1e9}, None, "pairs.weight"),
    ({"weight": -1.0}, None, "pairs.weight"),
    ({"weight": "1"}, None, "pairs.weight"),
    ({"cap": 0}, None, "pairs.cap"),
    ({}, np.full((30, 30), np.inf, np.float32), "pairs.counts"),
    ({}, np.arange(900, dtype=np.float32).reshape(30, 30), "pairs.counts"),
])
def test_a_bad_evaluation_message_is_refused_by_name(run_config, changes, table, needle):
    with pytest.raises(ValueError, match=needle):
        device.answer(_evaluate(table, **changes), _context(run_config), run_config)


def test_good_messages_are_answered(run_config):
    """The control: the messages above with nothing wrong are answered."""
    context = _context(run_config)
    reply = device.answer(_count(), context, run_config)
    new = records.record_to_arrays(reply.content[pairs.RECORD])["new"]
    assert len(new) and new.dtype == np.int64
    assert device.SENT in context.state.array_records
    reply = device.answer(_evaluate(), context, run_config)
    assert "num-users" in reply.content[records.METRICS]
