from __future__ import annotations

import numpy as np
import pytest

from fedrec.common.mf import MFConfig
from fedrec.common.negatives import (
    MAX_ALPHA,
    MIN_POOL,
    NegativeSampler,
    negative_pool,
    pool_seed,
)


def test_negatives_are_never_training_positives():
    rng = np.random.default_rng(0)
    user = rng.integers(0, 20, 500)
    item = rng.integers(0, 30, 500)
    sampler = NegativeSampler(user, item, 30)
    users = rng.integers(0, 20, 5000)
    neg, ok = sampler.sample(users, rng)
    assert ok.all()
    positives = set(zip(user.tolist(), item.tolist(), strict=True))
    assert not any((u, i) in positives for u, i in zip(users.tolist(), neg.tolist(), strict=True))
    assert set(neg.tolist()) - set(item.tolist()) or len(set(neg.tolist())) > 20


def test_a_user_with_every_item_gets_no_negative():
    sampler = NegativeSampler(np.zeros(5, int), np.arange(5), 5, max_rounds=5)
    _, ok = sampler.sample(np.zeros(3, int), np.random.default_rng(0))
    assert not ok.any()


def test_popularity_skew_prefers_popular_items():
    item = np.r_[np.zeros(1000, int), np.arange(1, 50)]
    user = np.arange(len(item)) + 1  # distinct users: item 0 is positive for none of user 0
    sampler = NegativeSampler(user, item, 50, alpha=1.0)
    neg, _ = sampler.sample(np.zeros(2000, int), np.random.default_rng(1))
    assert (neg == 0).mean() > 0.8
    uniform = NegativeSampler(user, item, 50)
    neg, _ = uniform.sample(np.zeros(2000, int), np.random.default_rng(1))
    assert (neg == 0).mean() < 0.1


def test_under_a_skew_an_item_no_training_event_names_is_still_a_negative():
    """(count + 1)^alpha: the items of the catalogue never seen in training are drawn at
    weight 1 (a count^alpha skew drew them never, and they rose to everyone's top 10)."""
    item = np.repeat(np.arange(10), 30)  # items 10..49 appear in no training event
    user = np.arange(len(item)) + 1
    sampler = NegativeSampler(user, item, 50, alpha=0.5)
    neg, _ = sampler.sample(np.zeros(20_000, int), np.random.default_rng(2))
    unseen = (neg >= 10).mean()
    expected = 40 / (40 + 10 * np.sqrt(31))
    assert abs(unseen - expected) < 0.02 and np.unique(neg[neg >= 10]).size == 40


# ---- the round's public negative pool ---------------------------------------------------


def test_a_pool_is_a_share_of_the_catalogue_the_same_for_everyone_who_names_its_seed():
    seed = pool_seed(7, server_round=3, rounds=1)
    pool = negative_pool(0.01, seed, 100_000)
    assert 850 < len(pool) < 1150  # about 1 % of the items
    assert (np.diff(pool) > 0).all() and pool[0] >= 0 and pool[-1] < 100_000
    np.testing.assert_array_equal(pool, negative_pool(0.01, seed, 100_000))
    assert not pool.flags.writeable  # shared by every device of the round


def test_an_item_keeps_its_place_in_a_pool_as_the_catalogue_grows():
    seed = pool_seed(0, 1, 1)
    small, grown = negative_pool(0.05, seed, 20_000), negative_pool(0.05, seed, 20_500)
    np.testing.assert_array_equal(grown[grown < 20_000], small)


def test_rounds_share_a_pool_in_turn_and_the_next_turn_draws_another():
    seeds = [pool_seed(0, r, rounds=3) for r in range(1, 8)]
    assert seeds[0] == seeds[1] == seeds[2] != seeds[3] == seeds[4] == seeds[5] != seeds[6]
    a, b = negative_pool(0.02, seeds[0], 50_000), negative_pool(0.02, seeds[3], 50_000)
    assert len(np.intersect1d(a, b)) < 0.1 * len(a)  # independent draws overlap ~2 %
    assert pool_seed(0, 1, 1) != pool_seed(1, 1, 1)  # and each run has its own


def test_a_pool_is_never_smaller_than_its_floor_and_share_one_is_the_whole_catalogue():
    pool = negative_pool(0.001, pool_seed(0, 1, 1), 5_000)  # 5 items by share alone
    assert len(pool) == MIN_POOL and len(np.unique(pool)) == MIN_POOL
    assert negative_pool(1.0, 123, 5_000) is None
    assert negative_pool(0.5, 123, MIN_POOL) is None  # nothing to leave out
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="negative-pool must be in"):
            negative_pool(bad, 1, 1000)
    with pytest.raises(ValueError, match="negative-pool-rounds must be >= 1"):
        pool_seed(0, 1, 0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 1e6, -11.0,
                                 "0.5", None, [0.5], True])
def test_a_skew_that_is_not_a_bounded_number_is_refused_by_name(bad):
    """(count + 1)^1e6 overflowed, and every draw was the last item (item 0 here, with a
    warning only); a NaN did the same. Refused where the value enters: the sampler and the
    centralized model's config (what `fedrec bench tune --grid negative-alpha=...` makes)."""
    item = np.repeat(np.arange(10), 30)
    user = np.arange(len(item)) + 1
    with pytest.raises(ValueError, match="alpha must be a"):
        NegativeSampler(user, item, 50, alpha=bad)
    with pytest.raises(ValueError, match="negative_alpha must be a"):
        MFConfig(loss="bce", negative_alpha=bad)


def test_the_largest_skew_allowed_still_draws_every_item_it_should():
    item = np.repeat(np.arange(10), np.arange(1, 11) * 100)  # counts 100..1000
    user = np.arange(len(item)) + 1
    neg, _ = NegativeSampler(user, item, 50, alpha=MAX_ALPHA).sample(
        np.zeros(2_000, int), np.random.default_rng(3))
    assert np.isin(neg, np.arange(50)).all() and (neg == 9).mean() > 0.3
