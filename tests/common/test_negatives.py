from __future__ import annotations

import numpy as np

from fedrec.common.negatives import NegativeSampler


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
