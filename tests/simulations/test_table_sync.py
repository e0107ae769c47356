"""Delta sync with a growing catalogue, property-tested: whatever rows move and however the
table grows between a device's syncs, the device patches its table to exactly the server's;
and the simulation's shared table archive rebuilds every version it sent."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Context, RecordDict
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrec.client.sync import StaleTableError, StateKeeper, synced_table
from fedrec.common.params import ItemParams
from fedrec.common.schema import TrainConfig
from fedrec.server.aggregate import Aggregate
from fedrec.server.item_model import ItemModel
from fedrec.server.strategy import FedRec
from fedrec.simulations.engines.table_archive import ArchiveKeeper, TableArchive

K = 3


def _strategy(n: int, seed: int = 0, threshold: float = 0.0) -> FedRec:
    rng = np.random.default_rng(seed)
    params = ItemParams(rng.normal(size=(n, K)).astype(np.float32),
                        rng.normal(size=n).astype(np.float32), 0.0)
    strategy = FedRec(ItemModel(params), TrainConfig(), sync="delta",
                      sync_threshold=threshold)
    strategy.static["listed"] = np.arange(n, dtype=np.int64) * 10
    return strategy


def _context(node: int) -> Context:
    return Context(run_id=1, node_id=node, node_config={}, state=RecordDict(), run_config={})


def _round(strategy: FedRec, rng: np.random.Generator, r: int, moved: int, grown: int,
           scale: float = 1.0) -> None:
    """Round ``r``: grow by ``grown`` rows, then move ``moved`` random rows (as the strategy
    does after folding a round: apply, then publish)."""
    model = strategy.model
    if grown:
        model.grow(rng.normal(size=(grown, K)), rng.normal(size=grown), 0)
        n = model.n_items
        strategy.static["listed"] = np.arange(n, dtype=np.int64) * 10
    ids = np.unique(rng.integers(0, model.n_items, size=moved))
    model.apply(Aggregate(ids, scale * rng.normal(size=(len(ids), K)),
                          scale * rng.normal(size=len(ids)), np.ones(len(ids)),
                          np.ones(len(ids))), r)
    strategy.published.refresh(ids, r)


def _assert_synced(table, strategy: FedRec) -> None:
    p = strategy.published
    np.testing.assert_array_equal(table.factors, p.factors)
    np.testing.assert_array_equal(table.bias, p.bias)
    np.testing.assert_array_equal(table.static["listed"], strategy.static["listed"])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 12), st.booleans(),
                          st.sampled_from([0.01, 0.3, 3.0])), min_size=1, max_size=8),
       st.integers(0, 2**16), st.sampled_from([0.0, 0.05]))
def test_a_device_patches_its_table_to_the_servers_whatever_moved_or_grew(rounds, seed,
                                                                          threshold):
    """Each round the table grows and rows move (by small to large steps); the device syncs
    only on some rounds (True), from whatever version it acknowledged last, and ends with
    exactly the published table (the model itself with no threshold)."""
    rng = np.random.default_rng(seed)
    strategy = _strategy(200, seed, threshold)
    context = _context(7)
    node = 7
    _assert_synced(synced_table(strategy.table_record(None), context), strategy)
    strategy.acked[node] = (strategy.model.round, strategy.model.n_items)
    for r, (moved, grown, syncs, scale) in enumerate(rounds, start=1):
        _round(strategy, rng, r, moved, grown, scale)
        if not threshold:
            np.testing.assert_array_equal(strategy.published.factors,
                                          strategy.model.params.factors)
        if syncs:
            _assert_synced(synced_table(strategy.table_record(strategy.acked[node]), context),
                           strategy)
            strategy.acked[node] = (strategy.model.round, strategy.model.n_items)


def test_a_delta_pays_only_for_what_moved_or_was_listed():
    strategy = _strategy(5_000)
    rng = np.random.default_rng(1)
    held = (0, 5_000)
    whole = sum(len(a.data) for a in strategy.table_record(None).values())
    _round(strategy, rng, 1, moved=40, grown=20)
    delta = strategy.table_record(held)
    size = sum(len(a.data) for a in delta.values())
    assert size < 0.03 * whole
    ids = delta["ids"].numpy()
    assert set(range(5_000, 5_020)) <= set(ids.tolist()) and len(ids) <= 60


def test_a_device_newer_than_the_base_still_applies_the_delta():
    """A reply lost on the way back: the server sends from the version it last heard of,
    and the device, which holds a newer one, can still apply it (a superset of changes)."""
    strategy = _strategy(300)
    rng = np.random.default_rng(2)
    context = _context(3)
    synced_table(strategy.table_record(None), context)
    _round(strategy, rng, 1, 20, 5)
    synced_table(strategy.table_record((0, 300)), context)  # reply lost: not acknowledged
    _round(strategy, rng, 2, 20, 5)
    _assert_synced(synced_table(strategy.table_record((0, 300)), context), strategy)


def test_a_device_older_than_the_base_or_without_a_table_is_refused():
    strategy = _strategy(300)
    rng = np.random.default_rng(3)
    context = _context(3)
    synced_table(strategy.table_record(None), context)  # holds version 0
    _round(strategy, rng, 1, 20, 5)
    _round(strategy, rng, 2, 20, 5)
    with pytest.raises(StaleTableError, match="whole table"):
        synced_table(strategy.table_record((1, 305)), context)
    with pytest.raises(StaleTableError, match="no table"):
        synced_table(strategy.table_record((1, 305)), _context(4))
    assert StateKeeper().load(_context(4)) is None


def test_the_archive_rebuilds_every_version_it_sent():
    strategy = _strategy(100)
    archive = TableArchive()
    rng = np.random.default_rng(4)
    snapshots = {}
    for r in range(1, 12):
        archive.sent(strategy.published, strategy.static)
        m = strategy.model
        snapshots[(m.round, m.n_items)] = (m.params.factors.copy(), m.params.bias.copy())
        _round(strategy, rng, r, moved=15, grown=int(rng.integers(0, 6)))
    for (version, n), (factors, bias) in snapshots.items():
        table = archive.table(version, n)
        np.testing.assert_array_equal(table.factors, factors)
        np.testing.assert_array_equal(table.bias, bias)
        assert len(table.static["listed"]) == n
    with pytest.raises(KeyError):
        archive.table(99, 100)


def test_the_archive_keeper_refuses_a_table_that_is_not_the_servers():
    strategy = _strategy(50)
    archive = TableArchive()
    archive.sent(strategy.published, strategy.static)
    keeper = ArchiveKeeper(archive)
    context = _context(9)
    table = synced_table(strategy.table_record(None), context, keeper)
    assert keeper.held[9] == (0, 50) and keeper.checked == 1
    loaded = keeper.load(context)
    np.testing.assert_array_equal(loaded.factors, table.factors)
    loaded.factors[3, 0] += 1.0
    with pytest.raises(AssertionError, match="differs"):
        keeper.keep(context, loaded)


def test_with_a_threshold_a_row_is_published_once_it_drifted_enough():
    """Small nudges stay on the server until together they pass the threshold; a large move
    goes out at once; the model keeps every update either way."""
    strategy = _strategy(100, threshold=0.1)
    published = strategy.published
    model = strategy.model
    start = model.params.factors[5].copy()
    norm = np.linalg.norm(np.r_[start, model.params.bias[5]])
    nudge = np.zeros((1, K))
    nudge[0, 0] = -0.04 * norm  # (a server step of lr 1 moves a row by minus its update)
    for r in (1, 2):
        model.apply(Aggregate(np.array([5]), nudge, np.zeros(1), np.ones(1), np.ones(1)), r)
        published.refresh(np.array([5]), r)
        assert published.changed_since(0).tolist() == []  # 4 %, then 8 %: held back
        np.testing.assert_array_equal(published.factors[5], start)
    model.apply(Aggregate(np.array([5]), nudge, np.zeros(1), np.ones(1), np.ones(1)), 3)
    published.refresh(np.array([5]), 3)  # 12 %: published
    assert published.changed_since(0).tolist() == [5]
    np.testing.assert_array_equal(published.factors[5], model.params.factors[5])
    assert published.held_back == 2 and published.published_rows == 1
    big = np.full((1, K), -norm)
    model.apply(Aggregate(np.array([9]), big, np.zeros(1), np.ones(1), np.ones(1)), 4)
    published.refresh(np.array([9]), 4)
    assert published.changed_since(3).tolist() == [9]
