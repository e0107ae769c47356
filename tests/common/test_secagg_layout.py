"""The dense vector a device hands to SecAgg+: its sum gives what the plain fold gives."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.common.schema import ItemUpdate
from fedrec.common.secagg import Block, densify, read_sum
from fedrec.server.aggregate import aggregate


def random_update(rng: np.random.Generator, n_items: int, k: int) -> ItemUpdate:
    m = int(rng.integers(1, n_items))
    ids = np.sort(rng.choice(n_items, m, replace=False)).astype(np.int64)
    return ItemUpdate(ids, rng.normal(0, 0.1, (m, k)).astype(np.float32),
                      rng.normal(0, 0.1, m).astype(np.float32),
                      rng.integers(1, 30, m).astype(np.float32))


@pytest.mark.parametrize("weighting", ["uniform", "capped", "sum"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_sum_of_dense_vectors_gives_the_plain_fold(weighting, seed):
    rng = np.random.default_rng(seed)
    ups = [random_update(rng, 40, 5) for _ in range(7)]
    total = [sum(parts) for parts in zip(*(densify(u, 40, weighting, cap=10.0) for u in ups),
                                          strict=True)]
    dense = read_sum(total, weighting, devices=7, max_norm=10.0)
    plain = aggregate(ups, weighting, cap=10.0)
    assert dense.refused == {}
    assert dense.ids.tolist() == plain.ids.tolist()
    np.testing.assert_allclose(dense.rows, plain.rows, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dense.bias, plain.bias, rtol=1e-5, atol=1e-6)
    assert dense.devices.tolist() == plain.devices.tolist()


def test_sums_no_honest_round_produces_are_refused_item_by_item():
    rng = np.random.default_rng(3)
    ups = [random_update(rng, 20, 4) for _ in range(5)]
    total = [sum(parts) for parts in zip(*(densify(u, 20) for u in ups), strict=True)]
    honest = read_sum([t.copy() for t in total], devices=5, max_norm=10.0)
    rows, bias, weight, touched = (t.copy() for t in total)
    a, b, c, d = honest.ids[:4]
    touched[a] += 0.5  # no whole number of devices
    touched[b] = weight[b] = 9.0  # more devices than the round had
    rows[c] += 100.0  # a row beyond the norm bound times its weight
    weight[d] = touched[d] + 3.0  # more weight than devices behind it
    dense = read_sum([rows, bias, weight, touched], devices=5, max_norm=10.0)
    assert dense.refused == {"touched": 2, "weight": 1, "norm": 1}
    assert set(dense.ids.tolist()) == set(honest.ids.tolist()) - {a, b, c, d}
    # Under uniform weighting every device weighs a row 1: a device claiming a smaller
    # weight (to shrink the divisor of the mean) makes the item's sum refused.
    rows, bias, weight, touched = (t.copy() for t in total)
    e = honest.ids[4]
    weight[e] -= 0.9
    shrunk = read_sum([rows, bias, weight, touched], devices=5, max_norm=10.0)
    assert shrunk.refused == {"weight": 1} and e not in shrunk.ids
    with pytest.raises(ValueError, match="weighting must be one of"):
        densify(ups[0], 20, "count")


def test_a_bucket_s_mean_comes_back_and_impossible_sums_are_refused():
    from fedrec.common.secagg import mean_vector, read_mean_sum

    users = [np.array([4.0, 5.0]), np.array([1.0, 3.0, 2.0]), np.array([])]
    total = [sum(mean_vector(r, (1.0, 5.0))[0] for r in users)]
    assert all(0 <= v <= 1 for r in users for v in mean_vector(r, (1.0, 5.0))[0])
    bucket = read_mean_sum(total, 3, (1.0, 5.0))
    assert bucket.rated == 2 and bucket.mean == pytest.approx((4.5 + 2.0) / 2)
    for bad, problem in [([np.array([2.5, 1.0])], "not a whole number"),
                         ([np.array([4.0, 1.0])], "not a whole number in range"),
                         ([np.array([2.0, 7.0])], "position sum"),
                         ([np.array([np.nan, 1.0])], "not finite")]:
        with pytest.raises(ValueError, match=problem):
            read_mean_sum(bad, 3, (1.0, 5.0))


def test_one_hostile_bucket_moves_the_trimmed_mean_by_a_bucket_s_share_at_most():
    from fedrec.common.secagg import BucketMean
    from fedrec.server.mean import trimmed_mean

    rng = np.random.default_rng(0)
    buckets = [BucketMean(16, 16.0, float(m)) for m in rng.normal(3.6, 0.1, 40)]
    honest = trimmed_mean(buckets, (1.0, 5.0))
    for value in (1.0, 5.0):
        for i in range(len(buckets)):
            hostile = [*buckets[:i], BucketMean(16, 16.0, value), *buckets[i + 1:]]
            assert abs(trimmed_mean(hostile, (1.0, 5.0)) - honest) < 0.02
    assert trimmed_mean([], (1.0, 5.0)) == 3.0


# ---- the public block of rows a round's sum covers -----------------------------------
@pytest.mark.parametrize("n,size", [(10, 3), (12, 4), (7, 7), (7, 0), (7, 20)])
def test_blocks_cover_every_row_once_per_cycle(n, size):
    cycle = -(-n // size) if 0 < size < n else 1
    seen = np.concatenate([Block.of_round(r, size, n).ids for r in range(1, cycle + 1)])
    assert set(seen.tolist()) == set(range(n))
    if 0 < size < n:
        assert len(Block.of_round(1, size, n).ids) == size
        assert np.array_equal(Block.of_round(1, size, n).ids,
                              Block.of_round(cycle + 1, size, n).ids) == (n % size == 0)
    else:
        assert Block.of_round(5, size, n).whole


def test_a_block_that_wraps_puts_each_row_at_its_own_position():
    block = Block(8, 4, 10)  # rows 8, 9, 0, 1
    assert block.ids.tolist() == [8, 9, 0, 1]
    assert block.position(block.ids).tolist() == [0, 1, 2, 3]
    assert block.contains(np.arange(10)).tolist() == [True, True] + [False] * 6 + [True] * 2


@pytest.mark.parametrize("start,size,n", [(0, 0, 5), (5, 2, 5), (-1, 2, 5), (0, 6, 5)])
def test_a_block_outside_the_catalogue_is_refused(start, size, n):
    with pytest.raises(ValueError, match="does not fit"):
        Block(start, size, n)


def test_a_blocks_sum_reads_as_the_full_sum_restricted_to_the_block():
    rng = np.random.default_rng(3)
    ups = [random_update(rng, 30, 4) for _ in range(6)]
    block = Block(25, 10, 30)  # wraps: rows 25..29, 0..4
    full = read_sum([sum(p) for p in zip(*(densify(u, 30) for u in ups), strict=True)])
    part = read_sum([sum(p) for p in zip(*(densify(u, 30, block=block) for u in ups),
                                         strict=True)])
    ids = block.ids[part.ids]
    order = np.argsort(ids)
    keep = np.isin(full.ids, block.ids)
    assert np.array_equal(ids[order], full.ids[keep])
    np.testing.assert_allclose(part.rows[order], full.rows[keep], rtol=1e-6)
    np.testing.assert_allclose(part.devices[order], full.devices[keep])
    with pytest.raises(ValueError, match="catalogue of 30, not 31"):
        densify(ups[0], 31, block=block)

