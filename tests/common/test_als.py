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


def test_the_rating_user_solve_is_the_minimiser() -> None:
    rng = np.random.default_rng(2)
    q, b = rng.normal(size=(30, 3)), rng.normal(size=30) * 0.2
    items = np.array([2, 5, 9, 11, 20])
    r = rng.integers(1, 6, size=5).astype(float)
    p, bu = als.rating_user_solve(q, b, 3.5, items, r, 0.8)

    def objective(w: np.ndarray) -> float:
        pred = 3.5 + b[items] + w[-1] + q[items] @ w[:-1]
        return float(((r - pred) ** 2).sum() + 0.8 * w[:-1] @ w[:-1]
                     + als.USER_BIAS_REG * 0.8 * w[-1] ** 2)

    w = np.append(p, bu)
    eps = 1e-6
    grad = [(objective(w + eps * e) - objective(w - eps * e)) / (2 * eps) for e in np.eye(4)]
    assert np.abs(grad).max() < 1e-5


def test_the_rating_solve_minimises_each_rows_objective_and_never_diverges() -> None:
    rng = np.random.default_rng(3)
    users, items, k = 25, 6, 2
    layout = als.RatingLayout(k, np.arange(items))
    ps, bus = rng.normal(size=(users, k)), rng.normal(size=users) * 0.3
    rated = [np.flatnonzero(rng.random(items) < 0.6) for _ in range(users)]
    ratings = [rng.integers(1, 6, size=len(r)).astype(float) for r in rated]
    total, weights = np.zeros(layout.dim), []
    for u in range(users):
        x = als.rating_contribution(ps[u], bus[u], 3.0, rated[u], ratings[u], layout, 1.0)
        assert np.isclose(np.linalg.norm(x), 1.0)
        grams, _ = als.rating_read(x, layout)
        weights.append(grams[rated[u][0], -1, -1])  # c, on the constant's square
        total += x
    grams, sums = als.rating_read(total, layout)
    rows, bias = als.rating_solve(grams, sums, reg=0.5)
    for i in range(items):
        raters = [u for u in range(users) if i in rated[u]]

        def objective(qt: np.ndarray, i: int = i, raters: list = raters) -> float:
            out = 0.5 * qt @ qt
            for u in raters:
                r = ratings[u][list(rated[u]).index(i)]
                out += weights[u] * (r - 3.0 - bus[u] - np.append(ps[u], 1.0) @ qt) ** 2
            return out

        qt = np.append(rows[i], bias[i])
        for _ in range(10):
            assert objective(qt + 1e-3 * rng.normal(size=qt.shape)) > objective(qt)
    # Pure noise, any size: the PSD projection and the ridge keep every row bounded.
    noisy = rng.normal(0, 50.0, size=layout.dim)
    grams, sums = als.rating_read(noisy, layout)
    rows, bias = als.rating_solve(grams, sums, reg=0.5, noise_var=50.0 ** 2)
    bound = np.linalg.norm(sums, axis=1) / 0.5
    assert (np.linalg.norm(np.c_[rows, bias], axis=1) <= bound + 1e-9).all()


def test_mu_is_the_mean_of_users_means_on_the_scale() -> None:
    parts = [als.mean_part(np.array(r, float), (1.0, 5.0), 1.0)
             for r in ([5, 5], [1, 3], [4])]
    assert all(np.linalg.norm(p) <= 1.0 + 1e-12 for p in parts)
    assert np.isclose(als.read_mean(sum(parts), (1.0, 5.0)), (5 + 2 + 4) / 3)
    assert not als.mean_part(np.array([]), (1.0, 5.0), 1.0).any()
    assert als.read_mean(np.zeros(2), (1.0, 5.0)) == 3.0
