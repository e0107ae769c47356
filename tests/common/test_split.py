"""Protocols: exact definitions, no overlap, no leakage, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.common.data.interactions import EventType
from fedrec.common.split import leave_last_rows, split
from tests.conftest import low_rank_ratings, make_interactions


def _pairs(d):
    return set(zip(d.user.tolist(), d.item.tolist(), strict=True))


def _rows(d):
    return set(zip(d.user.tolist(), d.item.tolist(), d.timestamp.tolist(), strict=True))


def test_five_folds_follow_the_published_permutation():
    data = low_rank_ratings()
    n = len(data)
    perm = np.random.default_rng(0).permutation(n)
    folds = list(split(data, "explicit-5fold"))
    assert [s.fold for s in folds] == [0, 1, 2, 3, 4]
    for s in folds:
        expected = np.sort(perm[s.fold::5])
        np.testing.assert_array_equal(s.test.timestamp, data.timestamp[expected])
        assert len(s.train) + len(s.test) == n
        assert not _rows(s.train) & _rows(s.test)
    all_test = np.concatenate([s.test.timestamp for s in folds])
    assert sorted(all_test.tolist()) == sorted(data.timestamp.tolist())  # a partition


@pytest.mark.parametrize("protocol", ["explicit-80-20", "implicit-80-20"])
def test_eighty_twenty_takes_the_first_80_percent_of_the_permutation(protocol):
    data = low_rank_ratings()
    perm = np.random.default_rng(0).permutation(len(data))
    s = next(split(data, protocol))
    cut = int(0.8 * len(data))
    np.testing.assert_array_equal(s.train.timestamp, data.timestamp[np.sort(perm[:cut])])
    np.testing.assert_array_equal(s.test.timestamp, data.timestamp[np.sort(perm[cut:])])


def test_splits_are_deterministic():
    data = low_rank_ratings()
    a = [s.test.timestamp for s in split(data, "explicit-5fold")]
    b = [s.test.timestamp for s in split(data, "explicit-5fold")]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_implicit_protocols_never_put_a_pair_on_both_sides():
    # user 0 viewed item 1 twice and bought it: one positive, on one side only.
    data = make_interactions(
        [0, 0, 0, 0, 1, 1, 1], [1, 1, 1, 2, 1, 2, 3],
        event=[EventType.VIEW, EventType.VIEW, EventType.PURCHASE, EventType.VIEW,
               EventType.VIEW, EventType.CART, EventType.VIEW])
    for protocol in ("implicit-80-20", "implicit-leave-last"):
        s = next(split(data, protocol))
        assert not _pairs(s.train) & _pairs(s.test)
        assert len(s.train) + len(s.test) == 5  # distinct pairs


def test_leave_last_takes_the_latest_and_breaks_ties_by_file_order():
    #              rows: 0  1  2  3  4  5
    data = make_interactions([0, 0, 0, 1, 1, 1], [0, 1, 2, 0, 1, 2],
                             timestamp=[5, 9, 9, 7, 3, 1])
    np.testing.assert_array_equal(leave_last_rows(data), [2, 3])
    s = next(split(data, "implicit-leave-last"))
    assert _pairs(s.test) == {(0, 2), (1, 0)}


def test_explicit_protocol_on_a_log_without_ratings_is_refused():
    data = make_interactions([0, 1], [0, 1], event=[EventType.VIEW, EventType.CART])
    with pytest.raises(ValueError, match="has no rating events"):
        next(split(data, "explicit-80-20"))
    with pytest.raises(ValueError, match="Unknown protocol 'random'"):
        next(split(data, "random"))


def test_explicit_protocols_use_only_rating_events():
    data = make_interactions([0, 0, 1, 1, 2], [0, 1, 0, 1, 0], value=[4, 1, 5, 1, 3],
                             event=[0, 1, 0, 2, 0])
    s = next(split(data, "explicit-80-20"))
    assert len(s.train) + len(s.test) == 3
    assert set(s.train.event.tolist() + s.test.event.tolist()) == {EventType.RATING}
