"""The public negative pool end to end on the settings and the round config: where it may
be used (and where it is refused by name), the server naming each round's pool by its seed,
and a device refusing a pooled round that names none."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from flwr.clientapp import ClientApp

from fedrec.client.app import round_pool
from fedrec.common.negatives import negative_pool, pool_seed
from fedrec.common.privacy import for_mode
from fedrec.common.round_config import RoundConfig
from fedrec.common.schema import ItemUpdate, TrainConfig
from fedrec.common.settings import RunSettings
from fedrec.server.aggregate import aggregate
from fedrec.server.app import build_strategy
from fedrec.simulations.engines.inprocess import InProcessGrid, TaskIdentity
from tests.replies import sent, train_reply, update_arrays

POOLED = RunSettings(negative_pool=0.05, negative_pool_rounds=2)


@pytest.mark.parametrize("mode", ["plain", "dp"])
def test_the_sparse_modes_take_a_pool(mode) -> None:
    assert for_mode(POOLED, mode, negative_pool=0.05).train_config().negative_pool == 0.05


@pytest.mark.parametrize("mode", ["decoy", "decoy+dp", "secagg", "secagg+dp"])
def test_modes_that_cannot_honour_a_pool_refuse_it_by_name(mode) -> None:
    base = for_mode(RunSettings(), mode, **({"dp_epsilon": 8.0} if mode == "secagg+dp" else {}))
    with pytest.raises(ValueError, match="negative-pool is not supported with privacy="):
        replace(base, negative_pool=0.05)
    with pytest.raises(ValueError, match="negative-pool-rounds is not supported"):
        replace(base, negative_pool_rounds=3)


def test_bad_pool_settings_are_refused_by_name() -> None:
    for bad in (0.0, 1.5, -1.0):
        with pytest.raises(ValueError, match="negative_pool must be a number in"):
            RunSettings(negative_pool=bad)
    with pytest.raises(ValueError, match="negative_pool_rounds must be >= 1"):
        RunSettings(negative_pool_rounds=0)
    with pytest.raises(ValueError, match="negative_pool applies to implicit feedback"):
        RunSettings(protocol="explicit-80-20", negative_pool=0.1)
    with pytest.raises(ValueError, match="expected a number"):
        RunSettings.from_run_config({"negative-pool": "some"})


def test_the_server_names_each_rounds_pool_and_a_device_draws_the_same_one() -> None:
    strategy = build_strategy(POOLED, 5_000, 0.0, (-np.inf, np.inf))
    seeds = []
    for r in (1, 2, 3):
        config = dict(strategy.round_config(r))
        rc = RoundConfig.parse({k: v for k, v in config.items()
                                if k not in TrainConfig.__dataclass_fields__})
        assert rc.negative_pool_seed == pool_seed(POOLED.seed, r, 2)
        pool = round_pool(POOLED.train_config(), rc, 5_000)
        np.testing.assert_array_equal(pool, negative_pool(0.05, rc.negative_pool_seed, 5_000))
        seeds.append(rc.negative_pool_seed)
    assert seeds[0] == seeds[1] != seeds[2]  # two rounds a pool
    # Without a pool the round says nothing of one, and a device draws from everything.
    plain = build_strategy(RunSettings(), 5_000, 0.0, (-np.inf, np.inf))
    assert "negative-pool-seed" not in dict(plain.round_config(1))
    assert round_pool(RunSettings().train_config(), RoundConfig(), 5_000) is None


def test_a_device_told_to_use_a_pool_but_not_which_refuses_the_round() -> None:
    with pytest.raises(ValueError, match="this round needs 'negative-pool-seed'"):
        round_pool(POOLED.train_config(), RoundConfig(seed=0, server_round=1), 5_000)


@pytest.mark.parametrize("bad", ["0.1", None, [0.1], True, float("nan"), float("inf"), 0.0,
                                 -0.5, 2.0])
def test_a_server_sending_a_malformed_pool_share_is_refused_by_name(bad) -> None:
    """The share comes from the server with the round's train config: a device refuses a
    value that is not a number in (0, 1] by the field's name, before it trains."""
    values = {**POOLED.train_config().to_dict(), "negative_pool": bad}
    with pytest.raises(ValueError, match="negative_pool must be a number in"):
        TrainConfig.from_dict(values)


def test_a_sum_fold_averages_the_pool_rows_and_sums_the_rest() -> None:
    """Streams fold devices' steps by ``sum``; a round's pool rows take every device's
    negatives at once, so the server folds those rows by their mean over the devices that
    moved them (each step was taken against the same stale row) and every other row by its
    sum, as before. Without a pool, or with a weighting that averages anyway, nothing
    changes."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    n_items = 2_000
    settings = RunSettings(factors=8, negative_pool=0.05, weighting="sum", seed=3,
                           defences="", server_optimizer="sgd", server_lr=1.0)
    strategy = build_strategy(settings, n_items, 0.0, (-np.inf, np.inf))
    pool = strategy.round_pool(1)
    np.testing.assert_array_equal(pool, negative_pool(0.05, pool_seed(3, 1, 1), n_items))
    own = np.setdiff1d(np.arange(n_items), pool)[:1]  # a row outside the pool
    ids = np.sort(np.r_[own, pool[:2]])
    grid = InProcessGrid(ClientApp(), 4, {})
    asked = sent(strategy, grid, [1001, 1002, 1003])
    before = strategy.model.params.factors.copy()
    steps = (0.01, 0.02, 0.06)
    replies = [train_reply(asked[node], update_arrays(ids, 8, step))
               for node, step in zip((1001, 1002, 1003), steps, strict=True)]
    _, metrics = strategy.aggregate_train(1, replies)
    assert metrics["accepted"] == 3
    moved = before - strategy.model.params.factors  # the server's SGD step of lr 1
    np.testing.assert_allclose(moved[own], sum(steps), rtol=1e-5)
    np.testing.assert_allclose(moved[pool[:2]], sum(steps) / 3, rtol=1e-5)
    untouched = np.setdiff1d(np.arange(n_items), ids)
    np.testing.assert_array_equal(moved[untouched], 0.0)
    # The fold itself: only the named rows become means.
    updates = [ItemUpdate(ids, np.full((3, 8), v, np.float32), np.zeros(3, np.float32),
                          np.ones(3, np.float32)) for v in steps]
    summed = aggregate(updates, "sum")
    mean = summed.averaged(pool)
    np.testing.assert_allclose(mean.rows[np.isin(ids, pool)], sum(steps) / 3, rtol=1e-6)
    np.testing.assert_array_equal(mean.rows[~np.isin(ids, pool)],
                                  summed.rows[~np.isin(ids, pool)])
    assert build_strategy(RunSettings(), n_items, 0.0, (-np.inf, np.inf)).round_pool(1) is None
