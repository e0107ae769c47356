"""Shared device tables: a worker's devices keep each version once, rebuilt on demand, and
a device whose table differs from the one its worker recorded for that version fails."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Context, RecordDict

from fedrec.client.sync import HeldTable
from fedrec.simulations.engines.table_archive import SharedKeeper


def _context(node: int) -> Context:
    return Context(run_id=1, node_id=node, node_config={}, state=RecordDict(), run_config={})


def _table(version: int, factors: np.ndarray, bias: np.ndarray) -> HeldTable:
    return HeldTable(factors.copy(), bias.copy(), version,
                     {"listed": np.arange(len(bias), dtype=np.int64)})


def test_each_version_is_kept_once_and_rebuilt_bit_for_bit():
    rng = np.random.default_rng(0)
    keeper = SharedKeeper()
    f1, b1 = rng.normal(size=(20, 4)).astype(np.float32), np.zeros(20, np.float32)
    keeper.keep(_context(1), _table(1, f1, b1))
    f2, b2 = f1.copy(), b1.copy()
    f2[[3, 7]] += 1.0
    f2 = np.vstack([f2, rng.normal(size=(5, 4)).astype(np.float32)])  # listed since
    b2 = np.concatenate([b2, np.ones(5, np.float32)])
    keeper.keep(_context(2), _table(2, f2, b2))
    keeper.keep(_context(3), _table(2, f2, b2))  # the same version: checked, not stored
    assert len(keeper.archive.log) == 1 and keeper.archive.log[0][1].tolist() == [3, 7]
    old = keeper.load(_context(1))
    np.testing.assert_array_equal(old.factors, f1)
    np.testing.assert_array_equal(old.static["listed"], np.arange(20))
    new = keeper.load(_context(3))
    np.testing.assert_array_equal(new.factors, f2)
    np.testing.assert_array_equal(new.bias, b2)
    assert keeper.load(_context(9)) is None  # a device that holds nothing
    wrong = f2.copy()
    wrong[0, 0] += 1e-3
    with pytest.raises(AssertionError, match="differs from the server's version 2"):
        keeper.keep(_context(4), _table(2, wrong, b2))
    with pytest.raises(AssertionError, match="older than this worker's newest"):
        keeper.keep(_context(5), _table(1, f1, b1))
