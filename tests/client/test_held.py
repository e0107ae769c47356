"""What a secagg device holds back until its rows' block comes up (client.held)."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.client.held import Held
from fedrec.common.schema import ItemUpdate
from fedrec.common.secagg import Block


def _update(ids, k=3, value=1.0, count=1.0):
    ids = np.asarray(ids, np.int64)
    return ItemUpdate(ids, np.full((len(ids), k), value, np.float32),
                      np.full(len(ids), value, np.float32), np.full(len(ids), count, np.float32))


def test_held_rows_are_the_mean_of_their_updates_and_leave_when_their_block_comes():
    held = Held.empty(3).add(_update([1, 5, 8], value=1.0)).add(_update([5, 9], value=3.0))
    assert held.update.ids.tolist() == [1, 5, 8, 9]
    np.testing.assert_allclose(held.update.rows[:, 0], [1.0, 2.0, 1.0, 3.0])  # 5: (1+3)/2
    assert held.update.counts.tolist() == [1, 2, 1, 1]
    assert held.merged.tolist() == [1, 2, 1, 1]
    # the mean again after a third update: (1 + 3 + 5) / 3, not (2 + 5) / 2
    third = held.add(_update([5], value=5.0))
    assert third.update.rows[1, 0] == pytest.approx(3.0)
    sent, kept = held.take(Block(4, 5, 10))  # rows 4..8
    assert sent.ids.tolist() == [5, 8] and kept.update.ids.tolist() == [1, 9]
    assert len(sent.ids) + len(kept) == len(held)


def test_held_rows_survive_their_array_and_damage_is_dropped_not_sent():
    held = Held.empty(3).add(_update([2, 4], value=0.5, count=3.0)).add(_update([4]))
    back = Held.from_array(held.to_array(), 3)
    for name in ("ids", "rows", "bias", "counts"):
        np.testing.assert_array_equal(getattr(back.update, name), getattr(held.update, name))
    np.testing.assert_array_equal(back.merged, held.merged)
    assert len(Held.from_array(held.to_array(), 4)) == 0  # another table shape
    assert len(Held.from_array(None, 3)) == 0
    bad = held.to_array()
    bad[0, 4] = np.nan  # a damaged row is dropped, the rest kept
    assert Held.from_array(bad, 3).update.ids.tolist() == [4]
    twice = np.vstack([held.to_array(), held.to_array()])
    assert len(Held.from_array(twice, 3)) == 0
    assert len(Held.from_array(held.to_array()[:, :5], 3)) == 0
