"""Row-sparse step rules and the row summation they rely on."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedrec.common.optim import (
    SGD,
    Adagrad,
    Adam,
    Count,
    make_step_rule,
    sum_rows,
    sum_rows_counted,
)


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
    _, _, counts = sum_rows_counted(rows, grads)
    np.testing.assert_array_equal(counts, np.bincount(rows)[uniq])


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


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=1, max_size=30), st.floats(0.5, 20),
       st.integers(1, 6))
def test_count_with_lr_times_halving_one_is_a_ridge_mean_however_moves_are_batched(
        targets, halving, batch):
    """Each move is the squared loss's gradient ``b − x`` against the row's value; with
    ``lr·h = 1`` the row is the mean of the targets with ``h − 1`` pseudo-targets at its
    start, whether the moves come one at a time or ``batch`` at once against a stale row."""
    start = 0.7
    x = np.array(targets)
    one = np.array([start])
    rule = Count(1 / halving, (1,), halving)
    for t in x:
        rule.step(one, np.array([0]), one - t)
    batched = np.array([start])
    rule_b = Count(1 / halving, (1,), halving)
    for lo in range(0, len(x), batch):
        part = x[lo:lo + batch]
        rule_b.step(batched, np.array([0]), np.array([(batched[0] - part).sum()]),
                    np.array([float(len(part))]))
    expected = ((halving - 1) * start + x.sum()) / (halving - 1 + len(x))
    assert one[0] == pytest.approx(expected, abs=1e-9)
    assert batched[0] == pytest.approx(expected, abs=1e-9)
    assert rule.n[0] == rule_b.n[0] == len(x)


def test_count_halves_a_rows_step_at_the_halving_count_and_leaves_other_rows():
    table = np.zeros((3, 2), dtype=np.float32)
    rule = Count(0.5, table.shape, halving=4.0)
    g = np.ones((1, 2), dtype=np.float32)
    steps = []
    for _ in range(5):
        before = table[1].copy()
        rule.step(table, np.array([1]), g)
        steps.append(float(before[0] - table[1, 0]))
    np.testing.assert_allclose(steps, [0.5 * 4 / (4 + n) for n in range(5)], rtol=1e-6)
    assert steps[4] == pytest.approx(steps[0] / 2, rel=1e-6)  # after 4 moves: half
    assert (table[[0, 2]] == 0).all() and list(rule.n) == [0, 5, 0]
    rule.grow(5)
    assert list(rule.n) == [0, 5, 0, 0, 0]
    # A move not counted (k = 0) takes the step the next counted one would, and leaves n.
    before = table[1, 0]
    rule.step(table, np.array([1]), g, np.array([0.0]))
    assert before - table[1, 0] == pytest.approx(0.5 * 4 / (4 + 5), rel=1e-6)
    assert rule.n[1] == 5
    with pytest.raises(ValueError, match="counts must be one number >= 0 per row"):
        rule.step(table, np.array([0, 2]), np.ones((2, 2), np.float32), np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="counts must be one number >= 0 per row"):
        rule.step(table, np.array([0, 2]), np.ones((2, 2), np.float32), np.array([1.0]))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), True, "4"])
def test_count_refuses_a_halving_that_is_not_a_positive_number(bad):
    with pytest.raises(ValueError, match="halving must be a number in"):
        Count(0.1, (2,), bad)
    with pytest.raises(ValueError, match="halving must be a number in"):
        make_step_rule("count", 0.1, (2,), bad)


