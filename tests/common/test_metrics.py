"""Metrics against hand-computed cases and a brute-force reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedrec.common.metrics import (
    add_top_share,
    hit_and_gain,
    mae,
    prequential_sums,
    rank_among,
    ranking_metrics,
    rmse,
    top_k,
)
from tests.conftest import make_interactions


def test_rmse_and_mae_by_hand():
    assert rmse(np.array([1.0, 2.0, 4.0]), np.array([1.0, 4.0, 3.0])) == pytest.approx(
        math.sqrt(5 / 3))
    assert mae(np.array([1.0, 2.0, 4.0]), np.array([1.0, 4.0, 3.0])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="differ in length"):
        rmse(np.zeros(2), np.zeros(3))


def test_top_k_breaks_ties_towards_the_lower_index():
    scores = np.array([[1.0, 3.0, 3.0, 0.0, 3.0]])
    np.testing.assert_array_equal(top_k(scores, 2), [[1, 2]])
    np.testing.assert_array_equal(top_k(scores, 4), [[1, 2, 4, 0]])


@settings(max_examples=80, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 12)),
              elements=st.sampled_from([0.0, 0.5, 1.0, 2.0, -np.inf])),
       st.integers(1, 15))
def test_top_k_equals_a_stable_full_sort(scores, k):
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(top_k(scores, k), expected)


def test_ranking_metrics_by_hand():
    # 2 users, 6 items. User 0 trained on item 0; tests on items 2 and 5.
    # User 1 trained on items 1, 2; tests on item 0. User 2 has no test item: skipped.
    train = make_interactions([0, 1, 1, 2], [0, 1, 2, 3], n_users=3, n_items=6)
    test = make_interactions([0, 0, 1], [2, 5, 0], n_users=3, n_items=6)
    scores = np.array([
        [9, 8, 7, 6, 5, 4],  # user 0 ranks (item 0 excluded) 1, 2, 3 -> hit at rank 2
        [1, 9, 9, 2, 3, 4],  # user 1 ranks (1, 2 excluded) 5, 4, 3 -> item 0 last
        [0, 0, 0, 0, 0, 0],
    ], dtype=float)
    m = ranking_metrics(lambda users: scores[users], train, test, k=2)
    # user 0: top-2 = [1, 2]; one hit at rank 2; |test| = 2
    ndcg0 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert m["users"] == 2
    assert m["hr@2"] == pytest.approx((1 + 0) / 2)
    assert m["recall@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["precision@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["ndcg@2"] == pytest.approx((ndcg0 + 0) / 2)
    # recommended: user 0 -> {1, 2}, user 1 -> {5, 4}: 4 of 6 items
    assert m["coverage@2"] == pytest.approx(4 / 6)


def test_training_items_are_never_recommended():
    train = make_interactions([0, 0, 0], [0, 1, 2], n_users=1, n_items=5)
    test = make_interactions([0], [4], n_users=1, n_items=5)
    m = ranking_metrics(lambda u: np.array([[10.0, 9, 8, 0, 1]]), train, test, k=1)
    assert m["hr@1"] == 1.0  # items 0-2 excluded, item 4 outranks item 3


def test_ideal_dcg_uses_min_of_test_size_and_k():
    train = make_interactions([0], [0], n_users=1, n_items=20)
    test = make_interactions([0] * 12, list(range(1, 13)), n_users=1, n_items=20)
    m = ranking_metrics(lambda u: -np.arange(20.0)[None, :], train, test, k=10)
    assert m["ndcg@10"] == pytest.approx(1.0)
    assert m["recall@10"] == pytest.approx(10 / 12)
    assert m["precision@10"] == pytest.approx(1.0)


def test_batches_do_not_change_the_result():
    rng = np.random.default_rng(0)
    train = make_interactions(rng.integers(0, 30, 200), rng.integers(0, 50, 200), n_users=30,
                              n_items=50)
    test = make_interactions(rng.integers(0, 30, 60), rng.integers(0, 50, 60), n_users=30,
                             n_items=50)
    train_pairs = set(zip(train.user.tolist(), train.item.tolist(), strict=True))
    keep = [k for k, p in enumerate(zip(test.user.tolist(), test.item.tolist(), strict=True))
            if p not in train_pairs]
    test = test.subset(np.array(keep))
    table = rng.normal(size=(30, 50))
    full = ranking_metrics(lambda u: table[u], train, test)
    small = ranking_metrics(lambda u: table[u], train, test, batch_users=7)
    assert full == small


def test_rank_among_excludes_items_and_counts_ties_half():
    scores = np.array([0.5, 0.9, 0.5, 0.5, 0.1, 0.95])
    seen = np.array([False, False, False, False, False, True])  # 0.95 is excluded
    assert rank_among(scores.copy(), 1, seen) == 0
    assert rank_among(scores.copy(), 0, seen) == 1 + 2 // 2  # above: 0.9; ties: 2 others
    assert rank_among(np.zeros(100), 7, np.zeros(100, bool)) == 49  # all alike: the middle
    assert hit_and_gain(0) == (True, 1.0)
    assert hit_and_gain(2)[1] == pytest.approx(0.5)
    assert hit_and_gain(10) == (False, 0.0)


def test_a_catalogue_smaller_than_k_is_ranked_whole():
    from tests.conftest import make_interactions

    train = make_interactions([0, 1], [0, 1], n_users=2, n_items=4)
    test = make_interactions([0, 1], [2, 3], n_users=2, n_items=4)
    scores = np.array([[0.0, 0.0, 1.0, 0.5], [0.0, 0.0, 0.1, 0.9]])
    out = ranking_metrics(lambda users: scores[users], train, test, k=10)
    assert out["hr@10"] == 1.0 and out["precision@10"] == pytest.approx(0.1)
    assert out["recall@10"] == 1.0 and out["ndcg@10"] == pytest.approx(1.0)


def test_the_tail_share_counts_the_top_places_of_the_candidates_only() -> None:
    """add_top_share against a brute-force sort: the top k of the items rank_among left
    (excluded items at -inf never count), and fewer places when fewer candidates remain."""
    rng = np.random.default_rng(4)
    for _ in range(50):
        n = int(rng.integers(3, 40))
        scores = rng.normal(size=n)
        excluded = rng.random(n) < 0.4
        item = int(rng.integers(n))
        excluded[item] = False
        tail = rng.random(n) < 0.5
        ranked = scores.copy()
        rank_among(ranked, item, excluded)
        sums = prequential_sums()
        add_top_share(sums, ranked, tail, 10)
        order = [i for i in np.argsort(-scores, kind="stable") if not excluded[i]][:10]
        assert sums["recs"] == len(order)
        assert sums["tail-recs"] == int(tail[order].sum())
