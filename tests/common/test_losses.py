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
