"""The neighbours part's statistics, table and checks (fedrec.common.neighbours)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fedrec.common import neighbours as nb
from fedrec.common.schema import InvalidReplyError


def brute_sums(users: list[tuple[list[int], list[float]]], n_items: int, history: int):
    """The three sums by their definition: each rating paired with the user's ``history``
    ratings before it."""
    n, sxy, sxx = (np.zeros((n_items, n_items)) for _ in range(3))
    for items, res in users:
        for t in range(len(items)):
            for s in range(max(0, t - history), t):
                i, j, ei, ej = items[t], items[s], res[t], res[s]
                n[i, j] += 1
                n[j, i] += 1
                sxy[i, j] += ei * ej
                sxy[j, i] += ei * ej
                sxx[i, j] += ei * ei
                sxx[j, i] += ej * ej
    return n, sxy, sxx


def random_users(rng, n_users: int, n_items: int):
    out = []
    for _ in range(n_users):
        m = int(rng.integers(0, n_items))
        items = rng.permutation(n_items)[:m].tolist()
        out.append((items, rng.uniform(-4, 4, m).tolist()))
    return out


@pytest.mark.parametrize("history", [1, 3, 200])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sums_match_their_definition_however_the_ratings_are_batched(history, seed):
    """A device sends its new ratings a round at a time; the server pairs them with those
    it holds. Whatever the batching, the sums are the definition's (so a federation gets
    exactly what one pass over every user's ratings gives)."""
    rng = np.random.default_rng(seed)
    n_items = 12
    users = random_users(rng, 6, n_items)
    stats = nb.NeighbourStats(n_items)
    for items, res in users:
        items, res = np.array(items, np.int64), np.array(res)
        cuts = np.sort(rng.integers(0, len(items) + 1, size=3))
        bounds = [0, *cuts.tolist(), len(items)]
        for a, b in itertools.pairwise(bounds):
            stats.add(items[max(0, a - history):a], res[max(0, a - history):a],
                      items[a:b], res[a:b], history)
    n, sxy, sxx = brute_sums(users, n_items, history)
    np.testing.assert_allclose(stats.n, n)
    np.testing.assert_allclose(stats.sxy, sxy)
    np.testing.assert_allclose(stats.sxx, sxx)


def stats_of(seed: int, n_users: int, n_items: int) -> nb.NeighbourStats:
    """The sums of random users, each counted in one go."""
    stats = nb.NeighbourStats(n_items)
    for items, res in random_users(np.random.default_rng(seed), n_users, n_items):
        stats.add(np.empty(0, np.int64), np.empty(0), np.array(items, np.int64),
                  np.array(res), 200)
    return stats


def test_similarities_follow_the_formula():
    stats = stats_of(3, 40, 8)
    s = stats.similarities()
    for i in range(8):
        for j in range(8):
            n = stats.n[i, j]
            want = 0.0 if i == j or n < nb.MIN_COMMON else (
                stats.sxy[i, j] / np.sqrt(stats.sxx[i, j] * stats.sxx[j, i] + nb.EPS)
                * n / (n + nb.SHRINK))
            assert s[i, j] == pytest.approx(want)
    np.testing.assert_allclose(s, s.T)


def test_table_keeps_each_items_largest_similarities():
    stats = stats_of(4, 60, 10)
    s = stats.similarities()
    table = stats.table(3)
    assert table.ids.dtype == np.int16 and table.sims.dtype == np.float16
    for i in range(10):
        got = sorted(np.abs(s[i, table.ids[i][table.ids[i] >= 0]]), reverse=True)
        want = sorted(np.abs(s[i]), reverse=True)[:3]
        np.testing.assert_allclose(got, [w for w in want if w > 0])
        np.testing.assert_allclose(table.sims[i][table.ids[i] >= 0],
                                   s[i, table.ids[i][table.ids[i] >= 0]], rtol=1e-3)
    wide = stats.table(25)  # more neighbours than items: padded with -1
    assert wide.ids.shape == (10, 25) and (wide.ids[:, 10:] == -1).all()
    assert (wide.sims[wide.ids == -1] == 0).all()


def test_an_item_without_enough_co_raters_has_no_neighbours():
    stats = nb.NeighbourStats(3)
    for _ in range(nb.MIN_COMMON - 1):
        stats.add(np.empty(0, np.int64), np.empty(0), np.array([0, 1]),
                  np.array([1.0, 1.0]), 10)
    assert (stats.table(2).ids == -1).all()
    stats.add(np.empty(0, np.int64), np.empty(0), np.array([0, 1]), np.array([1.0, 1.0]),
              10)
    table = stats.table(2)
    assert table.ids[0, 0] == 1 and table.ids[1, 0] == 0 and table.ids[2, 0] == -1


def test_term_by_hand():
    table = nb.NeighbourTable(np.array([[1, 2, -1], [0, -1, -1], [-1, -1, -1]], np.int16),
                              np.array([[0.5, -0.25, 0], [0.5, 0, 0], [0, 0, 0]],
                                       np.float16))
    residual = np.array([0.0, 2.0, 1.0])
    rated = np.array([0.0, 1.0, 1.0])
    want = nb.WEIGHT * (0.5 * 2.0 - 0.25 * 1.0) / (0.75 + nb.LAMBDA)
    assert table.term(0, residual, rated) == pytest.approx(want)
    assert table.term(1, residual, rated) == 0.0  # its one neighbour is not rated
    assert table.term(2, residual, rated) == 0.0  # no neighbours
    assert table.term(7, residual, rated) == 0.0  # listed after the table was made


def test_stats_grow_with_the_catalogue_up_to_the_limit():
    stats = nb.NeighbourStats(2)
    stats.add(np.empty(0, np.int64), np.empty(0), np.array([0, 1]), np.array([1.0, 2.0]), 5)
    stats.grow(4)
    assert stats.n.shape == (4, 4) and stats.n[0, 1] == 1 and stats.sxy[1, 0] == 2.0
    with pytest.raises(ValueError, match="2,000 items"):
        stats.grow(nb.MAX_ITEMS + 1)


def contribution(items=(3, 5), residuals=(0.5, -1.0), counted=(1,), n_items=10, width=4.0,
                 claimed=2.0):
    return nb.check_contribution(
        np.asarray(items, np.int64) if not isinstance(items, np.ndarray) else items,
        np.asarray(residuals, np.float32) if not isinstance(residuals, np.ndarray)
        else residuals, np.asarray(counted, np.int64), n_items, width, claimed)


def test_an_honest_contribution_passes():
    np.testing.assert_array_equal(contribution(), [0.5, -1.0])
    assert contribution(items=(), residuals=(), claimed=0).shape == (0,)


@pytest.mark.parametrize("kwargs, field, reason", [
    ({"items": np.array([3.0, 5.0])}, "neighbours.items", "int64"),
    ({"items": np.array([[3, 5]], np.int64)}, "neighbours.items", "1-d"),
    ({"items": (3, 10)}, "neighbours.items", "outside"),
    ({"items": (-1, 3)}, "neighbours.items", "outside"),
    ({"items": (3, 3)}, "neighbours.items", "repeated"),
    ({"items": (1, 3)}, "neighbours.items", "counted already"),
    ({"claimed": 1.0}, "neighbours.items", "claims"),
    ({"residuals": (0.5,)}, "neighbours.residuals", "one float"),
    ({"residuals": np.array([1, 2], np.int64)}, "neighbours.residuals", "one float"),
    ({"residuals": (np.nan, 1.0)}, "neighbours.residuals", "finite"),
    ({"residuals": (4.5, 1.0)}, "neighbours.residuals", "within"),
    ({"residuals": (np.inf, 1.0)}, "neighbours.residuals", "finite"),
])
def test_a_hostile_contribution_is_refused_by_field(kwargs, field, reason):
    with pytest.raises(InvalidReplyError, match=reason) as info:
        contribution(**kwargs)
    assert info.value.reason == field


def good_table_arrays():
    return {"ids": np.array([[1, -1], [0, -1]], np.int16),
            "sims": np.array([[0.5, 0], [0.5, 0]], np.float16)}


@pytest.mark.parametrize("change, match", [
    ({"ids": np.array([[1, -1], [0, -1]], np.int32)}, "int16"),
    ({"ids": None}, "int16"),
    ({"sims": np.array([[0.5, 0], [0.5, 0]], np.float32)}, "float16"),
    ({"sims": np.array([[0.5], [0.5]], np.float16)}, "shape"),
    ({"ids": np.array([[2, -1], [0, -1]], np.int16)}, "outside"),
    ({"ids": np.array([[1, -2], [0, -1]], np.int16)}, "outside"),
    ({"sims": np.array([[np.nan, 0], [0.5, 0]], np.float16)}, "finite"),
    ({"sims": np.array([[1.5, 0], [0.5, 0]], np.float16)}, "within"),
])
def test_a_damaged_table_is_refused_by_field(change, match):
    arrays = {**good_table_arrays(), **change}
    with pytest.raises(ValueError, match=match):
        nb.NeighbourTable.from_arrays(arrays, 2)


def test_a_table_larger_than_the_catalogue_is_refused():
    nb.NeighbourTable.from_arrays(good_table_arrays(), 2)
    with pytest.raises(ValueError, match="for 1 items"):
        nb.NeighbourTable.from_arrays(good_table_arrays(), 1)


def saved_stats():
    stats = nb.NeighbourStats(4)
    for _ in range(3):
        stats.add(np.empty(0, np.int64), np.empty(0), np.array([0, 2, 3]),
                  np.array([1.0, -0.5, 2.0]), 10)
    return stats.arrays()


def test_stats_round_trip():
    arrays = saved_stats()
    back = nb.NeighbourStats.from_arrays(arrays, 4)
    for name, a in arrays.items():
        np.testing.assert_array_equal(getattr(back, name), a)


@pytest.mark.parametrize("name, value, match", [
    ("n", None, "square float64"),
    ("n", np.zeros((4, 3)), "square float64"),
    ("sxy", np.zeros((4, 4), np.float32), "square float64"),
    ("sxx", np.full((4, 4), np.nan), "finite"),
    ("n", np.zeros((5, 5)), "square float64"),  # more rows than the catalogue
    ("n", np.triu(np.ones((4, 4))), "symmetric"),
    ("n", np.full((4, 4), 0.5), "whole"),
    ("sxx", -np.ones((4, 4)), "non-negative"),
    ("sxy", np.zeros((3, 3)), "one shape"),
])
def test_damaged_stats_are_refused_by_field(name, value, match):
    arrays = {**saved_stats(), name: value}
    with pytest.raises(ValueError, match=match):
        nb.NeighbourStats.from_arrays(arrays, 4)


@pytest.mark.parametrize("k", [-1, nb.MAX_K + 1, 1.5, True, "50"])
def test_k_out_of_range_is_refused(k):
    with pytest.raises(ValueError, match="neighbours must be"):
        nb.check_k(k)


def test_a_devices_scalar_residual_is_the_servers_quantised_one():
    """The device and the centralized model keep residuals with the scalar helper; the
    server quantises what it receives: the same steps, ties to even alike."""
    rng = np.random.default_rng(12)
    values = np.concatenate([rng.uniform(-6, 6, 2_000),
                             (np.arange(-40, 41) + 0.5) * nb.STEP])  # (exact ties)
    got = np.array([nb.residual(v, 0.0, 4.0) for v in values])
    np.testing.assert_array_equal(got, nb.quantised(np.clip(values, -4.0, 4.0)))
    assert np.abs(got).max() == 4.0


def test_the_catalogue_limit_names_the_fix():
    nb.check_catalogue(nb.MAX_ITEMS, "a shop")
    assert nb.fits(nb.MAX_ITEMS) and not nb.fits(nb.MAX_ITEMS + 1)
    with pytest.raises(ValueError, match=r"a shop has 2,001 .*set neighbours=0"):
        nb.check_catalogue(nb.MAX_ITEMS + 1, "a shop")
