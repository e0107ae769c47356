"""The server's side of the neighbours part: what a reply must carry, what it may move, and
its checkpoint (fedrec.server.neighbours, through the FedRec strategy's fold)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Message, RecordDict
from flwr.clientapp import ClientApp

from fedrec.common import records
from fedrec.common.neighbours import RECORD, NeighbourStats
from fedrec.common.replies import STREAM_TRAIN
from fedrec.common.settings import RunSettings
from fedrec.server.app import build_strategy
from fedrec.server.checkpoint import Checkpoint
from fedrec.server.neighbours import STATE, NeighbourServer
from fedrec.simulations.attacks.stream_freeze import no_events
from fedrec.simulations.engines.inprocess import InProcessGrid, TaskIdentity
from tests.replies import sent, train_reply, update_arrays

K, N_ITEMS = 4, 8


def strategy_with_neighbours(defences: str = "off", refresh: int = 1, checkpoint=None):
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    s = RunSettings(protocol="explicit-80-20", factors=K, weighting="sum",
                    server_optimizer="sgd", server_lr=1.0, defences=defences)
    strategy = build_strategy(s, N_ITEMS, 3.5, (1.0, 5.0), checkpoint)
    strategy.train_schema = STREAM_TRAIN
    strategy.neighbours = NeighbourServer(k=3, history=10, refresh=refresh, n_items=N_ITEMS)
    return strategy


def reply(to: Message, items, residuals, claimed: float | None = None,
          record: dict | None = None) -> Message:
    """A stream train reply: a small update, metrics claiming ``claimed`` ratings (default:
    one per item) and the neighbours record (``record`` replaces it as given)."""
    items = np.asarray(items, np.int64)
    n = float(len(items) if claimed is None else claimed)
    metrics = {**no_events(), "rating-count": n, "rating-sum": 3.0 * n, "num-examples": n}
    out = train_reply(to, update_arrays([0], K, 0.001), metrics)
    if record is None:
        record = {"items": items, "residuals": np.asarray(residuals, np.float32)}
    out.content[RECORD] = records.arrays_to_record(record)
    return out


@pytest.fixture
def grid():
    g = InProcessGrid(ClientApp(), 3, {})
    yield g
    g.close()


def test_ratings_are_paired_with_the_devices_earlier_ones_across_rounds(grid):
    strategy = strategy_with_neighbours()
    asked = sent(strategy, grid, [1001, 1002], 1)
    _, m = strategy.aggregate_train(1, [reply(asked[1001], [0, 1], [1.0, 2.0]),
                                        reply(asked[1002], [1, 2], [-1.0, 0.5])])
    assert m["accepted"] == 2 and m["neighbour-ratings"] == 4
    asked = sent(strategy, grid, [1001], 2)
    strategy.aggregate_train(2, [reply(asked[1001], [2], [3.0])])
    want = NeighbourStats(N_ITEMS)
    want.add(np.array([], np.int64), np.array([]), np.array([0, 1, 2]),
             np.array([1.0, 2.0, 3.0]), 10)
    want.add(np.array([], np.int64), np.array([]), np.array([1, 2]), np.array([-1.0, 0.5]),
             10)
    for name, a in want.arrays().items():
        np.testing.assert_allclose(getattr(strategy.neighbours.stats, name), a)


def test_the_table_is_sent_only_to_devices_without_its_version(grid):
    strategy = strategy_with_neighbours(refresh=2)
    asked = sent(strategy, grid, [1001, 1002], 1)
    assert all(RECORD in m.content.array_records for m in asked.values())
    strategy.aggregate_train(1, [reply(asked[1001], [0], [1.0])])  # 1002 never replied
    asked = sent(strategy, grid, [1001, 1002], 2)
    assert RECORD not in asked[1001].content.array_records  # it acknowledged version 0
    assert RECORD in asked[1002].content.array_records
    strategy.aggregate_train(2, [reply(asked[1001], [1], [1.0]),
                                 reply(asked[1002], [1], [1.0])])
    assert strategy.neighbours.version == 2  # refreshed after round 2: both need it
    asked = sent(strategy, grid, [1001, 1002], 3)
    assert all(RECORD in m.content.array_records for m in asked.values())
    assert asked[1001].content[records.CONFIG]["neighbours-version"] == 2


def test_an_error_reply_makes_the_server_send_the_table_again(grid):
    strategy = strategy_with_neighbours(refresh=100)
    asked = sent(strategy, grid, [1001], 1)
    strategy.aggregate_train(1, [reply(asked[1001], [0], [1.0])])
    asked = sent(strategy, grid, [1001], 2)
    assert RECORD not in asked[1001].content.array_records
    from flwr.app import Error
    strategy.aggregate_train(2, [Message(Error(code=0, reason="lost my table"),
                                         reply_to=asked[1001])])
    asked = sent(strategy, grid, [1001], 3)
    assert RECORD in asked[1001].content.array_records


@pytest.mark.parametrize("make, reason", [
    (lambda to: train_reply(to, update_arrays([0], K, 0.001),
                            {**no_events(), "rating-count": 1.0, "rating-sum": 3.0}),
     "records"),  # the record missing
    (lambda to: reply(to, [0, 1], [1.0, 2.0], claimed=1), "neighbours.items"),
    (lambda to: reply(to, [0], [9.0]), "neighbours.residuals"),
    (lambda to: reply(to, [0], [np.nan]), "neighbours.residuals"),
    (lambda to: reply(to, [N_ITEMS], [1.0]), "neighbours.items"),
    (lambda to: reply(to, [0], [1.0], record={"items": np.array([0], np.int64)}),
     "neighbours.keys"),  # (residuals missing)
    (lambda to: reply(to, [0], [1.0], record={"items": np.array([0], np.int64),
                                             "residuals": np.array([1.0], np.float32),
                                             "pairs": np.array([[0, 1]], np.int64)}),
     "neighbours.keys"),  # (a key no device sends)
    (lambda to: reply(to, [0], [1.0], record={"items": np.array(["a"]),
                                             "residuals": np.array([1.0])}),
     "neighbours.items"),
])
def test_a_hostile_reply_is_refused_by_name_and_moves_nothing(grid, make, reason):
    strategy = strategy_with_neighbours()
    asked = sent(strategy, grid, [1001], 1)
    before = strategy.model.params.factors.copy()
    _, m = strategy.aggregate_train(1, [make(asked[1001])])
    assert m["accepted"] == 0 and m["rejected"] == 1
    assert strategy.rejected[reason] == 1, dict(strategy.rejected)
    assert strategy.neighbours.stats.n.sum() == 0 and not strategy.neighbours.items
    np.testing.assert_array_equal(strategy.model.params.factors, before)


def test_a_device_enters_each_pair_once_however_often_it_sends_it(grid):
    """One device sending the same two items in every round: counted in round 1, refused
    after (its share of n_ij stays 1); an honest device in the same rounds is unaffected."""
    strategy = strategy_with_neighbours()
    for r in range(1, 5):
        asked = sent(strategy, grid, [1001, 1002], r)
        strategy.aggregate_train(r, [reply(asked[1001], [0, 1], [4.0, 4.0]),
                                     reply(asked[1002], [r + 1], [0.5])])
    assert strategy.neighbours.stats.n[0, 1] == 1 and strategy.neighbours.stats.sxy[0, 1] == 16
    assert strategy.rejected["neighbours.items"] == 3
    assert len(strategy.neighbours.items[1002]) == 4


def test_a_reply_the_defences_set_aside_adds_no_pairs(grid):
    strategy = strategy_with_neighbours(defences="clip")
    strategy.screen = lambda held, nodes=None: []  # (every reply set aside)
    asked = sent(strategy, grid, [1001], 1)
    _, m = strategy.aggregate_train(1, [reply(asked[1001], [0, 1], [1.0, 2.0])])
    assert m["accepted"] == 0 and strategy.neighbours.stats.n.sum() == 0
    assert not strategy._contributions


def test_the_neighbours_state_survives_a_checkpoint(tmp_path, grid):
    path = tmp_path / "model.db"
    strategy = strategy_with_neighbours(refresh=2, checkpoint=Checkpoint(path))
    for r in range(1, 4):
        asked = sent(strategy, grid, [1001, 1002, 1003], r)
        strategy.aggregate_train(r, [reply(asked[n], [r - 1 + i], [0.5 * i - 1.0])
                                     for i, n in enumerate((1001, 1002, 1003))])
    saved = Checkpoint(path).load()
    assert STATE in saved[3]["arrays"]
    resumed = strategy_with_neighbours(refresh=2)
    resumed.load_neighbours(saved[3])
    a, b = strategy.neighbours, resumed.neighbours
    for name, value in a.state().items():
        np.testing.assert_array_equal(b.state()[name], value)
    assert b.version == 2 and b.items.keys() == a.items.keys()
    asked = sent(resumed, grid, [1001], 4)  # and the resumed server still refuses repeats
    resumed.aggregate_train(4, [reply(asked[1001], [0], [1.0])])
    assert resumed.rejected["neighbours.items"] == 1


def saved_state():
    server = NeighbourServer(3, 10, 1, N_ITEMS)
    server.fold(5, np.array([0, 1]), np.array([1.0, 2.0]), N_ITEMS)
    server.fold(9, np.array([1, 2]), np.array([0.5, 0.5]), N_ITEMS)
    server.end_round(1)
    return server.state()


@pytest.mark.parametrize("change, match", [
    ({"nodes": np.array([5, 5], np.uint64)}, "repeated nodes"),
    ({"nodes": np.array([5, 9], np.int64)}, "uint64"),
    ({"lengths": np.array([2, 1], np.int64)}, "lengths"),
    ({"lengths": np.array([4, 0], np.int64)}, "lengths"),
    ({"items": np.array([0, 1, 1, 1], np.int64)}, "counts an item twice"),
    ({"items": np.array([0, 1, 1, 99], np.int64)}, "outside"),
    ({"residuals": np.array([1.0, np.nan, 0.5, 0.5])}, "finite"),
    ({"beyond": np.array([-1], np.int64)}, "one count"),
    ({"version": np.array([1, 2], np.int64)}, "one round"),
    ({"table-ids": np.zeros((N_ITEMS, 3), np.int32)}, "int16"),
    ({"table-ids": np.zeros((N_ITEMS, 4), np.int16),
      "table-sims": np.zeros((N_ITEMS, 4), np.float16)}, "neighbours an item"),
    ({"n": np.ones((N_ITEMS, N_ITEMS)) * 0.5}, "whole counts"),
])
def test_a_damaged_checkpoint_state_is_refused_by_field(change, match):
    state = {**saved_state(), **change}
    with pytest.raises(ValueError, match=match):
        NeighbourServer(3, 10, 1, N_ITEMS).load(state, N_ITEMS, 4.0)


def test_an_unknown_owner_of_checkpoint_arrays_is_still_refused(tmp_path):
    strategy = strategy_with_neighbours(checkpoint=Checkpoint(tmp_path / "m.db"))
    with pytest.raises(ValueError, match="keeps arrays of"):
        strategy.checkpoint.save(strategy.model, 1, [], {}, {"someone": {"a": np.zeros(1)}})


def test_ratings_of_items_past_the_limit_are_counted_apart(monkeypatch):
    from fedrec.server import neighbours as server_nb
    monkeypatch.setattr(server_nb, "MAX_ITEMS", 4)
    server = NeighbourServer(3, 10, 1, 6)
    server.fold(1, np.array([0, 5, 2]), np.array([1.0, 1.0, 1.0]), 6)
    assert server.beyond == 1 and server.stats.n_items == 4
    assert server.items[1].tolist() == [0, 2]
    assert RecordDict  # (imported for the reply helpers' types)


def test_the_sums_do_not_depend_on_the_order_replies_arrive_in():
    """Ray delivers replies in another order than the in-process engine: the residuals are
    quantised (common.neighbours.STEP), so every sum is exact and the same to the bit in any
    order (unquantised, floating-point sums of the same products differ in their last
    bits: this test fails)."""
    rng = np.random.default_rng(11)
    nodes = list(range(1001, 1013))
    residuals = {node: rng.uniform(-3, 3, 3) for node in nodes}
    sums = []
    for order in (nodes, nodes[::-1], [*nodes[5:], *nodes[:5]]):
        g = InProcessGrid(ClientApp(), len(nodes), {})
        strategy = strategy_with_neighbours()
        asked = sent(strategy, g, order, 1)
        strategy.aggregate_train(1, [reply(asked[n], [0, 1, 2], residuals[n]) for n in order])
        g.close()
        sums.append(strategy.neighbours.stats.arrays())
    for other in sums[1:]:
        for name, a in sums[0].items():
            np.testing.assert_array_equal(other[name], a)
