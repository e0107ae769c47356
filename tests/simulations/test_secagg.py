"""secagg end to end on the in-process engine: Flower's SecAgg+ workflow and mod around
fedrec's ServerApp and ClientApp. The server gets the plain fold's update from the sum and
never sees one device's update."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from flwr.common.logger import FLOWER_LOGGER
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.compat.common.parameter import bytes_to_ndarray

from fedrec.client.app import app as client_app
from fedrec.common.data.csvlog import write_csv_log
from fedrec.common.data.synthetic import ShopConfig, generate_shop
from fedrec.common.params import ItemParams
from fedrec.common.partition import simulated_partitions
from fedrec.common.settings import RunSettings
from fedrec.server.app import app as server_app
from fedrec.simulations.engines.inprocess import run_in_process
from tests.conftest import low_rank_ratings

FLOWER_LOGGER.setLevel(logging.WARNING)


@pytest.fixture(scope="module")
def shop_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("shop") / "shop.csv"
    return write_csv_log(generate_shop(ShopConfig(n_users=40, n_items=60, n_events=2_000,
                                                  seed=7)), path)


def _run(settings: RunSettings, folder, observer=None):
    parts = simulated_partitions(settings.dataset, settings.protocol, settings.fold, "")
    config = {**settings.to_run_config(), "results-dir": str(folder)}
    run_in_process(server_app, client_app, parts.n_users, config, observer=observer)
    return (json.loads((folder / "history.json").read_text()),
            np.load(folder / "model.npz"))


def _settings(path, **kw) -> RunSettings:
    base = {"dataset": f"csv:{path}", "protocol": "implicit-80-20", "num_rounds": 2,
            "evaluate_every": 2, "factors": 6, "local_epochs": 2, "negatives": 2,
            "server_optimizer": "sgd", "server_lr": 1.0, "secagg_shares": 5.0}
    return RunSettings(**{**base, **kw})


# SecAgg+'s quantisation: values in ±8 onto 2**22 levels, rounded at random (unbiased, each
# device's value off by less than a step, standard deviation at most half a step); a
# per-item mean divides the sum's error by the item's summed weight (at least 1 uniform,
# at least 0.5 / cap = 0.05 capped). The bound is six standard deviations of the sum over
# the round's 40 devices, for the rows' and the weights' errors together.
STEP = 16 / 2**22
MIN_WEIGHT = {"uniform": 1.0, "capped": 0.5 / 10.0}


@pytest.mark.parametrize("weighting", ["uniform", "capped"])
def test_the_secure_sum_gives_the_plain_model_within_quantisation(shop_csv, tmp_path,
                                                                  weighting):
    (tmp_path / "plain").mkdir()
    (tmp_path / "secagg").mkdir()
    # (plain without its defences: secagg cannot screen single updates)
    one = {"num_rounds": 1, "evaluate_every": 1, "weighting": weighting, "lr": 0.5,
           "defences": "off"}
    _, plain = _run(_settings(shop_csv, **one), tmp_path / "plain")
    history, secure = _run(_settings(shop_csv, privacy="secagg", **one), tmp_path / "secagg")
    train = [r["train"] for r in history["rounds"] if "train" in r]
    assert [t["accepted"] for t in train] == [40]
    bound = 6 * (STEP / 2) * np.sqrt(40) * 2 / MIN_WEIGHT[weighting]
    np.testing.assert_allclose(secure["factors"], plain["factors"], rtol=0, atol=bound)
    np.testing.assert_allclose(secure["bias"], plain["bias"], rtol=0, atol=bound)
    assert np.abs(secure["factors"] - plain["factors"]).max() > 0  # quantised, not copied
    # The bound is small beside the round's update itself: the test can tell a wrong fold.
    s = _settings(shop_csv, **one)
    start = ItemParams.init(len(plain["factors"]), s.factors, np.random.default_rng(s.seed),
                            s.init_std).factors
    assert bound < 0.2 * np.abs(plain["factors"] - start).max()
    assert "ndcg@10" in history["rounds"][-1]["evaluate"]


def test_secagg_takes_the_global_mean_from_bucketed_secure_sums(tmp_path):
    path = write_csv_log(low_rank_ratings(n_users=40, n_items=25, density=0.6),
                         tmp_path / "ratings.csv")
    s = _settings(path, protocol="explicit-80-20", privacy="secagg", num_rounds=1,
                  evaluate_every=1, server_lr=20.0, lr=0.02, secagg_bucket=8)
    history, model = _run(s, tmp_path)
    train = simulated_partitions(s.dataset, s.protocol, 0, "").split.train
    means = np.bincount(train.user, train.value) / np.bincount(train.user)
    # 5 buckets of 8 devices, the lowest and the highest bucket mean left out
    assert float(model["mean"]) == pytest.approx(float(means.mean()), abs=0.05)
    assert history["rejected"] == {}


def test_the_server_never_holds_one_devices_update(shop_csv, tmp_path):
    """Inspect everything devices send in secagg mode: no update arrays, no per-device
    metrics, and masked vectors that look uniformly random where a plain dense vector
    would be mostly zeros."""
    seen = []
    _run(_settings(shop_csv, privacy="secagg"), tmp_path, lambda d, m: seen.append((d, m)))
    train_replies = [m for d, m in seen
                     if d == "to-server" and m.metadata.message_type == "train"]
    masked_vectors = 0
    for reply in train_replies:
        content = reply.content
        for record in content.array_records.values():
            assert all(len(a.data) == 0 for a in record.values()) or len(record) == 0
        for metrics in content.metric_records.values():
            assert set(metrics) <= {"num_examples"}  # nothing of the device's data
        configs = content.config_records.get(RECORD_KEY_CONFIGS, {})
        if Key.MASKED_PARAMETERS in configs:
            vector = [bytes_to_ndarray(b) for b in configs[Key.MASKED_PARAMETERS]]
            flat = np.concatenate([v.ravel() for v in vector[1:]])  # [weight | rows ...]
            _, counts = np.unique(flat, return_counts=True)
            assert counts.max() / len(flat) < 0.01  # no value repeats: it is all mask
            masked_vectors += 1
    assert masked_vectors == 2 * 40  # every device, every round


def test_a_block_per_round_sums_only_its_rows_and_devices_send_held_rows_later(shop_csv,
                                                                                tmp_path):
    """secagg-rows 30 of the shop's 59 items seen in training: round 1's masked vectors
    cover rows 0..29 only, the model moves only there, and equals the plain round on them
    (within quantisation); round 2 covers rows 30..58 and 0, where devices send what they
    held back from round 1 as well."""
    (tmp_path / "plain").mkdir()
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = {"num_rounds": 1, "evaluate_every": 1, "lr": 0.5, "defences": "off"}
    _, plain = _run(_settings(shop_csv, **one), tmp_path / "plain")
    sizes = []

    def watch(direction, msg):
        configs = msg.content.config_records.get(RECORD_KEY_CONFIGS, {})
        if direction == "to-server" and Key.MASKED_PARAMETERS in configs:
            sizes.append(sum(bytes_to_ndarray(b).size for b in configs[Key.MASKED_PARAMETERS]))

    history, secure = _run(_settings(shop_csv, privacy="secagg", secagg_rows=30, **one),
                           tmp_path / "one", watch)
    n, k = len(plain["factors"]), plain["factors"].shape[1]
    assert n == 59
    assert set(sizes) == {1 + 30 * (k + 3)}  # the weight factor, then the block's values
    s = _settings(shop_csv, **one)
    start = ItemParams.init(n, s.factors, np.random.default_rng(s.seed), s.init_std).factors
    np.testing.assert_array_equal(secure["factors"][30:], start[30:])  # outside: untouched
    np.testing.assert_allclose(secure["factors"][:30], plain["factors"][:30], atol=1e-3)
    assert np.abs(secure["factors"][:30] - start[:30]).max() > 0.01
    assert history["rounds"][0]["train"]["rows-updated"] <= 30
    # Two rounds: round 1 as before, and the second block moves (nearly) all its rows.
    _, both = _run(_settings(shop_csv, privacy="secagg", secagg_rows=30, num_rounds=2,
                             evaluate_every=2, lr=0.5), tmp_path / "two")
    np.testing.assert_allclose(both["factors"][1:30], secure["factors"][1:30], atol=1e-6)
    moved = np.abs(both["factors"][30:] - start[30:]).max(axis=1)
    assert (moved > 0).mean() > 0.9
