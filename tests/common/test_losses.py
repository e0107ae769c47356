"""Gradients of every loss against central finite differences, in float64."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrec.common.losses import (
    Regularization,
    bce_grads,
    bpr_grads,
    mse_grads,
    sigmoid,
    softplus,
)

REG = Regularization(factors=0.07, bias=0.03)
EPS = 1e-6


def _objective_mse(mean, pu, bu, qi, bi, r):
    g = mse_grads(mean, pu, bu, qi, bi, r, REG)
    reg = 0.5 * REG.factors * ((pu ** 2).sum() + (qi ** 2).sum()) + 0.5 * REG.bias * (
        (bu ** 2).sum() + (bi ** 2).sum())
    return g.loss.sum() + reg


def _fd(f, x):
    """Central finite-difference gradient of scalar f with respect to array x (in place)."""
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + EPS
        up = f()
        x[idx] = old - EPS
        down = f()
        x[idx] = old
        grad[idx] = (up - down) / (2 * EPS)
    return grad


def _inputs(seed, n=5, k=4):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, k)), rng.normal(size=n), rng.normal(size=(n, k)),
            rng.normal(size=n))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mse_gradients_match_finite_differences(seed):
    pu, bu, qi, bi = _inputs(seed)
    r = np.random.default_rng(seed + 10).uniform(1, 5, size=len(bu))
    g = mse_grads(3.5, pu, bu, qi, bi, r, REG)

    def f():
        return _objective_mse(3.5, pu, bu, qi, bi, r)

    np.testing.assert_allclose(g.user_factors, _fd(f, pu), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g.user_bias, _fd(f, bu), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g.item_factors, _fd(f, qi), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g.item_bias, _fd(f, bi), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bce_gradients_match_finite_differences(seed):
    pu, _, qi, bi = _inputs(seed)
    label = np.array([1.0, 0.0, 1.0, 0.0, 0.0])
    w = np.array([1.0, 0.5, 2.0, 1.0, 0.25])

    def f():
        loss = bce_grads(pu, qi, bi, label, REG, w).loss.sum()
        return loss + 0.5 * REG.factors * ((pu ** 2).sum() + (qi ** 2).sum()) + \
            0.5 * REG.bias * (bi ** 2).sum()

    g = bce_grads(pu, qi, bi, label, REG, w)
    np.testing.assert_allclose(g.user_factors, _fd(f, pu), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g.item_factors, _fd(f, qi), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g.item_bias, _fd(f, bi), rtol=1e-5, atol=1e-7)
    assert not g.user_bias.any()  # the implicit score has no user bias


@pytest.mark.parametrize("seed", [0, 1])
def test_bpr_gradients_match_finite_differences(seed):
    pu, _, qp, bp = _inputs(seed)
    _, _, qn, bn = _inputs(seed + 100)

    def f():
        loss = bpr_grads(pu, qp, bp, qn, bn, REG).loss.sum()
        return loss + 0.5 * REG.factors * ((pu ** 2).sum() + (qp ** 2).sum() + (qn ** 2).sum()) \
            + 0.5 * REG.bias * ((bp ** 2).sum() + (bn ** 2).sum())

    g = bpr_grads(pu, qp, bp, qn, bn, REG)
    for got, x in ((g.user_factors, pu), (g.pos_factors, qp), (g.pos_bias, bp),
                   (g.neg_factors, qn), (g.neg_bias, bn)):
        np.testing.assert_allclose(got, _fd(f, x), rtol=1e-5, atol=1e-7)


def test_mse_loss_is_half_squared_error():
    g = mse_grads(3.0, np.zeros((1, 2)), np.array([0.5]), np.zeros((1, 2)), np.array([0.0]),
                  np.array([4.5]), Regularization(0, 0))
    assert g.loss[0] == pytest.approx(0.5)  # (3.5 - 4.5)² / 2


@settings(max_examples=60, deadline=None)
@given(st.floats(-800, 800))
def test_softplus_and_sigmoid_are_stable(x):
    arr = np.array([x])
    assert np.isfinite(softplus(arr)).all()
    s = sigmoid(arr)[0]
    assert 0.0 <= s <= 1.0
    assert s == pytest.approx(1.0 / (1.0 + np.exp(-x)) if x > -700 else 0.0, abs=1e-12)


def test_regularization_rejects_negative_strength():
    with pytest.raises(ValueError, match="must be >= 0"):
        Regularization(-0.1, 0.0)


@pytest.mark.parametrize("weight", [0.125, 1.0, 3.0])
def test_one_user_bce_with_a_negative_weight_matches_finite_differences(weight):
    """Devices' BCE (one user, negatives weighted): every gradient against finite
    differences of the weighted loss, and the user-only and online forms equal to it."""
    from fedrec.common.losses import (
        bce_grads_one_user,
        bce_user_grads,
        negative_weights,
        online_bce_step,
    )

    rng = np.random.default_rng(4)
    p, q, b = rng.normal(size=4), rng.normal(size=(6, 4)), rng.normal(size=6)
    label = np.array([1.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    w = np.where(label > 0, 1.0, weight)
    if weight != 1:
        np.testing.assert_array_equal(negative_weights(label, weight), w)
    assert negative_weights(label, 1.0) is None  # (the unweighted path is untouched)

    def f():
        s = q @ p + b
        return float((w * (softplus(s) - label * s)).sum()
                     + 0.5 * REG.factors * (len(label) * (p ** 2).sum() + (q ** 2).sum())
                     + 0.5 * REG.bias * (b ** 2).sum())

    g = bce_grads_one_user(p, q, b, label, REG, negative_weight=weight)
    np.testing.assert_allclose(g.user_factors, _fd(f, p), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g.item_factors, _fd(f, q), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g.item_bias, _fd(f, b), rtol=1e-5, atol=1e-7)
    s = q @ p + b
    assert g.loss == pytest.approx(float((w * (softplus(s) - label * s)).sum()))
    np.testing.assert_allclose(bce_user_grads(p, q, b, label, REG, negative_weight=weight),
                               g.user_factors, rtol=1e-12)
    new_p, new_q, new_b = online_bce_step(p, q, b, label, 0.2, REG.factors, REG.bias,
                                          negative_weight=weight)
    np.testing.assert_allclose(new_p, p - 0.2 * g.user_factors)
    np.testing.assert_allclose(new_q, q - 0.2 * g.item_factors)
    np.testing.assert_allclose(new_b, b - 0.2 * g.item_bias)


def test_a_negative_weight_scales_the_push_on_negatives_only():
    from fedrec.common.losses import online_bce_step

    rng = np.random.default_rng(9)
    p, q, b = rng.normal(size=3), rng.normal(size=(5, 3)), rng.normal(size=5)
    label = np.array([1.0, 0.0, 0.0, 0.0, 0.0])
    _, q1, b1 = online_bce_step(p, q, b, label, 0.3, 0.0, 0.0)
    _, qw, bw = online_bce_step(p, q, b, label, 0.3, 0.0, 0.0, negative_weight=0.25)
    np.testing.assert_allclose(qw[0] - q[0], q1[0] - q[0])  # the event's row: as before
    np.testing.assert_allclose(bw[0] - b[0], b1[0] - b[0])
    np.testing.assert_allclose(qw[1:] - q[1:], 0.25 * (q1[1:] - q[1:]))  # negatives: a quarter
    np.testing.assert_allclose(bw[1:] - b[1:], 0.25 * (b1[1:] - b[1:]))
