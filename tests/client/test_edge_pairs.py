"""The embeddable client with the pairs model: it recommends by the device's own items and
the synced table, shows items bought together on a product page, keeps the model across
sessions, and refuses a damaged table by name."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.client.edge import MODEL, PAIRS_COUNTS, PAIRS_META, EdgeClient
from fedrec.client.store import DeviceStore
from fedrec.common import pairs

KEY = bytes(range(32))


def two_baskets(n: int = 30) -> np.ndarray:
    """Customers buy within one of two baskets: items 0–9 together, or 10–19; items 20+
    are bought alone now and then."""
    rng = np.random.default_rng(0)
    sets = []
    for d in range(80):
        basket = np.arange(10) if d % 2 else np.arange(10, 20)
        sets.append(np.unique(np.r_[rng.choice(basket, 4, replace=False),
                                    rng.integers(20, n, 1)]))
    return pairs.PairCounts.of_sets(sets, n).counts


def test_recommendations_follow_the_devices_items_through_the_pairs(tmp_path):
    counts = two_baskets()
    with DeviceStore(tmp_path / "d.db", key=KEY, create=True) as store:
        app = EdgeClient(store)
        assert len(app.recommend().items) == 0  # nothing synced yet
        app.set_pairs(counts, weight=0.5, cap=200)
        for item in (2, 5):
            app.record(item, "purchase")
        top = app.recommend(k=5)
        assert set(top.items) <= set(range(10)) - {2, 5}
        want = pairs.scores(counts, np.array([2, 5]), 0.5)
        want[[2, 5]] = -np.inf
        np.testing.assert_array_equal(top.items, np.argsort(-want, kind="stable")[:5])
        for item in (11, 12, 13, 14, 15):  # the other basket, more recently
            app.record(item, "view")
        top = app.recommend(k=3, exclude=("purchase", "view"))
        assert set(top.items) <= set(range(10, 20))


def test_similar_items_are_those_taken_together(tmp_path):
    counts = two_baskets()
    with DeviceStore(tmp_path / "d.db", key=KEY, create=True) as store:
        app = EdgeClient(store)
        app.set_pairs(counts, weight=1.0)
        like = app.similar(3, k=5)
        assert set(like.items) <= set(range(10)) - {3}
        assert (np.diff(like.scores) <= 0).all()
        assert 3 not in app.similar(3, k=29).items


def test_the_pairs_model_is_kept_across_sessions_and_replaces_factors(tmp_path):
    counts = two_baskets()
    with DeviceStore(tmp_path / "d.db", key=KEY, create=True) as store:
        app = EdgeClient(store)
        app.set_table(np.ones((30, 4), np.float32), np.zeros(30, np.float32))
        assert app.model == "mf"
        app.set_pairs(counts, weight=2.0, cap=50)
        app.record(4, "purchase")
    with DeviceStore(tmp_path / "d.db", key=KEY) as store:
        again = EdgeClient(store)
        assert again.model == "pairs" and again.n_items == 30 and again.factors is None
        assert again.pairs[1:] == (2.0, 50)
        assert set(again.recommend(k=4).items) <= set(range(10))
        # a table synced later switches back
        again.set_table(np.ones((30, 4), np.float32), np.zeros(30, np.float32))
        assert again.model == "mf" and again.pairs is None


@pytest.mark.parametrize("entry, value, needle", [
    (MODEL, np.array([b"knn"]), "state:model"),
    (MODEL, np.array([b"mf", b"pairs"]), "state:model"),
    (MODEL, np.array([1.0]), "state:model"),
    (PAIRS_COUNTS, np.array([[1.0, 2.0], [0.0, 1.0]], np.float32), "pairs.counts"),
    (PAIRS_COUNTS, np.full((3, 3), np.nan, np.float32), "pairs.counts"),
    (PAIRS_META, np.array([-1.0, 10.0]), "pairs-meta"),
    (PAIRS_META, np.array([1.0]), "pairs-meta"),
])
def test_a_damaged_pairs_table_in_the_store_is_refused_by_name(tmp_path, entry, value,
                                                                needle):
    with DeviceStore(tmp_path / "d.db", key=KEY, create=True) as store:
        EdgeClient(store).set_pairs(two_baskets(), weight=1.0)
        store.put(entry, value)
        with pytest.raises(ValueError, match=needle):
            EdgeClient(store)


def test_set_pairs_refuses_a_bad_table_or_weight(tmp_path):
    with DeviceStore(tmp_path / "d.db", key=KEY, create=True) as store:
        app = EdgeClient(store)
        with pytest.raises(ValueError, match=r"pairs\.counts"):
            app.set_pairs(np.ones((3, 4)), 1.0)
        with pytest.raises(ValueError, match="weight"):
            app.set_pairs(two_baskets(), float("nan"))
        assert app.model == "mf" and app.pairs is None  # nothing stored
