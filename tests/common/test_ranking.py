"""The ranking rule (fedrec.common.ranking): the model's order, or that order blended with
each item's likeness to the user's items and with a bonus for items outside the head; the
head's bitmap as devices are sent it, checked."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedrec.common.metrics import top_k
from fedrec.common.ranking import (
    HEAD_SHARE,
    MAX_BONUS,
    MAX_SIMILARITY,
    check_bonus,
    check_similarity,
    history_sums,
    pack_head,
    ranked,
    unpack_head,
    with_similarity,
    with_tail_bonus,
)
from fedrec.common.segments import head_of

finite = st.integers(-500, 500).map(lambda x: x / 10)  # (distinct scores stay distinct)


def test_no_bonus_or_no_head_is_the_models_own_order() -> None:
    scores = np.array([0.3, -1.0, 2.0, 0.1])
    head = np.array([True, False, False, False])
    np.testing.assert_array_equal(with_tail_bonus(scores, head, 0.0), scores)
    np.testing.assert_array_equal(with_tail_bonus(scores, None, 0.5), scores)
    np.testing.assert_array_equal(with_tail_bonus(scores, np.zeros(4, bool), 0.5), scores)


def test_the_tail_gains_exactly_the_bonus_over_standardised_scores() -> None:
    scores = np.array([3.0, 1.0, -math.inf, 2.0, 0.0])
    head = np.array([True, True, False, False, False])
    out = with_tail_bonus(scores, head, 0.4)
    fin = scores[np.isfinite(scores)]
    z = (scores - fin.mean()) / fin.std()
    assert out[2] == -math.inf  # an excluded item stays excluded
    np.testing.assert_allclose(out[[0, 1]], z[[0, 1]])
    np.testing.assert_allclose(out[[3, 4]], z[[3, 4]] + 0.4)
    assert scores[2] == -math.inf  # (a new array: the input is not changed)


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(2, 30)), elements=finite),
       st.floats(0.01, 3.0), st.floats(0.1, 100.0), st.floats(-50, 50), st.integers(0, 2**32 - 1))
def test_the_rule_is_per_user_and_blind_to_a_users_scale_and_shift(
        scores, bonus, scale, shift, seed) -> None:
    head = np.random.default_rng(seed).random(scores.shape[1]) < 0.3
    head[0] = True  # (with no head at all the scores come back as they are)
    rows = with_tail_bonus(scores, head, bonus)
    for u in range(len(scores)):  # each row as one user's scores alone
        np.testing.assert_allclose(rows[u], with_tail_bonus(scores[u], head, bonus))
        moved = with_tail_bonus(scale * scores[u] + shift, head, bonus)
        np.testing.assert_allclose(moved, rows[u], atol=1e-6)


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(12, 40)), elements=finite),
       st.floats(0.0, 2.0), st.floats(0.0, 2.0), st.integers(0, 2**32 - 1))
def test_a_larger_bonus_never_gives_the_tail_fewer_places(scores, a, b, seed) -> None:
    head = np.random.default_rng(seed).random(scores.shape[1]) < 0.2
    head[0] = True
    low, high = sorted((a, b))
    places = [(~head[top_k(with_tail_bonus(scores, head, g), 10)]).sum(axis=1)
              for g in (low, high)]
    assert (places[1] >= places[0]).all()


def test_items_past_the_heads_end_are_tail_and_a_longer_head_is_cut() -> None:
    scores = np.array([1.0, 0.0, 0.0, 0.0])
    short = with_tail_bonus(scores, np.array([True, True]), 1.0)  # items 2, 3 listed later
    z = (scores - scores.mean()) / scores.std()
    np.testing.assert_allclose(short, z + np.array([0, 0, 1.0, 1.0]))
    long = with_tail_bonus(scores, np.array([True, False, False, False, True, True]), 1.0)
    np.testing.assert_allclose(long, z + np.array([0, 1.0, 1.0, 1.0]))


def test_the_head_is_the_most_counted_share_ties_to_the_lower_id() -> None:
    counts = np.array([5, 9, 5, 0, 1, 5, 0, 0, 0, 2])
    head = head_of(counts)
    assert head.sum() == math.ceil(10 * HEAD_SHARE) == 2
    assert np.flatnonzero(head).tolist() == [0, 1]  # 9, then the first of the 5s
    assert not head_of(np.zeros(10)).any()  # nothing counted yet: no head
    assert not head_of(np.zeros(0)).any()


def test_the_head_bitmap_round_trips_and_a_shorter_one_leaves_new_items_in_the_tail() -> None:
    head = np.random.default_rng(3).random(1001) < 0.2
    bits = pack_head(head)
    assert bits.dtype == np.uint8 and len(bits) == 126
    np.testing.assert_array_equal(unpack_head(bits, 1001), head)
    grown = unpack_head(bits, 1100)  # the catalogue grew after the head was drawn up
    np.testing.assert_array_equal(grown[:1001], head)
    assert not grown[1001:].any()


@pytest.mark.parametrize(("bits", "reason"), [
    (np.zeros(3, np.int64), "must be a uint8 bitmap"),
    (np.zeros((2, 2), np.uint8), "must be a uint8 bitmap"),
    (np.zeros(3, np.uint8), "must be a uint8 bitmap of at most the 10 items"),
    (np.array([0, 0b100], np.uint8), "names an item beyond the table's 10"),
    ("head", "must be a uint8 bitmap"),
])
def test_a_head_that_is_not_a_bitmap_of_the_table_is_refused_by_name(bits, reason) -> None:
    with pytest.raises(ValueError, match=f"'head' {reason}"):
        unpack_head(bits, 10)


@pytest.mark.parametrize("value", [True, "0.1", None, -0.01, MAX_BONUS + 1, math.nan,
                                   math.inf])
def test_a_bonus_that_is_not_a_number_in_range_is_refused_by_name(value) -> None:
    with pytest.raises(ValueError, match="tail-bonus must be a number"):
        check_bonus(value)
    assert check_bonus(0) == 0.0 and check_bonus(np.float32(0.5)) == 0.5


# ---- the similarity to a user's items ---------------------------------------------------

def test_no_similarity_weight_leaves_the_scores_as_they_are() -> None:
    scores = np.array([0.3, -1.0, 2.0])
    factors = np.eye(3)
    out = with_similarity(scores, factors, np.array([0]), 0.0)
    np.testing.assert_array_equal(out, scores)
    assert out is not scores
    np.testing.assert_array_equal(ranked(scores, factors, np.array([0])), scores)


def test_an_item_like_the_users_items_gains_its_row_times_their_unit_rows() -> None:
    factors = np.array([[3.0, 0.0], [2.0, 0.1], [0.0, 2.0], [-1.0, 0.0], [0.0, 0.5]])
    scores = np.array([0.5, 0.2, 0.2, 0.1, 0.0])
    out = with_similarity(scores, factors, np.array([0, 4]), 0.7)
    unit = factors / np.linalg.norm(factors, axis=1, keepdims=True)
    like = factors @ (unit[0] + unit[4])

    def z(x: np.ndarray) -> np.ndarray:
        return (x - x.mean()) / x.std()
    np.testing.assert_allclose(out, z(scores) + 0.7 * z(like))
    # The user's items count by direction alone: a longer row of theirs weighs the same.
    longer = factors.copy()
    longer[0] *= 100
    np.testing.assert_allclose(history_sums(longer, [np.array([0, 4])]),
                               [unit[0] + unit[4]])
    # An item's own row counts with its length, as in the model's scores: a short row
    # pointing the same way (as a pushed tail item's may) gains little.
    short = factors.copy()
    short[1] *= 0.01
    assert with_similarity(scores, short, np.array([0, 4]), 0.7)[1] < out[1]
    assert out[1] > out[2] > out[3]  # (equal model scores: the item like theirs ranks first)


def test_a_user_with_no_items_or_only_unknown_ones_ranks_by_the_model() -> None:
    factors = np.random.default_rng(0).normal(size=(6, 3))
    scores = np.random.default_rng(1).normal(size=6)
    for history in (np.empty(0, np.int64), np.array([6, 9])):  # (9: listed after the table)
        out = with_similarity(scores, factors, history, 0.5)
        np.testing.assert_allclose(out, (scores - scores.mean()) / scores.std())
    # Ids past the table are left out; the rest count.
    np.testing.assert_allclose(with_similarity(scores, factors, np.array([2, 7]), 0.5),
                               with_similarity(scores, factors, np.array([2]), 0.5))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 4), st.floats(0.01, 3.0),
       st.floats(0.1, 100.0), st.floats(-50, 50))
def test_similarity_is_per_user_blind_to_scale_and_shift_and_then_takes_the_bonus(
        seed, users, weight, scale, shift) -> None:
    rng = np.random.default_rng(seed)
    n, k = 20, 4
    factors = rng.normal(size=(n, k))
    factors[3] = 0.0  # (a row of zeros is like nothing)
    scores = rng.normal(size=(users, n))
    histories = [rng.choice(n, size=rng.integers(0, 6), replace=False) for _ in range(users)]
    head = rng.random(n) < 0.3
    head[0] = True
    rows = ranked(scores, factors, histories, weight, head, 0.4)
    assert np.isfinite(rows).all()
    for u in range(users):
        alone = ranked(scores[u], factors, histories[u], weight, head, 0.4)
        np.testing.assert_allclose(rows[u], alone, atol=1e-9)
        moved = ranked(scale * scores[u] + shift, factors, histories[u], weight, head, 0.4)
        np.testing.assert_allclose(moved, alone, atol=1e-6)
        both = with_tail_bonus(with_similarity(scores[u], factors, histories[u], weight),
                               head, 0.4)
        np.testing.assert_allclose(alone, both)


@pytest.mark.parametrize("value", [-0.1, 10.5, math.nan, math.inf, "0.1", None, True])
def test_a_similarity_weight_out_of_range_is_refused_by_name(value) -> None:
    with pytest.raises(ValueError, match="similarity must be a number"):
        check_similarity(value)
    assert check_similarity(MAX_SIMILARITY) == MAX_SIMILARITY
