"""Replies matched to the messages sent, and any reply structure refused without a crash."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedrec.common import records
from fedrec.common.settings import RunSettings
from fedrec.server.app import build_strategy
from fedrec.server.replies import Outbox, Refusals
from fedrec.simulations.engines.inprocess import InProcessGrid, TaskIdentity
from tests.replies import sent, train_reply, update_arrays


@pytest.fixture
def grid():
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    return InProcessGrid(ClientApp(), 4, {})


def strategy_for(**kw):
    s = RunSettings(factors=8, **kw)
    return build_strategy(s, 20, 3.0, (1.0, 5.0))


def _forge(reply: Message, **metadata) -> Message:
    for name, value in metadata.items():
        reply.metadata.__dict__[f"_{name}"] = value
    return reply


def test_only_the_first_reply_from_the_node_a_message_went_to_is_kept(grid):
    messages = [Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY)
                for n in (1001, 1002)]
    grid.push_messages(messages)
    outbox, refusals = Outbox(messages, "query"), Refusals()
    a, b = (Message(RecordDict(), reply_to=m) for m in messages)
    again = Message(RecordDict(), reply_to=messages[0])
    other = _forge(Message(RecordDict(), reply_to=messages[1]), src_node_id=1003)
    stranger = _forge(Message(RecordDict(), reply_to=messages[0]),
                      reply_to_message_id="not-sent")
    kept = outbox.match([a, other, again, b, stranger], refusals, server_round=4)
    assert kept == [a, b]
    assert refusals.counts == {"query:wrong-node": 1, "query:duplicate": 1,
                               "query:unsolicited": 1}
    assert [(r.round, r.node, r.reason) for r in refusals.recent] == [
        (4, 1003, "wrong-node"), (4, 1001, "duplicate"), (4, 1001, "unsolicited")]


def test_a_runtime_error_reply_on_a_node_s_behalf_is_kept_but_not_a_node_s_forgery(grid):
    from flwr.common.constant import SUPERLINK_NODE_ID

    messages = [Message(RecordDict(), dst_node_id=n, message_type=MessageType.TRAIN)
                for n in (1001, 1002)]
    grid.push_messages(messages)
    unavailable = _forge(Message(Error(0, "node unavailable"), reply_to=messages[0]),
                         src_node_id=SUPERLINK_NODE_ID)
    forged = _forge(Message(Error(0, "forged"), reply_to=messages[1]), src_node_id=1001)
    refusals = Refusals()
    assert Outbox(messages).match([unavailable, forged], refusals) == [unavailable]
    assert refusals.counts == {"wrong-node": 1}


def test_a_reply_to_last_round_s_message_does_not_count_this_round(grid):
    strategy = strategy_for()
    old = sent(strategy, grid, [1001, 1002])
    strategy.aggregate_train(1, [train_reply(old[1001])])
    before = strategy.model.params.copy()
    new = sent(strategy, grid, [1001, 1002], server_round=2)
    _, metrics = strategy.aggregate_train(2, [train_reply(old[1002]), train_reply(old[1001])])
    assert metrics["accepted"] == 0 and metrics["rejected"] == 2
    assert strategy.rejected == {"unsolicited": 2}
    np.testing.assert_array_equal(strategy.model.params.factors, before.factors)
    _, metrics = strategy.aggregate_train(2, [train_reply(new[1002])])
    assert metrics["accepted"] == 1


# ---- any structure at all -----------------------------------------------------------------
values = st.one_of(st.integers(-10**20, 10**20), st.floats(), st.booleans(),
                   st.text(max_size=4), st.lists(st.floats(width=32), max_size=3))
metric_values = st.one_of(st.integers(-10**18, 10**18), st.floats(),
                          st.lists(st.floats(), max_size=3))


@st.composite
def arrays(draw):
    kind = draw(st.sampled_from(["good", "dtype", "shape", "bytes"]))
    n = draw(st.integers(0, 4))
    ids = np.sort(draw(st.lists(st.integers(-2, 25), min_size=n, max_size=n)))
    out = {"ids": np.asarray(ids, np.int64),
           "rows": np.asarray(draw(st.lists(st.floats(width=32), min_size=n * 8,
                                             max_size=n * 8)), np.float32).reshape(n, 8),
           "bias": np.asarray(draw(st.lists(st.floats(width=32), min_size=n, max_size=n)),
                              np.float32),
           "counts": np.asarray(draw(st.lists(st.floats(width=32), min_size=n, max_size=n)),
                                np.float32)}
    if kind == "dtype":
        key = draw(st.sampled_from(sorted(out)))
        with np.errstate(invalid="ignore"):
            out[key] = out[key].astype(draw(st.sampled_from([np.float64, np.int32, np.int8])))
    elif kind == "shape":
        key = draw(st.sampled_from(sorted(out)))
        out[key] = out[key].reshape(-1)[: max(0, out[key].size - 1)]
    record = records.arrays_to_record(out)
    if kind == "bytes":
        key = draw(st.sampled_from(sorted(out)))
        bad = Array.__new__(Array)
        bad.__dict__.update(dtype="float32", shape=(1,), stype=records.NUMPY,
                            data=draw(st.binary(max_size=80)))
        record.__dict__["_data"][key] = bad
    return record


@st.composite
def contents(draw):
    content = RecordDict()
    names = draw(st.lists(st.sampled_from([records.UPDATE, records.METRICS, "config", "x"]),
                          unique=True, max_size=3))
    for name in names:
        kind = draw(st.sampled_from(["array", "metric", "config"]))
        if kind == "array":
            record = draw(arrays())
        elif kind == "metric":
            record = MetricRecord()
            record.__dict__["_data"] = draw(st.dictionaries(
                st.sampled_from(["num-examples", "train-loss", "x", "hr@10"]), metric_values,
                max_size=3))
        else:
            record = ConfigRecord()
            record.__dict__["_data"] = draw(st.dictionaries(st.text(max_size=4), values,
                                                            max_size=3))
        content.__dict__["_data"][name] = record
    return content


@settings(max_examples=250, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(content=contents())
def test_any_reply_structure_is_refused_or_folded_never_a_crash(grid, content):
    strategy = strategy_for()
    before = strategy.model.params.copy()
    asked = sent(strategy, grid, [1001])
    _, metrics = strategy.aggregate_train(1, [Message(content, reply_to=asked[1001])])
    assert metrics["accepted"] + metrics["rejected"] == 1
    if metrics["rejected"]:
        assert sum(strategy.rejected.values()) == 1
        np.testing.assert_array_equal(strategy.model.params.factors, before.factors)
        np.testing.assert_array_equal(strategy.model.params.bias, before.bias)
    else:  # what was folded in passed every check
        assert set(content.keys()) == {records.UPDATE, records.METRICS}
        assert np.isfinite(strategy.model.params.factors).all()


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_any_bytes_decode_to_an_array_or_a_decode_error(data):
    array = Array.__new__(Array)
    array.__dict__.update(dtype="float32", shape=(1,), stype=records.NUMPY,
                          data=b"\x93NUMPY" + data)
    try:
        out = records.array_view(array)
    except records.DecodeError:
        return
    assert isinstance(out, np.ndarray) and not out.dtype.hasobject


def test_an_honest_reply_is_accepted_beside_hostile_ones(grid):
    strategy = strategy_for()
    asked = sent(strategy, grid, [1001, 1002, 1003])
    hostile = train_reply(asked[1002], update_arrays(), {"num-examples": [1.0, 2.0],
                                                        "train-loss": 1.0})
    bad = train_reply(asked[1003])
    bad.content.__dict__["_data"][records.UPDATE] = ArrayRecord()
    _, metrics = strategy.aggregate_train(1, [train_reply(asked[1001]), hostile, bad])
    assert metrics["accepted"] == 1 and metrics["rejected"] == 2
    assert strategy.rejected == {"metric-type:num-examples": 1, "keys": 1}
