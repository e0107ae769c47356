"""On the real MovieLens files (``$FEDREC_DATA``): loaders, and our protocols reproducing the
public anchors' baseline figures exactly — the check that our splits and metrics are theirs.

Skips without the data; fails instead when ``FEDREC_REQUIRE_DATA=1``.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.common.data.movielens import load_ml_latest
from fedrec.common.metrics import ranking_metrics, rmse
from fedrec.common.split import split
from fedrec.simulations.models.baselines import BiasBaseline, GlobalMean, Popularity


def test_ml_100k_loads_as_documented(ml100k):
    assert (len(ml100k), ml100k.n_users, ml100k.n_items) == (100_000, 943, 1682)
    assert set(np.unique(ml100k.value).tolist()) == {1, 2, 3, 4, 5}
    np.testing.assert_array_equal(ml100k.users.raw, np.arange(1, 944))
    assert ml100k.item_features.matrix.shape == (1682, 19)
    assert (ml100k.user[:3] == [195, 185, 21]).all()  # file order: 196, 186, 22 re-indexed


def test_ml_latest_small_loads(ml_latest_small_dir):
    d = load_ml_latest(ml_latest_small_dir)
    assert (len(d), d.n_users, d.n_items) == (100_836, 610, 9724)
    assert d.item_features.matrix.sum(axis=1).min() >= 0


def test_explicit_5fold_baselines_match_the_anchors(ml100k):
    """Global mean 1.1257 and Surprise BaselineOnly 0.9445 on exactly these folds."""
    folds = list(split(ml100k, "explicit-5fold"))
    assert [len(s.test) for s in folds] == [20_000] * 5
    gm, bias = [], []
    for s in folds:
        args = (s.train.user, s.train.item, s.train.value, 943, 1682)
        gm.append(rmse(GlobalMean().fit(*args).predict(s.test.user, s.test.item), s.test.value))
        bias.append(rmse(BiasBaseline().fit(*args).predict(s.test.user, s.test.item),
                         s.test.value))
    assert np.mean(gm) == pytest.approx(1.1257, abs=5e-5)
    assert np.mean(bias) == pytest.approx(0.9445, abs=5e-5)


@pytest.mark.parametrize(("protocol", "expected"), [
    ("implicit-80-20", {"recall@10": 0.115, "ndcg@10": 0.220, "precision@10": 0.191,
                        "hr@10": 0.759}),
    ("implicit-leave-last", {"hr@10": 0.086, "ndcg@10": 0.045}),
])
def test_popularity_matches_the_anchors(ml100k, protocol, expected):
    s = next(split(ml100k, protocol))
    pop = Popularity().fit(s.train.user, s.train.item, None, 943, 1682)
    got = ranking_metrics(pop.score_items, s.train, s.test)
    assert got["users"] == 943
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=5e-4), key


def test_upload_is_within_ten_percent_of_rows_times_factors(ml100k):
    """ML-100K explicit, all 943 devices: each upload is ids + rows + biases + counts (+ npy
    headers), at most 1.1 x (touched rows x (factors + 1) x 4 + ids)."""
    from fedrec.simulations.benches.engine import bench_inprocess
    from fedrec.simulations.models.presets import preset_settings

    r = bench_inprocess(preset_settings("ml-100k", "explicit-5fold"), repeats=1)
    assert r["devices"] == 943
    assert r["upload"]["ratio_to_lower_bound"] <= 1.1
    assert r["upload"]["ratio_to_dense"] < 0.1
