"""The secagg+dp learner's statistics: the device's vector, the user solve and the
server's item solve, checked against the squared-loss objective they minimise."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.common import als


def objective_user(p: np.ndarray, q: np.ndarray, b: np.ndarray, r: np.ndarray,
                   reg: float) -> float:
    return float(((r - b - q @ p) ** 2).sum() + reg * p @ p)


def test_the_user_solve_is_the_minimiser() -> None:
    rng = np.random.default_rng(0)
    q, b = rng.normal(size=(40, 5)), rng.normal(size=40) * 0.1
    pos = np.array([1, 7, 30])
    r = np.zeros(40)
    r[pos] = 1
    p = als.user_solve(q, b, pos, 0.7)
    eps = 1e-6
    grad = [(objective_user(p + eps * e, q, b, r, 0.7)
             - objective_user(p - eps * e, q, b, r, 0.7)) / (2 * eps) for e in np.eye(5)]
    assert np.abs(grad).max() < 1e-5


def test_the_vector_holds_the_gram_and_the_rows_of_the_positives() -> None:
    layout = als.Layout(3, np.array([2, 5, 9, 11]))
    p = np.array([0.5, -1.0, 2.0])
    x = als.contribution(p, np.array([5, 6, 11, 5]), layout, 2.0)
    assert x.shape == (layout.dim,) and np.isclose(np.linalg.norm(x), 2.0)
    gram, sums = als.read(x, layout)
    pt = np.append(p, 1.0)
    c = gram[-1, -1]  # the constant's square, times c
    assert np.allclose(gram, c * np.outer(pt, pt))
    assert np.allclose(sums[[1, 3]], c * pt) and np.allclose(sums[[0, 2]], 0)
    with pytest.raises(ValueError, match="values"):
        als.read(x[:-1], layout)
    with pytest.raises(ValueError, match="sorted"):
        als.Layout(3, np.array([3, 1]))


def test_the_item_solve_minimises_the_weighted_objective() -> None:
    """The server's rows from the summed statistics are the exact minimiser of
    Σ_u c_u Σ_i (r_ui − p̃_u·q̃_i)² + reg·|q̃_i|² over the row set's items."""
    rng = np.random.default_rng(1)
    users, items, k = 30, 12, 3
    layout = als.Layout(k, np.arange(items))
    r = (rng.random((users, items)) < 0.3).astype(float)
    ps = rng.normal(size=(users, k))
    total = np.zeros(layout.dim)
    weights = []
    for u in range(users):
        x = als.contribution(ps[u], np.flatnonzero(r[u]), layout, 1.0)
        weights.append(als.read(x, layout)[0][-1, -1])
        total += x
    rows, bias = als.solve(*als.read(total, layout), reg=0.5)
    c = np.array(weights)
    pt = np.c_[ps, np.ones(users)]

    def objective(qt: np.ndarray) -> float:
        return float((c[:, None] * (r - pt @ qt.T) ** 2).sum() + 0.5 * (qt ** 2).sum())

    qt = np.c_[rows, bias]
    base = objective(qt)
    for _ in range(20):
        assert objective(qt + 1e-3 * rng.normal(size=qt.shape)) > base


def test_rows_no_longer_than_their_noise_are_zeroed() -> None:
    gram = np.eye(3) * 10
    sums = np.array([[3.0, 0, 0], [0.1, 0.1, 0.0]])
    rows, bias = als.solve(gram, sums, reg=1.0, noise_var=0.05)
    assert np.allclose(rows[1], 0) and bias[1] == 0
    assert rows[0][0] > 0  # shrunk (by 1 − 3·0.05/9), kept
    plain, _ = als.solve(gram, sums, reg=1.0)
    assert 0 < rows[0][0] < plain[0][0]


def test_the_popularity_vector_and_the_row_choice() -> None:
    x = als.popularity(np.array([3, 1, 3]), 6, 2.0)
    assert np.isclose(np.linalg.norm(x), 2.0) and np.count_nonzero(x) == 2
    assert als.top_rows(np.array([0.5, 3.0, 3.0, -1.0]), 2).tolist() == [1, 2]
    assert als.top_rows(np.array([1.0, 2.0]), 5).tolist() == [0, 1]
