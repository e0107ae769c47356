"""The device's local training, without Flower."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrec.client.device import Device, UserState, _fit_user
from fedrec.common.losses import (
    Regularization,
    bce_grads,
    bce_grads_one_user,
    bce_user_grads,
    mse_grads,
    mse_grads_one_user,
    mse_user_grads,
)
from fedrec.common.schema import TrainConfig

RNG = np.random.default_rng(0)
Q = RNG.normal(0, 0.1, (30, 4)).astype(np.float32)
B = RNG.normal(0, 0.1, 30).astype(np.float32)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 8), st.integers(0, 2**31 - 1))
def test_one_user_gradients_equal_the_general_ones_summed(n, seed):
    rng = np.random.default_rng(seed)
    p, q = rng.normal(size=3), rng.normal(size=(n, 3))
    b, y = rng.normal(size=n), rng.uniform(1, 5, n)
    reg = Regularization(0.1, 0.05)
    one = mse_grads_one_user(3.0, p, 0.2, q, b, y, reg)
    full = mse_grads(3.0, np.tile(p, (n, 1)), np.full(n, 0.2), q, b, y, reg)
    np.testing.assert_allclose(one.user_factors, full.user_factors.sum(0), rtol=1e-10)
    assert one.user_bias == pytest.approx(full.user_bias.sum())
    np.testing.assert_allclose(one.item_factors, full.item_factors)
    assert one.loss == pytest.approx(full.loss.sum())
    label = (rng.random(n) < 0.5).astype(float)
    one = bce_grads_one_user(p, q, b, label, reg)
    full = bce_grads(np.tile(p, (n, 1)), q, b, label, reg)
    np.testing.assert_allclose(one.user_factors, full.user_factors.sum(0), rtol=1e-10)
    np.testing.assert_allclose(one.item_bias, full.item_bias)
    assert np.isnan(bce_grads_one_user(p, q, b, label, reg, with_loss=False).loss)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 8), st.integers(0, 2**31 - 1))
def test_user_only_gradients_equal_the_user_half_of_the_full_ones(n, seed):
    rng = np.random.default_rng(seed)
    p, q = rng.normal(size=3), rng.normal(size=(n, 3))
    b, y = rng.normal(size=n), rng.uniform(1, 5, n)
    reg = Regularization(0.1, 0.05)
    gp, gb = mse_user_grads(3.0, p, 0.2, q, b, y, reg)
    one = mse_grads_one_user(3.0, p, 0.2, q, b, y, reg)
    np.testing.assert_allclose(gp, one.user_factors, rtol=1e-12)
    assert gb == pytest.approx(one.user_bias, rel=1e-12)
    label = (rng.random(n) < 0.5).astype(float)
    np.testing.assert_allclose(bce_user_grads(p, q, b, label, reg),
                               bce_grads_one_user(p, q, b, label, reg).user_factors, rtol=1e-12)


def test_one_local_gd_step_is_minus_lr_times_the_gradient():
    items, values = np.array([2, 7, 11]), np.array([4.0, 1.0, 5.0], np.float32)
    p0 = np.array([0.1, -0.2, 0.3, 0.0], np.float32)
    dev = Device(items, values, state=UserState(p0.copy(), 0.1))
    cfg = TrainConfig(loss="mse", optimizer="gd", local_epochs=1, lr=0.05, reg=0.1,
                      reg_bias=0.01)
    q_before = Q.copy()
    update, metrics = dev.train(Q, B, 3.5, cfg)
    np.testing.assert_array_equal(Q, q_before)  # the server's table is never written
    g = mse_grads(3.5, np.tile(p0, (3, 1)), np.full(3, 0.1), Q[items], B[items], values,
                  Regularization(0.1, 0.01))
    assert update.ids.tolist() == [2, 7, 11]
    np.testing.assert_allclose(update.rows, 0.05 * g.item_factors, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(update.bias, 0.05 * g.item_bias, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dev.user.factors, p0 - 0.05 * g.user_factors.sum(0), rtol=1e-5)
    assert update.counts.tolist() == [1, 1, 1]
    assert metrics["num-examples"] == 3


def test_an_item_rated_twice_sums_its_examples_gradients_in_one_gd_step():
    """Ratings of one item more than once (a device's repeated purchases): the step sums
    the item's per-example gradients, and its weight is its examples per epoch."""
    items = np.array([7, 2, 7, 11, 7])
    values = np.array([4.0, 1.0, 2.0, 5.0, 3.0], np.float32)
    p0 = np.array([0.1, -0.2, 0.3, 0.0], np.float32)
    dev = Device(items, values, state=UserState(p0.copy(), 0.1))
    cfg = TrainConfig(loss="mse", optimizer="gd", local_epochs=1, lr=0.05, reg=0.1,
                      reg_bias=0.01)
    update, metrics = dev.train(Q, B, 3.5, cfg)
    order = np.argsort(items, kind="stable")  # the device keeps its events sorted by item
    it, va = items[order], values[order]
    g = mse_grads(3.5, np.tile(p0, (5, 1)), np.full(5, 0.1), Q[it], B[it], va,
                  Regularization(0.1, 0.01))
    assert update.ids.tolist() == [2, 7, 11]
    for row, item in enumerate((2, 7, 11)):
        mine = it == item
        np.testing.assert_allclose(update.rows[row], 0.05 * g.item_factors[mine].sum(0),
                                   rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(update.bias[row], 0.05 * g.item_bias[mine].sum(),
                                   rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dev.user.factors, p0 - 0.05 * g.user_factors.sum(0), rtol=1e-5)
    assert update.counts.tolist() == [1, 3, 1] and metrics["num-examples"] == 5


@pytest.mark.parametrize("optimizer", ["gd", "sgd", "online"])
def test_local_training_lowers_the_local_loss(optimizer):
    items = np.arange(0, 30, 2)
    values = np.where(items % 4 == 0, 5.0, 1.0).astype(np.float32)
    dev = Device(items, values, seed=1)
    cfg = TrainConfig(loss="mse", optimizer=optimizer, local_epochs=3, lr=0.05,
                      batch_size=4)
    q, b = Q.copy(), B.copy()
    losses = []
    for _ in range(15):
        update, metrics = dev.train(q, b, 3.0, cfg)
        q[update.ids] -= update.rows
        b[update.ids] -= update.bias
        losses.append(metrics["train-loss"])
    assert losses[-1] < 0.3 * losses[0]


def test_implicit_negatives_are_never_the_devices_items_and_updates_cover_them():
    items = np.array([0, 3, 4, 9, 29])
    dev = Device(items, seed=3)
    negs = dev._negatives(np.unique(items), 30, 5000)
    assert not np.isin(negs, items).any() and negs.min() >= 0 and negs.max() < 30
    assert len(np.unique(negs)) == 25  # every other item can be drawn
    cfg = TrainConfig(loss="bce", optimizer="sgd", negatives=3, local_epochs=2)
    update, _ = dev.train(Q, B, 0.0, cfg)
    assert set(items.tolist()) <= set(update.ids.tolist())
    assert len(update.ids) > len(items)
    np.testing.assert_allclose(update.counts[np.isin(update.ids, items)], 1.0)


def test_with_a_pool_negatives_come_from_it_and_an_update_names_nothing_else():
    items = np.array([0, 3, 4, 9, 29])
    pool = np.array([1, 3, 7, 12, 20])  # 3 is the device's own: never its negative
    cfg = TrainConfig(loss="bce", optimizer="sgd", negatives=3, local_epochs=2,
                      negative_pool=0.2)
    update, _ = Device(items, seed=3).train(Q, B, 0.0, cfg, pool=pool)
    named = set(update.ids.tolist())
    assert set(items.tolist()) <= named <= set(items.tolist()) | set(pool.tolist())
    assert named - set(items.tolist()) == {1, 7, 12, 20}  # 30 draws reach all four
    # Without a pool the same device draws from the whole catalogue, as before.
    plain, _ = Device(items, seed=3).train(Q, B, 0.0, cfg)
    again, _ = Device(items, seed=3).train(Q, B, 0.0, cfg, pool=None)
    np.testing.assert_array_equal(plain.ids, again.ids)
    assert set(plain.ids.tolist()) - set(items.tolist()) - set(pool.tolist())
    # A pool holding only the device's own items leaves it no negative.
    lonely, _ = Device(items, seed=3).train(Q, B, 0.0, cfg, pool=np.array([0, 3]))
    assert set(lonely.ids.tolist()) == set(items.tolist())


@pytest.mark.parametrize("optimizer", ["gd", "sgd"])
def test_implicit_local_step_matches_the_general_gradients(optimizer):
    """One epoch of one full batch (gd) moves each touched row by exactly -lr x its summed
    gradient; with sgd the same rows move (in several steps)."""
    items = np.array([1, 4, 6])
    p0 = np.array([0.2, -0.1, 0.05, 0.3], np.float32)
    dev = Device(items, seed=5, state=UserState(p0.copy()))
    cfg = TrainConfig(loss="bce", optimizer=optimizer, local_epochs=1, lr=0.1, negatives=2,
                      batch_size=2)
    update, _ = dev.train(Q, B, 0.0, cfg)
    assert set(items.tolist()) < set(update.ids.tolist())
    if optimizer == "gd":
        label = np.isin(update.ids, items).astype(float)
        g = bce_grads(np.tile(p0, (len(label), 1)), Q[update.ids], B[update.ids], label,
                      Regularization(cfg.reg, cfg.reg_bias))
        np.testing.assert_allclose(update.rows, 0.1 * g.item_factors, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(update.bias, 0.1 * g.item_bias, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("explicit", [True, False])
def test_user_refit_takes_user_steps_gradient_steps_on_the_mean_loss(explicit):
    rng = np.random.default_rng(3)
    q, b = rng.normal(0, 0.3, (12, 4)), rng.normal(0, 0.1, 12)
    y = rng.uniform(1, 5, 12) if explicit else (rng.random(12) < 0.3).astype(float)
    reg = Regularization(0.05, 0.01)
    cfg = TrainConfig(loss="mse" if explicit else "bce", user_steps=7, user_lr=0.8)
    p, bu = rng.normal(0, 0.1, 4), 0.2
    want_p, want_bu = p.copy(), bu
    for _ in range(7):  # the plain definition, with the gradients tested above
        if explicit:
            gp, gb = mse_user_grads(3.0, want_p, want_bu, q, b, y, reg)
            want_bu -= 0.8 / 12 * gb
        else:
            gp = bce_user_grads(want_p, q, b, y, reg)
        want_p = want_p - 0.8 / 12 * gp
    got_p, got_bu = _fit_user(p, bu, q, b, y, 3.0, explicit, reg, cfg)
    np.testing.assert_allclose(got_p, want_p, rtol=1e-10)
    assert got_bu == pytest.approx(want_bu)


def test_online_steps_are_minus_lr_times_the_one_user_gradients():
    from fedrec.common.losses import online_bce_step, online_rating_step

    rng = np.random.default_rng(5)
    p, q, b = rng.normal(size=3), rng.normal(size=(4, 3)), rng.normal(size=4)
    label = np.array([1.0, 0.0, 0.0, 0.0])
    reg = Regularization(0.1, 0.05)
    g = bce_grads_one_user(p, q, b, label, reg)
    new_p, new_q, new_b = online_bce_step(p, q, b, label, 0.2, 0.1, 0.05)
    np.testing.assert_allclose(new_p, p - 0.2 * g.user_factors)
    np.testing.assert_allclose(new_q, q - 0.2 * g.item_factors)
    np.testing.assert_allclose(new_b, b - 0.2 * g.item_bias)
    g = mse_grads_one_user(3.0, p, 0.4, q[:1], b[:1], np.array([4.0]), reg)
    err = 3.0 + 0.4 + b[0] + q[0] @ p - 4.0
    new_p, new_bu, new_q, new_bi = online_rating_step(p, 0.4, q[0], b[0], err, 0.2, 0.1, 0.05)
    np.testing.assert_allclose(new_p, p - 0.2 * g.user_factors)
    assert new_bu == pytest.approx(0.4 - 0.2 * g.user_bias)
    np.testing.assert_allclose(new_q, q[0] - 0.2 * g.item_factors[0])
    assert new_bi == pytest.approx(b[0] - 0.2 * g.item_bias[0])


def test_a_gd_step_and_user_steps_weigh_negatives_by_negative_weight():
    """Implicit local training with ``negative_weight``: one GD epoch is −lr times the
    weighted BCE gradient (tested against finite differences), and the user-only steps are
    the plain loop over the weighted user gradient."""
    from fedrec.common.losses import bce_grads_one_user

    items = np.array([2, 7, 11])
    p0 = np.array([0.1, -0.2, 0.3, 0.05], np.float32)
    cfg = TrainConfig(loss="bce", optimizer="gd", local_epochs=1, lr=0.05, reg=0.01,
                      reg_bias=0.0, negatives=2, negative_weight=0.3)
    dev = Device(items, np.ones(3, np.float32), state=UserState(p0.copy(), 0.0), seed=6)
    update, _ = dev.train(Q, B, 0.0, cfg)
    label = np.isin(update.ids, items).astype(float)
    assert (label == 0).sum() > 0  # negatives were drawn
    g = bce_grads_one_user(p0.astype(np.float64), Q[update.ids].astype(np.float64),
                           B[update.ids].astype(np.float64), label,
                           Regularization(0.01, 0.0), negative_weight=0.3)
    np.testing.assert_allclose(update.rows, 0.05 * g.item_factors, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(update.bias, 0.05 * g.item_bias, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(dev.user.factors, p0 - 0.05 * g.user_factors, rtol=1e-4)

    rng = np.random.default_rng(3)
    q, b = rng.normal(0, 0.3, (12, 4)), rng.normal(0, 0.1, 12)
    y = (rng.random(12) < 0.3).astype(float)
    reg = Regularization(0.05, 0.0)
    steps = TrainConfig(loss="bce", user_steps=5, user_lr=0.8, negative_weight=0.3)
    want = rng.normal(0, 0.1, 4)
    p = want.copy()
    for _ in range(5):
        want = want - 0.8 / 12 * bce_user_grads(want, q, b, y, reg, negative_weight=0.3)
    got, _ = _fit_user(p, 0.0, q, b, y, 0.0, False, reg, steps)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    unweighted, _ = _fit_user(p, 0.0, q, b, y, 0.0, False, reg, replace(steps,
                                                                        negative_weight=1.0))
    assert not np.allclose(got, unweighted)
