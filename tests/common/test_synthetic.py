"""The synthetic shop has the properties it promises."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.common.data.interactions import EventType
from fedrec.common.data.synthetic import DAY, START, ShopConfig, generate_shop

CFG = ShopConfig(n_users=800, n_items=600, n_events=40_000, days=60, seed=5)


@pytest.fixture(scope="module")
def shop():
    return generate_shop(CFG)


def test_seeded_and_deterministic(shop):
    again = generate_shop(CFG)
    for col in ("user", "item", "value", "timestamp", "event"):
        np.testing.assert_array_equal(getattr(shop, col), getattr(again, col))
    other = generate_shop(ShopConfig(**{**CFG.__dict__, "seed": 6}))
    assert not np.array_equal(shop.item[:100], other.item[:100])


def test_size_is_close_to_the_target(shop):
    assert abs(len(shop) - CFG.n_events) / CFG.n_events < 0.05
    assert shop.n_users == CFG.n_users and shop.n_items == CFG.n_items


def test_time_ordered_and_items_only_after_listing(shop):
    assert (np.diff(shop.timestamp) >= 0).all()
    assert (shop.timestamp >= shop.item_listed[shop.item]).all()
    assert (np.diff(shop.item_listed) >= 0).all()  # item ids follow listing order
    new = shop.item_listed > START
    assert abs(new.mean() - CFG.new_item_share) < 0.01
    # new items do get bought: the catalogue really grows while the shop runs
    assert np.isin(shop.item[shop.event == EventType.PURCHASE], np.flatnonzero(new)).any()


def test_the_funnel_orders_events_per_user_and_item(shop):
    kinds = np.bincount(shop.event, minlength=4)
    assert kinds[EventType.VIEW] > kinds[EventType.CART] > kinds[EventType.PURCHASE] > 0
    assert 0 < kinds[EventType.RATING] <= kinds[EventType.PURCHASE]
    key = shop.user.astype(np.int64) * shop.n_items + shop.item
    first_view = {}
    for k, e, t in zip(key.tolist(), shop.event.tolist(), shop.timestamp.tolist(), strict=True):
        if e == EventType.VIEW:
            first_view.setdefault(k, t)
        else:
            assert k in first_view and first_view[k] < t  # nothing is bought unseen
    ratings = shop.value[shop.event == EventType.RATING]
    assert set(np.unique(ratings).tolist()) <= {1, 2, 3, 4, 5}
    assert len(np.unique(ratings)) >= 4


def test_activity_is_imbalanced_and_popularity_is_heavy_tailed(shop):
    per_user = np.bincount(shop.user, minlength=shop.n_users)
    assert per_user.min() >= 1
    top_tenth = np.sort(per_user)[-len(per_user) // 10:].sum() / per_user.sum()
    assert top_tenth > 0.3  # 10% of users make over 30% of the events
    assert per_user.max() > 20 * np.median(per_user)
    per_item = np.sort(np.bincount(shop.item, minlength=shop.n_items))[::-1]
    assert per_item[:6].sum() / per_item.sum() > 0.1  # top 1% of items: over 10% of events


def _late_share(data):
    first = np.full(data.n_users, np.iinfo(np.int64).max)
    np.minimum.at(first, data.user, data.timestamp)
    return (first > START + 30 * DAY).mean()


def test_users_join_over_time(shop):
    everyone_at_start = generate_shop(ShopConfig(**{**CFG.__dict__, "late_user_share": 0.0}))
    assert _late_share(shop) > 2 * _late_share(everyone_at_start)


def test_categories_are_item_features(shop):
    f = shop.item_features
    assert f.matrix.shape == (CFG.n_items, CFG.n_categories)
    np.testing.assert_array_equal(f.matrix.sum(axis=1), 1)


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="new_item_share must be in"):
        ShopConfig(new_item_share=1.5)
    with pytest.raises(ValueError, match="n_events"):
        ShopConfig(n_users=100, n_events=10)
