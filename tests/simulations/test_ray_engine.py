"""Flower's Ray engine runs the same apps to the same model as the in-process engine.

Needs the ``ray`` extra; skips without it unless ``FEDREC_REQUIRE_RAY=1`` (as CI sets it).
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
from flwr.common.logger import FLOWER_LOGGER

from fedrec.client.app import app as client_app
from fedrec.common.data.csvlog import write_csv_log
from fedrec.common.data.synthetic import ShopConfig, generate_shop
from fedrec.common.partition import simulated_partitions
from fedrec.common.settings import RunSettings
from fedrec.server.app import app as server_app
from fedrec.simulations.engines.inprocess import run_in_process

FLOWER_LOGGER.setLevel(logging.WARNING)


@pytest.fixture(scope="module")
def ray_engine(ray_installed):
    from fedrec.simulations.engines.ray_engine import run_ray

    return run_ray


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["implicit-80-20", "explicit-80-20"])
def test_same_seed_same_data_same_item_table(ray_engine, tmp_path, protocol):
    shop = generate_shop(ShopConfig(n_users=40, n_items=30, n_events=2_000, seed=1,
                                    rating_share=1.0))
    path = write_csv_log(shop, tmp_path / "shop.csv")
    n = simulated_partitions(f"csv:{path}", protocol, 0, "").n_users
    s = RunSettings(dataset=f"csv:{path}", protocol=protocol, num_rounds=3, evaluate_every=3,
                    factors=4, negatives=2, min_nodes=n)
    run_in_process(server_app, client_app, n,
                   {**s.to_run_config(), "results-dir": str(tmp_path / "inprocess")})
    environ = dict(os.environ)
    ray_engine(n, {**s.to_run_config(), "results-dir": str(tmp_path / "ray")})
    assert dict(os.environ) == environ  # Ray's PYTHONPATH does not leak to the caller
    a = np.load(tmp_path / "inprocess" / "model.npz")
    b = np.load(tmp_path / "ray" / "model.npz")
    assert a["factors"].shape == (30, 4)
    assert not np.allclose(a["factors"], 0)
    assert np.abs(a["factors"] - b["factors"]).max() <= 1e-5
    assert np.abs(a["bias"] - b["bias"]).max() <= 1e-5
    assert float(a["mean"]) == pytest.approx(float(b["mean"]), abs=1e-6)
    np.testing.assert_array_equal(a["version"], b["version"])
    rounds = json.loads((tmp_path / "ray" / "history.json").read_text())["rounds"]
    assert [r["train"]["accepted"] for r in rounds] == [n, n, n]  # every device, from round 1


@pytest.mark.slow
def test_secagg_under_ray_gives_the_in_process_model(ray_engine, tmp_path):
    """Flower's SecAgg+ workflow and mod run under the Ray engine too; the model equals the
    in-process one within SecAgg+'s quantisation (its rounding is random, so not bit for
    bit)."""
    shop = generate_shop(ShopConfig(n_users=20, n_items=30, n_events=1_000, seed=2))
    path = write_csv_log(shop, tmp_path / "shop.csv")
    n = simulated_partitions(f"csv:{path}", "implicit-80-20", 0, "").n_users
    s = RunSettings(dataset=f"csv:{path}", num_rounds=2, evaluate_every=2, factors=4,
                    negatives=2, min_nodes=n, privacy="secagg", server_optimizer="sgd",
                    server_lr=1.0)
    run_in_process(server_app, client_app, n,
                   {**s.to_run_config(), "results-dir": str(tmp_path / "inprocess")})
    ray_engine(n, {**s.to_run_config(), "results-dir": str(tmp_path / "ray")})
    a = np.load(tmp_path / "inprocess" / "model.npz")
    b = np.load(tmp_path / "ray" / "model.npz")
    # Two independently quantised runs (see test_secagg): 6 standard deviations of the
    # difference of 20 devices' rounding, rows and weights, over 2 rounds.
    bound = 2 * 6 * (16 / 2**22 / 2) * np.sqrt(20) * 2 * np.sqrt(2)
    assert np.abs(a["factors"] - b["factors"]).max() <= bound
    assert np.abs(a["bias"] - b["bias"]).max() <= bound
    rounds = json.loads((tmp_path / "ray" / "history.json").read_text())["rounds"]
    assert [r["train"]["accepted"] for r in rounds] == [n, n]


@pytest.mark.slow
def test_the_pairs_model_under_ray_gives_the_in_process_table(ray_engine, tmp_path):
    """The pairs model's query messages (counts, then scoring with the table) run under the
    Ray engine to the same table, weight and figures: counting is exact."""
    shop = generate_shop(ShopConfig(n_users=30, n_items=40, n_events=1_200, seed=3))
    path = write_csv_log(shop, tmp_path / "shop.csv")
    n = simulated_partitions(f"csv:{path}", "implicit-80-20", 0, "").n_users
    s = RunSettings(dataset=f"csv:{path}", num_rounds=2, evaluate_every=2, min_nodes=n,
                    model="pairs")
    for engine, run in (("inprocess", lambda cfg: run_in_process(server_app, client_app, n,
                                                                    cfg)),
                        ("ray", lambda cfg: ray_engine(n, cfg))):
        run({**s.to_run_config(), "results-dir": str(tmp_path / engine)})
    a = np.load(tmp_path / "inprocess" / "model.npz")
    b = np.load(tmp_path / "ray" / "model.npz")
    assert a["counts"].sum() > 0
    np.testing.assert_array_equal(a["counts"], b["counts"])
    assert float(a["weight"]) == float(b["weight"])
    ha, hb = (json.loads((tmp_path / e / "history.json").read_text())["rounds"]
              for e in ("inprocess", "ray"))
    assert [r["train"]["accepted"] for r in hb] == [n, n]
    assert ha[-1]["evaluate"]["ndcg@10"] == pytest.approx(hb[-1]["evaluate"]["ndcg@10"],
                                                           abs=1e-12)


@pytest.mark.slow
def test_a_ratings_replay_with_the_neighbours_part_under_ray_gives_the_in_process_scores(
        ray_engine, tmp_path):
    """The neighbours part's table and each device's kept residuals live in the node's
    context on Ray as in process: the same sums, bit for bit (Ray's replies arrive in
    another order; the server folds each round's contributions by node), and the same
    scores (pooled in arrival order: to the last bit)."""
    from dataclasses import replace

    from fedrec.simulations.engines.ray_replay import replay_on_ray
    from fedrec.simulations.engines.replay import FederatedStream, StreamSettings
    from fedrec.simulations.models.presets import STREAM_EXPLICIT

    shop = generate_shop(ShopConfig(n_users=30, n_items=25, n_events=2_000, seed=2,
                                    rating_share=1.0))
    path = write_csv_log(shop, tmp_path / "shop.csv")
    s = StreamSettings(dataset=f"csv:{path}", kind="explicit", tick_events=20,
                       neighbours=5, neighbour_refresh=2,
                       run=replace(STREAM_EXPLICIT, factors=4))
    local = FederatedStream(s)
    local.replay()
    on_ray = replay_on_ray(s)
    assert on_ray.sums.totals() == pytest.approx(local.sums.totals(), rel=1e-12)
    assert on_ray.strategy.rejected == {} and (on_ray.strategy.neighbours.table.ids >= 0).any()
    np.testing.assert_array_equal(on_ray.strategy.neighbours.stats.n,
                                  local.strategy.neighbours.stats.n)
    np.testing.assert_array_equal(on_ray.strategy.neighbours.stats.sxy,
                                  local.strategy.neighbours.stats.sxy)
