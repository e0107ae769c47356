"""The count sketch secagg+dp chooses its row set with on a large catalogue."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.common import als
from fedrec.common.sketch import Sketch


def test_the_sketch_is_linear_and_its_hashes_are_public_and_fixed():
    s = Sketch(1_000, 64, seed=3)
    rng = np.random.default_rng(0)
    a, b = rng.choice(1_000, 30, replace=False), rng.choice(1_000, 30, replace=False)
    va, vb = rng.random(30), rng.random(30)
    both = s.encode(np.concatenate([a, b]), np.concatenate([va, vb]), np.inf)
    np.testing.assert_allclose(both, s.encode(a, va, np.inf) + s.encode(b, vb, np.inf))
    assert np.array_equal(s.encode(a, va, np.inf), Sketch(1_000, 64, seed=3).encode(a, va,
                                                                                    np.inf))
    assert not np.array_equal(s.encode(a, va, np.inf),
                              Sketch(1_000, 64, seed=4).encode(a, va, np.inf))
    assert s.dim == 3 * 64 and Sketch.of_values(1_000, 200).dim == 198


def test_every_sketch_is_clipped_to_the_norm_and_foreign_items_are_left_out():
    s = Sketch(500, 10)
    x = s.encode(np.arange(400), np.ones(400), clip=2.0)  # many collisions
    assert np.linalg.norm(x) == pytest.approx(2.0)
    assert not s.encode(np.array([-1, 500, 10**9]), np.ones(3), 1.0).any()
    with pytest.raises(ValueError, match="198 values"):
        Sketch.of_values(1_000, 200).estimate(np.zeros(10))


def test_the_summed_sketch_finds_the_heavy_items_under_noise():
    """Zipf popularity over 50,000 items, 2,000 devices of about 20 items each, a sketch of
    6,000 values (an eighth of the catalogue) with unit Gaussian noise on every value: the
    300 rows it chooses hold at least 80 % of the count mass of the true top 300, and at
    least 85 % of what one value per item under the same noise holds. 300 random rows
    hold under 2 %."""
    n, rng = 50_000, np.random.default_rng(1)
    p = 1.0 / np.arange(1, n + 1) ** 1.1
    s = Sketch.of_values(n, 6_000, seed=9)
    total, exact = np.zeros(s.dim), np.zeros(n)
    for _ in range(2_000):
        items = np.unique(rng.choice(n, 20, p=p / p.sum()))
        values = np.full(len(items), 1 / np.sqrt(len(items)))
        total += s.encode(items, values, 1.0)
        exact[items] += values
    best = exact[als.top_rows(exact, 300)].sum()
    sketched = exact[als.top_rows(s.estimate(total + rng.normal(0, 1.0, s.dim)), 300)].sum()
    one_each = exact[als.top_rows(exact + rng.normal(0, 1.0, n), 300)].sum()
    assert sketched >= 0.8 * best and sketched >= 0.85 * one_each
    assert exact[rng.choice(n, 300, replace=False)].sum() < 0.02 * best


@pytest.mark.parametrize("kw", [{"n_items": 0, "width": 3}, {"n_items": 5, "width": 0},
                                {"n_items": 5, "width": 3, "depth": 0}])
def test_a_sketch_without_buckets_is_refused(kw):
    with pytest.raises(ValueError, match="needs"):
        Sketch(**kw)


def test_a_device_hashes_only_its_own_items_whatever_catalogue_the_round_claims():
    """A round naming a sketch over 10**15 items costs the device its own items' hashes,
    nothing per claimed item; the buckets stay within the sketch and the signs are ±1
    in about equal numbers."""
    huge = Sketch(10**15, 50, seed=2)
    x = huge.encode(np.array([3, 10**14]), np.ones(2), 1.0)
    assert x.shape == (150,) and np.linalg.norm(x) == pytest.approx(1.0)
    bucket, sign = Sketch(1_000, 64).hashes(np.arange(1_000))
    assert bucket.min() >= 0 and bucket.max() < 3 * 64
    assert ((bucket // 64) == np.arange(3)[:, None]).all()  # row r's buckets in block r
    assert set(np.unique(sign)) == {-1.0, 1.0} and abs(sign.mean()) < 0.1
    assert len(np.unique(bucket[0])) > 55  # spread over the row's 64 buckets
