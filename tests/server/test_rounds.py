"""The server's round loop (:mod:`fedrec.server.rounds`): one loop for a deployment and a
replay, the same rounds as Flower's own strategy loop, and the timed catalogue a replay
grows the table from."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
from flwr.common.logger import FLOWER_LOGGER

from fedrec.client.app import app as client_app
from fedrec.common import records
from fedrec.common.params import ItemParams
from fedrec.common.partition import simulated_partitions
from fedrec.common.settings import RunSettings
from fedrec.server.app import build_strategy
from fedrec.server.item_model import ItemModel
from fedrec.server.listings import TimedListings, grow_table
from fedrec.server.rounds import RoundLoop
from fedrec.simulations.engines.inprocess import InProcessGrid
from tests.conftest import shop_csv_file

FLOWER_LOGGER.setLevel(logging.WARNING)


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    return shop_csv_file(tmp_path_factory, n_users=40, n_items=60, n_events=1_500, seed=3)


def _settings(shop, **kw) -> RunSettings:
    return RunSettings(dataset=f"csv:{shop}", protocol="implicit-80-20", num_rounds=3,
                       evaluate_every=3, factors=6, local_epochs=1, negatives=2,
                       fraction_train=0.5, **kw)


def _strategy_and_grid(s: RunSettings, observer=None):
    parts = simulated_partitions(s.dataset, s.protocol, 0, "")
    grid = InProcessGrid(client_app, parts.n_users, s.to_run_config(), observer=observer)
    return build_strategy(s, parts.n_items, 0.0, parts.rating_range), grid


@pytest.mark.parametrize("sync", ["full", "delta"])
def test_the_loop_trains_exactly_what_flowers_own_strategy_loop_trains(shop, sync):
    """A deployment runs :meth:`RoundLoop.run`; Flower's ``Strategy.start`` over the same
    strategy (``configure_train`` → ``aggregate_train`` → evaluation) gives the same
    table bit for bit and the same history: one round, wherever it is driven from."""
    s = _settings(shop, sync=sync)
    tables, histories = [], []
    for how in ("loop", "flower"):
        random.seed(s.seed)  # (FedAvg's sampling draws from `random`)
        strategy, grid = _strategy_and_grid(s)
        if how == "loop":
            RoundLoop(strategy, grid, 60).run(s.num_rounds)
        else:
            strategy.start(grid=grid, initial_arrays=strategy.items_record(),
                           num_rounds=s.num_rounds, timeout=60)
        grid.close()
        tables.append(strategy.model.params.factors.copy())
        histories.append(strategy.history)
    assert np.array_equal(tables[0], tables[1])
    assert histories[0] == histories[1]
    train = [r["train"] for r in histories[0] if "train" in r]
    assert len(train) == 3 and all(t["accepted"] == 20 for t in train)  # half of 40
    assert any("evaluate" in r for r in histories[0])


def test_a_driver_names_the_devices_and_adds_its_own_config_keys(shop):
    seen = []
    s = _settings(shop)
    strategy, grid = _strategy_and_grid(s, observer=lambda d, m: seen.append((d, m)))
    nodes = list(grid.get_node_ids())[:3]
    summary = RoundLoop(strategy, grid, 60).train(1, nodes, {"seed": 1234})
    grid.close()
    asked = [m for d, m in seen if d == "to-device"]
    assert sorted(m.metadata.dst_node_id for m in asked) == sorted(nodes)
    assert all(m.content[records.CONFIG]["seed"] == 1234 for m in asked)
    assert all(m.content[records.CONFIG]["server-round"] == 1 for m in asked)
    assert summary["accepted"] == 3 and summary["full-table-bytes"] > 0


def test_a_resumed_run_counts_its_rounds_on_from_the_checkpoint(shop):
    s = _settings(shop)
    seen = []
    strategy, grid = _strategy_and_grid(s, observer=lambda d, m: seen.append((d, m)))
    strategy.round_offset = 5
    RoundLoop(strategy, grid, 60).train(1)
    grid.close()
    asked = [m for d, m in seen if d == "to-device"]
    assert asked and all(m.content[records.CONFIG]["server-round"] == 6 for m in asked)
    assert strategy.history[-1]["round"] == 6


def _model(n: int, k: int = 4) -> ItemModel:
    return ItemModel(ItemParams.init(n, k, np.random.default_rng(0), 0.1), "sgd", 1.0)


def test_a_timed_catalogue_grows_the_table_to_the_items_listed_by_its_clock():
    listed = np.array([0, 0, 10, 20, 20, 30])
    now = [5.0]
    timed = TimedListings(listed, None, explicit=False, clock=lambda: now[0],
                          rng=np.random.default_rng(1))
    model, static = _model(2), {}
    before = model.params.factors.copy()
    timed.refresh(model, static, 1)
    assert model.n_items == 2 and static["listed"].tolist() == [0, 0]
    now[0] = 20.0
    timed.refresh(model, static, 2)
    assert model.n_items == 5 and static["listed"].tolist() == [0, 0, 10, 20, 20]
    assert np.array_equal(model.params.factors[:2], before)  # old rows untouched
    assert model.version[2:].tolist() == [0, 0, 0]  # new rows: not trained yet
    assert timed.summary() == {"items": 5.0, "listed-new": 3.0} and not len(timed.hidden)
    now[0] = 99.0
    timed.refresh(model, static, 3)
    assert model.n_items == 6
    with pytest.raises(ValueError, match="order of listing"):
        TimedListings(np.array([5, 1]), None, explicit=False, clock=lambda: 0.0,
                      rng=np.random.default_rng(0))


def test_content_starts_are_fitted_on_trained_rows_only():
    """A row grown from content has version 0 (untrained), so the next growth's ridge fit
    leaves it out: a content start is never fitted on earlier content starts."""
    rng = np.random.default_rng(0)
    content = rng.normal(size=(8, 3))
    model = _model(4)
    model.version[:] = 1  # four rows devices have trained
    grow_table(model, 6, content, False, rng, 0.1)
    assert model.version.tolist() == [1, 1, 1, 1, 0, 0]
    grown = model.params.factors[4:6].copy()
    # Move the two content starts far away: the next fit must not see them.
    model.params.factors[4:6] = 1e3
    grow_table(model, 8, content, False, rng, 0.1)
    again = _model(4)
    again.params.factors[:] = model.params.factors[:4]
    again.version[:] = 1
    grow_table(again, 8, np.concatenate([content[:4], content[6:]]), False, rng, 0.1)
    assert np.allclose(model.params.factors[6:], again.params.factors[4:])
    assert grown.shape == (2, 4)
