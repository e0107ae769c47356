"""The dense vector a device hands to SecAgg+: its sum gives what the plain fold gives."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.common.schema import ItemUpdate
from fedrec.common.secagg import densify, read_sum
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
    dense = read_sum(total, weighting)
    plain = aggregate(ups, weighting, cap=10.0)
    assert dense.ids.tolist() == plain.ids.tolist()
    np.testing.assert_allclose(dense.rows, plain.rows, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dense.bias, plain.bias, rtol=1e-5, atol=1e-6)
    assert dense.devices.tolist() == plain.devices.tolist()


def test_rating_statistics_survive_the_scaling_and_count_weighting_is_refused():
    u = ItemUpdate(np.array([2], np.int64), np.ones((1, 3), np.float32),
                   np.ones(1, np.float32), np.ones(1, np.float32))
    a = densify(u, 5, rating_sum=3_512.0, rating_count=737.0)
    b = densify(u, 5, rating_sum=41.0, rating_count=12.0)
    assert all(np.abs(x).max() <= 8.0 for x in a)  # inside SecAgg+'s clipping range
    dense = read_sum([x + y for x, y in zip(a, b, strict=True)])
    assert dense.rating_sum == pytest.approx(3_553.0)
    assert dense.rating_count == pytest.approx(749.0)
    with pytest.raises(ValueError, match="weighting must be one of"):
        densify(u, 5, "count")
