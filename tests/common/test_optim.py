"""Row-sparse step rules and the row summation they rely on."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedrec.common.optim import SGD, Adagrad, Adam, make_step_rule, sum_rows


@settings(max_examples=50, deadline=None)
@given(arrays(np.int64, st.integers(1, 40), elements=st.integers(0, 9)))
def test_sum_rows_equals_add_at(rows):
    grads = np.random.default_rng(len(rows)).normal(size=(len(rows), 3))
    uniq, summed = sum_rows(rows, grads)
    expected = np.zeros((10, 3))
    np.add.at(expected, rows, grads)
    assert np.array_equal(uniq, np.unique(rows))
    np.testing.assert_allclose(summed, expected[uniq])
    _, summed1 = sum_rows(rows, grads[:, 0])
    np.testing.assert_allclose(summed1, expected[uniq, 0])


def test_sgd_moves_only_touched_rows():
    table = np.ones((4, 2), dtype=np.float32)
    SGD(0.5).step(table, np.array([1, 3]), np.full((2, 2), 2.0, dtype=np.float32))
    np.testing.assert_array_equal(table, [[1, 1], [0, 0], [1, 1], [0, 0]])


def test_adagrad_matches_its_formula():
    table = np.zeros((2, 1), dtype=np.float32)
    rule = Adagrad(0.1, table.shape)
    for g in (3.0, 4.0):
        rule.step(table, np.array([0]), np.array([[g]], dtype=np.float32))
    expected = -0.1 * 3 / 3 - 0.1 * 4 / 5
    assert table[0, 0] == pytest.approx(expected, rel=1e-6)
    assert table[1, 0] == 0


def test_lazy_adam_equals_dense_adam_when_every_row_is_touched():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(3, 2)).astype(np.float32)
    ref = table.astype(np.float64)
    rule = Adam(0.01, table.shape)
    m = np.zeros_like(ref)
    v = np.zeros_like(ref)
    for t in range(1, 6):
        g = rng.normal(size=ref.shape)
        rule.step(table, np.arange(3), g.astype(np.float32))
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        ref -= 0.01 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    np.testing.assert_allclose(table, ref, rtol=1e-4, atol=1e-6)


def test_lazy_adam_counts_steps_per_row():
    table = np.zeros((2, 1), dtype=np.float32)
    rule = Adam(0.1, table.shape)
    rule.step(table, np.array([0]), np.array([[1.0]], dtype=np.float32))
    rule.step(table, np.array([1]), np.array([[1.0]], dtype=np.float32))
    # Each row took its first step: bias-corrected Adam moves it by lr exactly.
    np.testing.assert_allclose(table[:, 0], [-0.1, -0.1], rtol=1e-4)


def test_grow_keeps_state_and_adds_zero_rows():
    rule = Adagrad(0.1, (2, 3))
    rule.accum[:] = 5
    rule.grow(4)
    assert rule.accum.shape == (4, 3)
    assert (rule.accum[:2] == 5).all() and (rule.accum[2:] == 0).all()
    with pytest.raises(ValueError, match="can only grow"):
        rule.grow(1)


def test_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="Found 0"):
        SGD(0)
    with pytest.raises(ValueError, match="Unknown step rule 'rmsprop'"):
        make_step_rule("rmsprop", 0.1, (1,))
    with pytest.raises(ValueError, match="betas"):
        Adam(0.1, (1,), beta1=1.0)
