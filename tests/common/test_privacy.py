"""dp mode: the device's clip and noise, and the server's accountant."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.common.privacy.gaussian import clip_and_noise, update_norm
from fedrec.common.schema import ItemUpdate
from fedrec.server.accountant import Accountant


def make_update(scale: float, m: int = 6, k: int = 4, seed: int = 0) -> ItemUpdate:
    rng = np.random.default_rng(seed)
    return ItemUpdate(np.arange(m, dtype=np.int64),
                      (scale * rng.normal(size=(m, k))).astype(np.float32),
                      (scale * rng.normal(size=m)).astype(np.float32),
                      np.full(m, 3.0, np.float32))


def test_the_whole_update_is_clipped_and_counts_carry_nothing():
    rng = np.random.default_rng(1)
    big = make_update(10.0)
    clipped = clip_and_noise(big, clip=0.5, noise_multiplier=0.0, rng=rng)
    assert update_norm(clipped) == pytest.approx(0.5, rel=1e-5)
    np.testing.assert_allclose(clipped.rows / big.rows, 0.5 / update_norm(big), rtol=1e-4)
    assert (clipped.counts == 1).all() and (clipped.ids == big.ids).all()
    small = make_update(0.01)
    same = clip_and_noise(small, clip=0.5, noise_multiplier=0.0, rng=rng)
    np.testing.assert_allclose(same.rows, small.rows)  # within the bound: untouched


def test_noise_has_standard_deviation_multiplier_times_clip():
    rng = np.random.default_rng(2)
    zero = ItemUpdate(np.arange(2000, dtype=np.int64), np.zeros((2000, 25), np.float32),
                      np.zeros(2000, np.float32), np.ones(2000, np.float32))
    noisy = clip_and_noise(zero, clip=0.5, noise_multiplier=1.2, rng=rng)
    assert np.std(noisy.rows) == pytest.approx(0.6, rel=0.02)
    assert abs(float(np.mean(noisy.rows))) < 0.01
    with pytest.raises(ValueError, match="clip"):
        clip_and_noise(zero, clip=0.0, noise_multiplier=1.0, rng=rng)


def test_epsilon_grows_with_rounds_and_shrinks_with_noise_and_the_cap_holds():
    a = Accountant(sampling=0.1, noise_multiplier=1.0, delta=1e-5)
    assert a.epsilon(0) == 0.0
    assert 0 < a.epsilon(1) < a.epsilon(10) < a.epsilon(100)
    assert Accountant(0.1, 2.0, 1e-5).epsilon(100) < a.epsilon(100)
    assert Accountant(0.01, 1.0, 1e-5).epsilon(100) < a.epsilon(100)  # sampling amplifies
    assert a.epsilon(100) == pytest.approx(7.9, abs=0.2)  # the library's own figure: 7.90
    capped = Accountant(0.1, 1.0, 1e-5, epsilon_cap=a.epsilon(50))
    assert capped.allows(50) and not capped.allows(51)
    assert Accountant(0.1, 1.0, 1e-5).allows(10**6)  # no cap
    with pytest.raises(ValueError, match="noise"):
        Accountant(0.1, 0.0, 1e-5)


def test_calibrated_noise_meets_the_target_epsilon():
    from fedrec.server.accountant import calibrate_noise

    for target in (1.0, 4.0):
        sigma = calibrate_noise(target, sampling=0.3, rounds=12, delta=1e-5)
        a = Accountant(0.3, sigma, 1e-5)
        assert a.epsilon(12) <= target
        assert Accountant(0.3, sigma * 0.98, 1e-5).epsilon(12) > target  # the smallest
    with pytest.raises(ValueError, match="out of reach"):
        calibrate_noise(1e-4, sampling=1.0, rounds=1000, delta=1e-5, high=2.0)


def test_the_attacker_auc_reads_what_a_reply_reveals():
    from fedrec.simulations.benches.membership import auc, membership_auc

    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert auc(np.zeros(10), np.arange(10) < 3) == 0.5  # all tied: nothing learnt
    truth = np.array([2, 5])
    # A reply naming the true items with pulled-up biases and two negatives pushed down.
    revealing = (np.array([1, 2, 5, 7]), np.array([0.3, -0.2, -0.4, 0.1]), truth)
    got = membership_auc([revealing], n_items=10)
    assert got["catalogue_auc"] == 1.0 and got["named_rows_auc"] == 1.0
    rng = np.random.default_rng(0)
    noisy = [(np.array([1, 2, 5, 7]), rng.normal(size=4), truth) for _ in range(400)]
    assert abs(membership_auc(noisy, 10)["named_rows_auc"] - 0.5) < 0.05


def test_a_curious_server_reads_ratings_off_a_plain_explicit_update():
    from fedrec.client.device import Device, UserState
    from fedrec.common.schema import TrainConfig
    from fedrec.simulations.benches.membership import infer_ratings

    rng = np.random.default_rng(4)
    q = rng.normal(0, 0.3, (40, 6)).astype(np.float32)
    b = rng.normal(0, 0.2, 40).astype(np.float32)
    items = np.arange(0, 40, 2)
    ratings = rng.integers(1, 6, len(items)).astype(np.float32)
    cfg = TrainConfig(loss="mse", optimizer="gd", local_epochs=1, lr=0.01, reg=0.05,
                      reg_bias=0.01)
    device = Device(items, ratings, state=UserState(rng.normal(0, 0.3, 6).astype(np.float32)))
    update, _ = device.train(q, b, 3.5, cfg)
    guess = infer_ratings(update.rows, update.bias, q[update.ids], b[update.ids], 3.5,
                          cfg.lr, cfg.reg, cfg.reg_bias, cfg.local_epochs, (1.0, 5.0))
    # Up to the user's own bias (0 here) the reply gives the ratings away.
    np.testing.assert_allclose(guess, ratings, atol=0.05)
    noisy = clip_and_noise(update, clip=0.5, noise_multiplier=1.0, rng=rng)
    guess = infer_ratings(noisy.rows, noisy.bias, q[update.ids], b[update.ids], 3.5, cfg.lr,
                          cfg.reg, cfg.reg_bias, cfg.local_epochs, (1.0, 5.0))
    assert np.sqrt(np.mean((guess - ratings) ** 2)) > 1.0  # dp: the guess is no better
