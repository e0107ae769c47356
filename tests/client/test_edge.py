"""The embeddable client: events stored and learned from at once, filtered top-K, all
persisted in the encrypted store."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedrec.client.edge import USER, EdgeClient, EdgeSettings, UnknownItemError
from fedrec.client.store import DeviceStore
from fedrec.common.data.interactions import EventType

KEY = bytes(range(32))


def clustered_table(n: int = 60, k: int = 4, seed: int = 0):
    """Items in 3 clusters (their factors point three ways), one category per cluster."""
    rng = np.random.default_rng(seed)
    centres = np.eye(k)[:3] * 2.0
    cluster = np.arange(n) % 3
    factors = centres[cluster] + rng.normal(0, 0.1, (n, k))
    return factors.astype(np.float32), np.zeros(n, np.float32), cluster


def test_purchases_pull_recommendations_to_their_cluster_and_are_left_out(tmp_path):
    factors, bias, cluster = clustered_table()
    with DeviceStore(tmp_path / "d.db", key=KEY, create=True) as store:
        app = EdgeClient(store, EdgeSettings(lr=0.2, seed=1))
        app.set_table(factors, bias, categories=cluster)
        bought = [0, 3, 6, 9, 12]  # cluster 0
        for item in bought:
            app.record(item, "view")
            app.record(item, EventType.PURCHASE)
        top = app.recommend(k=10)
        assert len(top.items) == 10 and not set(top.items) & set(bought)
        assert (cluster[top.items] == 0).mean() >= 0.9
        assert (np.diff(top.scores) <= 0).all()
        only = app.recommend(k=5, category=2)
        assert (cluster[only.items] == 2).all() and len(only.items) == 5
        viewed_too = app.recommend(k=60, exclude=("purchase", "view"))
        assert not set(viewed_too.items) & set(bought) and len(viewed_too.items) == 55
        assert len(store) == 10


def test_everything_survives_reopening_the_store(tmp_path):
    factors, bias, cluster = clustered_table()
    with DeviceStore(tmp_path / "d.db", key=KEY, create=True) as store:
        app = EdgeClient(store)
        app.set_table(factors, bias, mean=0.0, categories=cluster)
        for item in (1, 4, 7):
            app.record(item, "purchase", timestamp=1_767_225_600)
        before = app.recommend(k=8)
        vector = app.user.copy()
    with DeviceStore(tmp_path / "d.db", key=KEY, create=True) as store:
        again = EdgeClient(store)
        np.testing.assert_array_equal(again.user, vector)
        np.testing.assert_array_equal(store.get(USER), vector)
        after = again.recommend(k=8)
        np.testing.assert_array_equal(after.items, before.items)
        assert store.events()["time"].tolist() == [1_767_225_600] * 3


def test_a_rating_takes_one_online_step_toward_it(tmp_path):
    factors, bias, _ = clustered_table()
    with DeviceStore(tmp_path / "d.db", key=KEY, create=True) as store:
        app = EdgeClient(store, EdgeSettings(kind="explicit", lr=0.05, reg=0.0))
        app.set_table(factors, bias, mean=3.5)
        app.record(2, "view")  # an explicit model learns from ratings only
        app._ensure_user()
        before = 3.5 + app.user[-1] + bias[2] + factors[2] @ app.user[:-1]
        app.record(2, "rating", value=5.0)
        after = 3.5 + app.user[-1] + bias[2] + factors[2] @ app.user[:-1]
        assert abs(after - 5.0) < abs(before - 5.0)


def test_bad_events_are_refused_and_a_device_without_a_table_still_records(tmp_path):
    with DeviceStore(tmp_path / "d.db", key=KEY, create=True) as store:
        app = EdgeClient(store)
        app.record(5, "cart")  # no table yet: stored, nothing learned
        assert len(store) == 1 and app.user is None
        assert len(app.recommend().items) == 0
        factors, bias, _ = clustered_table(n=10)
        app.set_table(factors, bias)
        with pytest.raises(UnknownItemError, match="not in the catalogue this device"):
            app.record(10, "view")
        with pytest.raises(ValueError, match="needs a finite value"):
            app.record(1, "rating")
        with pytest.raises(ValueError, match="unknown event type"):
            app.record(1, "wishlist")
        with pytest.raises(ValueError, match="no item categories"):
            app.recommend(category=1)
        assert len(store) == 1


def test_an_event_stored_before_the_first_sync_beyond_the_table_breaks_nothing(tmp_path):
    with DeviceStore(tmp_path / "d.db", key=KEY, create=True) as store:
        app = EdgeClient(store)
        app.record(99, "purchase")  # no table yet: the device cannot tell it is unknown
        factors, bias, _ = clustered_table(n=10)
        app.set_table(factors, bias)
        assert len(app.recommend(k=5).items) == 5  # and it keeps working
        again = EdgeClient(store)  # reopened, from the store
        assert len(again.recommend(k=20).items) == 10
        assert len(store) == 1  # nothing lost


def test_an_edge_negative_weight_moves_the_user_vector_less_toward_negatives(tmp_path):
    """The edge client's online step weighs its sampled negatives like a device's: the same
    event and seed, the user vector's step is the positive's pull plus the weighted push
    (so at weight w it is exactly pull + w × the unweighted push); a bad weight is refused."""
    factors, bias, _ = clustered_table()
    moves = {}
    for weight in (1.0, 0.5, 0.0001):
        with DeviceStore(tmp_path / f"d{weight}.db", key=KEY, create=True) as store:
            app = EdgeClient(store, EdgeSettings(lr=0.2, seed=1, negative_weight=weight))
            app.set_table(factors, bias)
            app.record(0, EventType.PURCHASE)
            moves[weight] = app.user[:-1].astype(np.float64)
    pull = moves[0.0001]  # (all but the positive's pull)
    np.testing.assert_allclose(moves[0.5] - pull, 0.5 * (moves[1.0] - pull), rtol=1e-3,
                               atol=1e-6)
    for bad in (0.0, -1.0, float("nan"), float("inf"), True, "0.5"):
        with pytest.raises(ValueError, match="negative_weight must be a finite number > 0"):
            EdgeSettings(negative_weight=bad)


def test_a_table_synced_with_a_head_and_a_bonus_ranks_the_tail_up(tmp_path):
    """The edge app ranks as the evaluated devices do (fedrec.common.ranking): with the head
    and tail bonus its table came with, tail items climb; a new table without them ranks
    by the model's own order again; a damaged head in the store is refused by name."""
    from fedrec.client.edge import HEAD, TAIL_BONUS

    factors, _, _ = clustered_table()
    bias = np.linspace(1.0, -1.0, len(factors)).astype(np.float32)  # item 0 most popular
    head = np.zeros(len(factors), bool)
    head[:12] = True
    with DeviceStore(tmp_path / "d.db", key=KEY, create=True) as store:
        app = EdgeClient(store, EdgeSettings(seed=2))
        app.set_table(factors, bias)
        plain = app.recommend(k=10).items
        app.set_table(factors, bias, head=head, tail_bonus=3.0)
        bonus = app.recommend(k=10).items
        assert head[plain].mean() > 0.5 and not head[bonus].any()
        app.set_table(factors, bias)  # (a table without a head: none kept)
        np.testing.assert_array_equal(app.recommend(k=10).items, plain)
        with pytest.raises(ValueError, match="tail-bonus must be a number"):
            app.set_table(factors, bias, head=head, tail_bonus=-1.0)
        app.set_table(factors, bias, head=head, tail_bonus=3.0)
        store.put_many({HEAD: np.zeros(100, np.uint8)})
        with pytest.raises(ValueError, match=r"state:item-head/tail-bonus.*'head' must be"):
            app.reload_table()
        app.set_table(factors, bias, head=head, tail_bonus=3.0)
        for bad, reason in ((np.array([np.nan]), "tail-bonus must be a number in"),
                            (np.array([99.0]), "tail-bonus must be a number in"),
                            (np.array([0.3, 0.3]), "tail-bonus must be one number")):
            store.put_many({TAIL_BONUS: bad})
            with pytest.raises(ValueError, match=f"state:item-head/tail-bonus: {reason}"):
                app.reload_table()


def test_a_table_with_a_malformed_head_is_refused_by_name_and_changes_nothing(tmp_path):
    """set_table's ranking arguments (what an app passes from a fetched model.npz): a head
    that is not a bool mask of the table, or a bonus or similarity out of range, is
    refused by name, and the table and ranking the app had stay."""
    factors, _, _ = clustered_table()
    bias = np.linspace(1.0, -1.0, len(factors)).astype(np.float32)
    head = np.zeros(len(factors), bool)
    head[:12] = True
    with DeviceStore(tmp_path / "d.db", key=KEY, create=True) as store:
        app = EdgeClient(store, EdgeSettings(seed=2))
        app.set_table(factors, bias, head=head, tail_bonus=3.0, similarity=0.5)
        before = app.recommend(k=10).items
        for bad in (head[:-1], np.r_[head, True], head.astype(float),
                    np.where(head, np.nan, 0.0), head.astype(int).tolist(), head[None, :]):
            with pytest.raises(ValueError, match="head must be a bool mask"):
                app.set_table(factors * 2, bias, head=bad)
        for kw, reason in (({"tail_bonus": [0.3]}, "tail-bonus must be a number"),
                           ({"tail_bonus": None}, "tail-bonus must be a number"),
                           ({"similarity": 1e9}, "similarity must be a number"),
                           ({"similarity": "0.1"}, "similarity must be a number")):
            with pytest.raises(ValueError, match=reason):
                app.set_table(factors * 2, bias, head=head, **kw)
        app.reload_table()
        np.testing.assert_array_equal(app.factors, factors)
        assert app.tail_bonus == 3.0 and app.similarity == 0.5
        np.testing.assert_array_equal(app.recommend(k=10).items, before)


def test_a_table_synced_with_a_similarity_ranks_items_like_the_users_own_up(tmp_path):
    """With the similarity its table came with, the edge app ranks items like the ones the
    user has events on higher, from the table alone (fedrec.common.ranking); a damaged
    entry in the store is refused by name."""
    from fedrec.client.edge import SIMILARITY

    factors, _, cluster = clustered_table()
    bias = np.where(cluster == 0, 1.0, 0.0).astype(np.float32)  # the model favours cluster 0
    with DeviceStore(tmp_path / "d.db", key=KEY, create=True) as store:
        app = EdgeClient(store, EdgeSettings(lr=1e-6, seed=3))  # (its vector barely moves)
        app.set_table(factors, bias)
        for item in (1, 4, 7):  # cluster 1
            app.record(item, EventType.PURCHASE)  # (bought: left out of the ranking)
        plain = app.recommend(k=10).items
        app.set_table(factors, bias, similarity=5.0)
        like = app.recommend(k=10).items
        assert (cluster[plain] == 0).mean() >= 0.9
        assert (cluster[like] == 1).mean() >= 0.9 and not {1, 4, 7} & set(like)
        app.set_table(factors, bias)  # (a table without one: the model's scores again)
        np.testing.assert_array_equal(app.recommend(k=10).items, plain)
        with pytest.raises(ValueError, match="similarity must be a number"):
            app.set_table(factors, bias, similarity=math.nan)
        app.set_table(factors, bias, similarity=5.0)
        for bad, reason in ((np.array([np.nan]), "similarity must be a number in"),
                            (np.array([-2.0]), "similarity must be a number in"),
                            (np.array([0.1, 0.1]), "similarity must be one number")):
            store.put_many({SIMILARITY: bad})
            with pytest.raises(ValueError, match=f"state:similarity: {reason}"):
                app.reload_table()
