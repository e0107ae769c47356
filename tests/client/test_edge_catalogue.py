"""The edge client over a shop's catalogue: SKUs in and out, several categories per item by
name, hidden items never recommended, the catalogue kept with the synced table."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.client import edge
from fedrec.client.edge import EdgeClient, UnknownCategoryError, UnknownItemError
from fedrec.client.store import DeviceStore
from fedrec.client.sync import HeldTable, StoreKeeper, store_state
from fedrec.common.catalogue import parse_catalogue

KEY = bytes(range(32))
SHOP = """sku,title,categories,listed,delisted
shoe-1,Trail shoe,shoes|outdoor,,
shoe-2,Road shoe,shoes,,
coat-1,Rain coat,outdoor|coats,,
coat-2,Old coat,coats,,2020-01-01
card-1,Gift card,,,
"""


def _table(n: int = 5, k: int = 3):
    rng = np.random.default_rng(0)
    return rng.normal(0, 1, (n, k)).astype(np.float32), np.arange(n, dtype=np.float32)


def test_events_are_recorded_by_sku_from_the_shops_file_before_any_sync(tmp_path):
    (tmp_path / "shop.csv").write_text(SHOP)
    with DeviceStore(tmp_path / "d.db", key=KEY, create=True) as store:
        app = EdgeClient(store)
        with pytest.raises(UnknownItemError, match="no catalogue yet"):
            app.record("shoe-1", "view")
        app.set_catalogue(tmp_path / "shop.csv")
        app.record("shoe-2", "purchase")
        assert store.events()["item"].tolist() == [1]  # its row, as the server numbers it
        with pytest.raises(UnknownItemError, match="'boot-9' is not in the catalogue"):
            app.record("boot-9", "view")
        assert len(store) == 1  # nothing stored for it
        top = app.recommend()
        assert top.skus == () and not len(top.items)  # no table yet: nothing to rank


def test_recommendations_come_as_skus_filtered_by_category_name_without_hidden_items(
        tmp_path):
    cat = parse_catalogue(SHOP, "shop.csv")
    factors, bias = _table()
    with DeviceStore(tmp_path / "d.db", key=KEY, create=True) as store:
        app = EdgeClient(store)
        store.put_many(edge.table_state(factors, bias, 0.0, None,
                                        edge.shop_catalogue_state(cat, now=1.7e9)))
        app.reload_table()
        top = app.recommend(k=10)
        assert set(top.skus) == {"shoe-1", "shoe-2", "coat-1", "card-1"}  # coat-2 delisted
        assert list(top.skus) == [cat.skus[r] for r in top.items]
        assert top.skus[0] == "card-1"  # the largest bias
        assert set(app.recommend(k=10, category="outdoor").skus) == {"shoe-1", "coat-1"}
        assert app.recommend(k=10, category="coats").skus == ("coat-1",)
        with pytest.raises(UnknownCategoryError, match="'boots' is not in the catalogue"):
            app.recommend(category="boots")
        app.record("card-1", "purchase")
        assert "card-1" not in app.recommend(k=10).skus


def test_the_store_keeps_the_catalogue_with_the_table_for_delta_sync(tmp_path):
    cat = parse_catalogue(SHOP, "shop.csv")
    factors, bias = _table()
    static = {"sku": cat.sku_array(), "categories": cat.category_matrix()}
    extras = {"hidden": np.array([3]), "category-names": np.array([b"shoes", b"outdoor",
                                                                   b"coats"])}
    table = HeldTable(factors, bias, 7, static, extras)
    with DeviceStore(tmp_path / "d.db", key=KEY, create=True) as store:
        store.put_many({**edge.table_state(factors, bias, 0.0, None,
                                           edge.catalogue_state(table.static, table.extras)),
                        **store_state(table)})
        held = StoreKeeper(store).load(None)
        assert held.version == 7
        assert held.static["sku"].tolist() == list(static["sku"])
        np.testing.assert_array_equal(held.static["categories"], static["categories"])
        app = EdgeClient(store)
        assert app.category_names == ("shoes", "outdoor", "coats")
        assert "coat-2" not in app.recommend(k=10).skus
