"""Aggregation by hand, and the item model's sparse step."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.common.params import ItemParams
from fedrec.common.schema import ItemUpdate
from fedrec.server.aggregate import aggregate
from fedrec.server.item_model import ItemModel


def update(ids, rows, counts):
    rows = np.asarray(rows, np.float32)
    return ItemUpdate(np.asarray(ids, np.int64), rows, rows[:, 0].copy(),
                      np.asarray(counts, np.float32))


A = update([1, 3], [[1.0, 0.0], [2.0, 2.0]], [1, 4])
B = update([3], [[4.0, 0.0]], [20])


@pytest.mark.parametrize(("weighting", "row3"), [
    ("uniform", [3.0, 1.0]),  # (2 + 4) / 2, (2 + 0) / 2
    ("capped", [(2 * 4 + 4 * 10) / 14, 2 * 4 / 14]),
])
def test_weighted_mean_per_item(weighting, row3):
    agg = aggregate([A, B], weighting, cap=10)
    assert agg.ids.tolist() == [1, 3]
    np.testing.assert_allclose(agg.rows[0], [1.0, 0.0])
    np.testing.assert_allclose(agg.rows[1], row3)
    np.testing.assert_allclose(agg.bias, agg.rows[:, 0])
    assert agg.devices.tolist() == [1, 2]


def test_order_of_devices_does_not_matter():
    rng = np.random.default_rng(0)
    ups = [update(rng.choice(20, 5, replace=False), rng.normal(size=(5, 3)),
                  rng.integers(1, 20, 5))
           for _ in range(10)]
    a, b = aggregate(ups, "capped"), aggregate(ups[::-1], "capped")
    np.testing.assert_allclose(a.rows, b.rows, rtol=1e-12)


def test_item_model_moves_only_aggregated_rows_and_bumps_versions():
    params = ItemParams.init(5, 2, np.random.default_rng(0))
    before = params.copy()
    model = ItemModel(params, "sgd", lr=0.5)
    model.apply(aggregate([A]), round_number=7)
    np.testing.assert_allclose(params.factors[1], before.factors[1] - 0.5 * np.array([1, 0]))
    np.testing.assert_array_equal(params.factors[[0, 2, 4]], before.factors[[0, 2, 4]])
    assert model.version.tolist() == [0, 7, 0, 7, 0]
    assert model.changed_since(0).tolist() == [1, 3]
    model.apply(aggregate([]), round_number=8)  # an empty round changes nothing
    assert model.version.tolist() == [0, 7, 0, 7, 0]


def test_the_biases_take_their_own_server_rule_and_the_settings_reach_it():
    """Adagrad on the factors, plain SGD at 0.5 on the biases: a row's factor step is
    lr · g / |g| per coordinate at first, its bias step 0.5 · g however many steps came
    before (a new listing's bias follows the evidence's size)."""
    from fedrec.common.settings import RunSettings
    from fedrec.server.app import new_model

    params = ItemParams.init(5, 2, np.random.default_rng(0))
    before = params.copy()
    model = ItemModel(params, "adagrad", 0.2, "sgd", 0.5)
    agg = aggregate([A])
    for r in (1, 2):
        model.apply(agg, round_number=r)
    rows = agg.ids
    g = agg.rows.astype(np.float32)
    moved = before.factors[rows] - params.factors[rows]
    expected = 0.2 * g / (np.abs(g) + 1e-8) + 0.2 * g / (np.sqrt(2 * g * g) + 1e-8)
    np.testing.assert_allclose(moved, expected, atol=1e-6)
    np.testing.assert_allclose(before.bias[rows] - params.bias[rows], 2 * 0.5 * agg.bias,
                               atol=1e-6)
    built = new_model(RunSettings(server_optimizer="adagrad", server_lr=0.2,
                                  server_bias_optimizer="sgd", server_bias_lr=0.5), 5, 0.0)
    assert (built.step_rule, built.lr, built.bias_step_rule, built.bias_lr) == (
        "adagrad", 0.2, "sgd", 0.5)
    same = new_model(RunSettings(server_optimizer="adam", server_lr=0.03), 5, 0.0)
    assert (same.bias_step_rule, same.bias_lr) == ("adam", 0.03)  # unset: the factors'


def test_the_count_rule_steps_a_row_by_the_devices_that_moved_it_in_every_round():
    """Count on the biases: a row moved by k devices in a round takes the k-th move's step,
    lr·h / (h + n + k − 1), counted by the server (the aggregate's devices), whatever a
    device claims in its counts."""
    from fedrec.common.settings import RunSettings
    from fedrec.server.app import new_model

    model = new_model(RunSettings(server_optimizer="sgd", server_lr=1.0, weighting="sum",
                                  server_bias_optimizer="count", server_bias_lr=2.0,
                                  server_step_halving=3.0, factors=2), 5, 0.0)
    b = np.array([0.5, -0.25], np.float32)
    one = ItemUpdate(np.array([1, 3]), np.zeros((2, 2), np.float32), b,
                     np.array([1.0, 1000.0], np.float32))  # counts claimed: ignored
    two = ItemUpdate(np.array([3]), np.zeros((1, 2), np.float32), b[:1],
                     np.ones(1, np.float32))
    before = model.params.bias.copy()
    model.apply(aggregate([one, two], "sum"), 1)  # row 1: 1 device; row 3: 2
    moved = before - model.params.bias
    np.testing.assert_allclose(moved[[1, 3]], [2 * 3 / 3 * 0.5, 2 * 3 / 4 * 0.25], rtol=1e-6)
    model.apply(aggregate([one], "sum"), 2)  # row 1's second move, row 3's third
    moved = before - model.params.bias - moved
    np.testing.assert_allclose(moved[[1, 3]], [2 * 3 / 4 * 0.5, 2 * 3 / 5 * -0.25],
                               rtol=1e-6)


def test_the_count_rule_counts_each_device_once_per_row_however_often_it_moves_it():
    """A device that moves every row in every round (a freezing attack: were each move
    counted, every row's step would shrink round after round) adds one to each row's count
    over the whole run, as one honest rating does; its moves are summed as before."""
    from fedrec.common.settings import RunSettings
    from fedrec.server.app import build_strategy

    s = RunSettings(protocol="explicit-80-20", server_optimizer="count", server_lr=2.0,
                    server_bias_optimizer="count", server_bias_lr=2.0, weighting="sum",
                    factors=2, defences="off")
    strategy = build_strategy(s, 6, 3.5, (1.0, 5.0))
    model = strategy.model
    every = np.arange(6)
    for r in range(1, 6):  # the same node, all rows, five rounds
        assert model.first_moves(99, every).all() == (r == 1)
    assert model.first_moves(100, np.array([2, 4])).all()
    assert model.first_moves(100, np.array([2, 3, 4])).tolist() == [False, True, False]


def test_a_diverging_server_step_is_undone_and_refused():
    params = ItemParams.init(5, 2, np.random.default_rng(0))
    before = params.copy()
    model = ItemModel(params, "sgd", lr=1e39)
    assert model.apply(aggregate([A]), round_number=3) is False  # float32 overflows
    np.testing.assert_array_equal(model.params.factors, before.factors)
    np.testing.assert_array_equal(model.params.bias, before.bias)
    assert model.refused_steps == 1 and not model.version.any()


def test_uncapped_count_weighting_is_refused_with_the_reason():
    """One device's claimed counts would outweigh every other device on a row."""
    from fedrec.common.settings import RunSettings

    with pytest.raises(ValueError, match=r"would outweigh every other device.*capped"):
        aggregate([A, B], "count")
    with pytest.raises(ValueError, match="weighting must be one of uniform, capped, sum"):
        RunSettings(weighting="count")


def test_a_claimed_count_weighs_at_most_the_cap():
    huge = update([3], [[-100.0, 0.0]], [1e30])
    agg = aggregate([A, huge], "capped", cap=10)
    np.testing.assert_allclose(agg.rows[1], [(2 * 4 - 100 * 10) / 14, 2 * 4 / 14])


def test_pooled_evaluation_sums_errors_and_averages_ranking_over_users():
    from fedrec.server.strategy import pool_evaluation

    rows = [{"sq-err": 4.0, "abs-err": 2.0, "num-examples": 4.0},
            {"sq-err": 5.0, "abs-err": 4.0, "num-examples": 5.0}]
    out = pool_evaluation(rows)
    assert out["rmse"] == pytest.approx(1.0) and out["mae"] == pytest.approx(6 / 9)
    assert out["num-examples"] == 9.0
    ranked = [{"num-users": 1.0, "ndcg@10": 0.5}, {"num-users": 1.0, "ndcg@10": 0.0},
              {"num-users": 0.0}]
    assert pool_evaluation(ranked) == {"ndcg@10": 0.25, "num-users": 2.0}


def test_pooled_figures_are_the_same_to_the_last_bit_in_any_arrival_order():
    """Replies pooled in an order of their own: shuffling them changes no pooled figure,
    not even in the last bit (a resumed run's evaluation must equal an unbroken one's)."""
    from fedrec.common.segments import pool_segments
    from fedrec.server.strategy import pool_evaluation

    rng = np.random.default_rng(5)
    rows = [{"num-users": 1.0, "hr@10": float(rng.random() < 0.5), "ndcg@10": float(x),
             "segment": float(rng.integers(0, 3)), "recs": 10.0,
             "tail-recs": float(rng.integers(0, 4)), "tail-hits": 0.0, "tail-test": 1.0}
            for x in rng.random(2000)]
    first = {**pool_evaluation(rows), **pool_segments(rows, 10)}
    plain = float(np.mean([r["ndcg@10"] for r in rows]))
    orders_differ = False
    for _ in range(20):
        shuffled = [rows[i] for i in rng.permutation(len(rows))]
        assert {**pool_evaluation(shuffled), **pool_segments(shuffled, 10)} == first
        orders_differ |= float(np.mean([r["ndcg@10"] for r in shuffled])) != plain
    assert orders_differ  # (arrival order does move a plain mean's last bits here)
    rmse_rows = [{"sq-err": float(x), "abs-err": float(x) ** 0.5, "num-examples": 3.0}
                 for x in rng.random(200) * 7]
    assert pool_evaluation(rmse_rows) == pool_evaluation(rmse_rows[::-1])


@pytest.mark.parametrize("defences", ["off", "clip,coordination"])
def test_a_device_moving_every_row_every_round_counts_once_per_row_in_the_round_fold(
        defences):
    """Through the strategy's fold (replies to messages it sent, with defences off or on):
    one node moving every row in five rounds and another moving two rows in round 1 leave
    each row's Count state at the number of distinct nodes that moved it, and the rows'
    steps at what that count gives (with every move counted, the flooding node's would
    have shrunk every step fivefold)."""
    from flwr.clientapp import ClientApp

    from fedrec.common.settings import RunSettings
    from fedrec.server.app import build_strategy
    from fedrec.simulations.engines.inprocess import InProcessGrid, TaskIdentity
    from tests.replies import sent, train_reply, update_arrays

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    k, n = 4, 6
    s = RunSettings(protocol="explicit-80-20", factors=k, weighting="sum",
                    server_optimizer="count", server_lr=1.0, server_bias_optimizer="count",
                    server_bias_lr=1.0, server_step_halving=2.0, defences=defences)
    strategy = build_strategy(s, n, 3.5, (1.0, 5.0))
    grid = InProcessGrid(ClientApp(), 2, {})
    for r in range(1, 6):
        nodes = [1001, 1002] if r == 1 else [1001]
        asked = sent(strategy, grid, nodes, r)
        replies = [train_reply(asked[1001], update_arrays(np.arange(n), k, 0.001),
                               {"num-examples": 1.0, "train-loss": 1.0})]
        if r == 1:
            replies.append(train_reply(asked[1002], update_arrays([2, 4], k, 0.001),
                                       {"num-examples": 1.0, "train-loss": 1.0}))
        _, metrics = strategy.aggregate_train(r, replies)
        assert metrics["accepted"] == len(replies)
    rule_n = strategy.model.state()[0]["factor-rule.n"]
    np.testing.assert_array_equal(rule_n, [1, 1, 2, 1, 2, 1])
    before = strategy.model.params.factors.copy()
    asked = sent(strategy, grid, [1001], 6)
    strategy.aggregate_train(6, [train_reply(asked[1001], update_arrays([0, 2], k, 0.001),
                                             {"num-examples": 1.0, "train-loss": 1.0})])
    moved = before - strategy.model.params.factors
    np.testing.assert_allclose(moved[[0, 2], 0], [0.001 * 2 / 3, 0.001 * 2 / 4], rtol=1e-4)
