"""One hostile device and the global mean μ, on the real query paths (plain: the checked
mean query; secagg: Flower's SecAgg+ over buckets, with a device adding integers of its
choice to its masked vector)."""

from __future__ import annotations

import pytest

from fedrec.simulations.benches.mean_shift import bench_mean_shift

SHOP = "synthetic:n_users=120,n_items=40,n_events=12000,seed=2"


def test_the_worst_device_moves_mu_by_its_one_vote_and_its_bucket_s_share():
    record = bench_mean_shift(SHOP, bucket=8)
    plain, secagg = record["plain"], record["secagg"]
    assert plain["worst_liar"]["shift"] == pytest.approx(plain["bound"], rel=0.2)
    assert plain["worst_liar"]["shift"] <= plain["bound"] + 1e-9
    assert plain["garbage"]["refused"] == {"query:metric-range:rating-mean": 1}
    # The device that does the worst its bucket allows, through real SecAgg+, moves μ by
    # exactly what the honest buckets predict: no more than one bucket's share.
    hostile = secagg["worst_hostile_device"]
    assert hostile["shift"] == pytest.approx(secagg["worst_over_buckets"]["shift"], abs=1e-4)
    assert hostile["refused"] == {}  # its bucket's sum passed every check
    assert secagg["garbage"]["refused"] == {"query:secagg-sum": 1}
    assert secagg["garbage"]["shift"] <= secagg["worst_over_buckets"]["shift"] + 1e-9


@pytest.mark.data
@pytest.mark.slow
def test_one_hostile_device_among_ml_100k_s_943_moves_mu_by_at_most_a_hundredth(ml100k):
    record = bench_mean_shift("ml-100k", attacks=False)
    assert record["rated_devices"] == 943
    assert record["plain"]["worst_liar"]["shift"] <= 0.01
    assert record["secagg"]["worst_over_buckets"]["shift"] <= 0.01
    assert record["secagg"]["worst_over_bucketings"]["shift"] <= 0.01  # whatever the draw
    # (the mean of users' means, what both modes estimate)
    assert abs(record["secagg"]["honest_mean"] - record["plain"]["honest_mean"]) < 0.02
