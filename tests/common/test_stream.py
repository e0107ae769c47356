"""The timeline: time order with stable ties, ticks, items in listing order; catalogue
growth that leaves old rows alone; content-based first rows."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedrec.common.params import ItemParams
from fedrec.common.stream import Timeline
from fedrec.server.aggregate import aggregate
from fedrec.server.catalogue import content_rows
from fedrec.server.item_model import ItemModel
from tests.conftest import make_interactions
from tests.server.test_aggregate import update


def test_events_are_in_time_order_and_ties_keep_file_order():
    data = make_interactions(user=[0, 1, 2, 0, 1], item=[3, 2, 1, 0, 3],
                             timestamp=[50, 10, 50, 10, 30])
    t = Timeline(data)
    assert t.data.timestamp.tolist() == [10, 10, 30, 50, 50]
    assert t.order.tolist() == [1, 3, 4, 0, 2]  # file rows 1 before 3, 0 before 2
    # Items renumbered by first appearance (ties by old id): 0 and 2 at t=10, 3 at 30, 1 at 50.
    assert t.data.items.raw.tolist() == [0, 2, 3, 1]
    raw_item = t.data.items.raw[t.data.item]
    assert raw_item.tolist() == [2, 0, 3, 3, 1]
    assert (np.diff(t.item_listed) >= 0).all()
    assert (t.item_listed[t.data.item] <= t.data.timestamp).all()
    assert t.user_events(0).tolist() == [1, 3]  # user 0's events, in time order


def test_listing_times_are_kept_but_never_after_a_first_event():
    data = make_interactions(user=[0, 0, 0], item=[0, 1, 2], timestamp=[100, 200, 300])
    data = replace(data, item_listed=np.array([150, 5, 400]))
    t = Timeline(data)
    # Item 0 is listed at its first event (100 < 150), item 2 at 300 (400 is too late).
    assert t.item_listed.tolist() == [5, 100, 300]
    assert t.data.items.raw.tolist() == [1, 0, 2]
    assert [t.listed_by(now) for now in (4, 5, 100, 299, 300)] == [0, 1, 2, 2, 3]


def test_ticks_by_events_and_by_seconds_cover_the_timeline_once():
    stamps = [0, 5, 5, 12, 40, 41, 99]
    t = Timeline(make_interactions(user=[0] * 7, item=list(range(7)), timestamp=stamps))
    by_events = t.ticks(events=3)
    assert [(k.start, k.stop, k.now) for k in by_events] == [(0, 3, 5), (3, 6, 41), (6, 7, 99)]
    by_time = t.ticks(seconds=10)  # [0,10) [10,20) [40,50) [90,100); empty spans skipped
    assert [(k.start, k.stop) for k in by_time] == [(0, 3), (3, 4), (4, 6), (6, 7)]
    assert [k.index for k in by_time] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="exactly one"):
        t.ticks()


def test_ml100k_replays_in_stable_time_order(ml100k):
    t = Timeline(ml100k)
    assert len(t) == 100_000
    assert (np.diff(t.data.timestamp) >= 0).all()
    same = np.flatnonzero(np.diff(t.data.timestamp) == 0)
    assert len(same) and (t.order[same + 1] > t.order[same]).all()  # ties in file order


@pytest.mark.parametrize("rule", ["sgd", "adam", "adagrad", "count"])
def test_catalogue_growth_keeps_old_rows_versions_and_optimiser_state(rule):
    params = ItemParams.init(4, 3, np.random.default_rng(0))
    model = ItemModel(params, rule, lr=0.1)
    model.apply(aggregate([update([1, 2], np.ones((2, 3)), [1, 1])]), round_number=1)
    before = params.factors.copy(), params.bias.copy(), model.version.copy()
    model.grow(np.full((2, 3), 0.5), np.array([0.1, 0.2]), round_number=0)
    assert model.n_items == 6
    np.testing.assert_array_equal(model.params.factors[:4], before[0])  # bit-identical
    np.testing.assert_array_equal(model.params.bias[:4], before[1])
    assert model.version.tolist() == [*before[2].tolist(), 0, 0]
    model.apply(aggregate([update([1, 5], np.ones((2, 3)), [1, 1])]), round_number=2)
    moved = model.params.factors
    np.testing.assert_array_equal(moved[[0, 2, 3, 4]],
                                  np.vstack([before[0][[0, 2, 3]], np.full(3, 0.5)]))
    assert model.version.tolist() == [0, 2, 1, 0, 0, 2]
    with pytest.raises(ValueError, match="new rows"):
        model.grow(np.zeros((1, 4)), np.zeros(1), round_number=0)


def test_content_rows_recover_how_rows_differ_with_features():
    rng = np.random.default_rng(1)
    feats = (rng.random((60, 5)) < 0.4).astype(np.float32)
    w = rng.normal(size=(5, 4))
    rows = feats @ w + np.array([0.3, -0.2, 0.1, 0.5])  # factors (3) and bias (1)
    trained = np.ones(50, dtype=bool)  # the last ten rows are the "new" items
    got = content_rows(feats[:50], trained, rows[:50, :3].astype(np.float32),
                       rows[:50, 3].astype(np.float32), feats[50:], reg=1e-6)
    # Factors: the content-explained deviation from the trained items' average row.
    want = rows[50:, :3] - rows[:50, :3].mean(axis=0)
    np.testing.assert_allclose(got[0], want, atol=1e-3)
    np.testing.assert_allclose(got[1], rows[50:, 3], atol=1e-3)  # bias: the full prediction
    _, around_zero = content_rows(feats[:50], trained, rows[:50, :3], rows[:50, 3],
                                  feats[50:], reg=1e-6, with_bias=False)
    np.testing.assert_allclose(around_zero, rows[50:, 3] - rows[:50, 3].mean(), atol=1e-3)
    assert content_rows(feats[:5], np.zeros(5, bool), rows[:5, :3], rows[:5, 3],
                        feats[5:6]) is None  # nothing trained yet: no fit
