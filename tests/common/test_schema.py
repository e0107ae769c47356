"""The wire schema: every malformed reply is refused with a named reason."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array

from fedrec.common.records import (
    array_view,
    config_to_record,
    encode_array,
    encoded_size,
    record_to_config,
)
from fedrec.common.schema import InvalidUpdateError, TrainConfig, validate_update
from fedrec.common.settings import RunSettings


def good(m=3, k=4):
    return {"ids": np.array([0, 5, 9], np.int64)[:m],
            "rows": np.full((m, k), 0.1, np.float32),
            "bias": np.zeros(m, np.float32), "counts": np.ones(m, np.float32)}


def test_a_good_update_passes():
    u = validate_update(good(), n_items=10, n_factors=4, max_norm=1.0)
    assert u.ids.tolist() == [0, 5, 9] and u.nbytes == 3 * 8 + 3 * 16 + 12 + 12


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda a: a["rows"].__setitem__((0, 0), np.nan), "nonfinite"),
    (lambda a: a["bias"].__setitem__(1, np.inf), "nonfinite"),
    (lambda a: a.__setitem__("rows", np.zeros((3, 5), np.float32)), "shape"),
    (lambda a: a.__setitem__("bias", np.zeros(2, np.float32)), "shape"),
    (lambda a: a["ids"].__setitem__(2, 10), "id-range"),
    (lambda a: a["ids"].__setitem__(2, -1), "id-range"),
    (lambda a: a["ids"].__setitem__(2, 5), "id-duplicate"),
    (lambda a: a.__setitem__("ids", np.array([5, 0, 9])), "id-order"),
    (lambda a: a["rows"].__setitem__((1, 2), 1e6), "norm"),
    (lambda a: a.__setitem__("rows", a["rows"].astype(np.float64)), "dtype"),
    (lambda a: a.__setitem__("ids", a["ids"].astype(np.int32)), "dtype"),
    (lambda a: a["counts"].__setitem__(0, 0), "counts"),
    (lambda a: a.pop("counts"), "keys"),
    (lambda a: a.__setitem__("ratings", np.ones(3, np.float32)), "keys"),
])
def test_malformed_updates_are_refused(mutate, reason):
    arrays = good()
    mutate(arrays)
    with pytest.raises(InvalidUpdateError) as info:
        validate_update(arrays, n_items=10, n_factors=4, max_norm=1.0)
    assert info.value.reason == reason


def test_encoding_is_the_npy_format_and_decoding_does_not_copy():
    for a in (np.arange(12, dtype=np.float32).reshape(3, 4), np.array([7, 8], np.int64),
              np.empty((0, 5), np.float32), np.asarray(np.float32(3))):
        encoded = encode_array(a)
        assert encoded.data == Array(a).data  # byte-identical to np.save
        view = array_view(encoded)
        np.testing.assert_array_equal(view, a)
        assert view.shape == a.shape and not view.flags.writeable
    with pytest.raises(TypeError, match="object"):
        encode_array(np.array([object()]))


def test_config_round_trip_and_unknown_keys():
    cfg = TrainConfig(loss="bce", optimizer="gd", local_epochs=3)
    back, extra = record_to_config(config_to_record(cfg, mean=3.5, seed=2))
    assert back == cfg and extra == {"mean": 3.5, "seed": 2}
    with pytest.raises(ValueError, match="unknown train config keys: colour"):
        TrainConfig.from_dict({"colour": 1})
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(optimizer="newton")


def test_run_settings_round_trip_through_run_config():
    s = RunSettings(dataset="ml-100k", protocol="explicit-5fold", fold=3, lr=0.02)
    assert RunSettings.from_run_config(s.to_run_config()) == s
    assert s.train_config().loss == "mse"
    with pytest.raises(ValueError, match="unknown run-config keys: learning-rate"):
        RunSettings.from_run_config({"learning-rate": 0.1})
    with pytest.raises(ValueError, match="fraction_train must be in"):
        RunSettings(fraction_train=2.0)


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("checkpoint-fresh", "false", False), ("checkpoint-fresh", "True", True),
    ("checkpoint-fresh", True, True), ("num-rounds", "4", 4), ("num-rounds", 4.0, 4),
    ("server-lr", "0.5", 0.5), ("checkpoint", 7, "7"),
])
def test_run_config_values_are_read_as_their_field_s_type(key, value, expected):
    got = RunSettings.from_run_config({key: value}).to_run_config()[key]
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(("key", "value", "problem"), [
    ("checkpoint-fresh", "maybe", "expected true or false"),
    ("checkpoint-fresh", [True], "expected true or false"),
    ("server-lr", "nan", "expected a finite number"),
    ("server-lr", float("inf"), "expected a finite number"),
    ("lr", "1e400", "expected a finite number"),
    ("num-rounds", "2.5", "expected a whole number"),
    ("num-rounds", True, "expected a number"),
    ("factors", None, "expected a number"),
    ("factors", [8], "expected a number"),
    ("checkpoint", ["a"], "expected a string"),
    ("server-lr", "-1", "server_lr must be > 0 and below"),
    ("server-lr", "nan", "'server-lr': expected a finite number"),
    ("max-norm", 0, "max_norm must be > 0"),
    ("fold", -1, "fold must be >= 0"),
    ("secagg-bucket", 1, "secagg-bucket >= 2"),
    ("weighting", "count", "would outweigh every other device"),
    ("negative-weight", 0, "negative_weight must be a finite number > 0"),
    ("negative-weight", "-0.5", "negative_weight must be a finite number > 0"),
    ("negative-weight", "nan", "expected a finite number"),
    ("server-optimizer", "rmsprop", "server_optimizer must be one of sgd, adagrad, adam, count"),
    ("server-optimizer", "count", "the count step rule .* needs weighting=sum"),
    ("server-bias-optimizer", "count", "the count step rule .* needs weighting=sum"),
    ("server-step-halving", 0, r"server_step_halving: halving must be a number in \(0, "),
    ("server-step-halving", "-2", r"server_step_halving: halving must be a number in"),
    ("server-step-halving", "inf", "expected a finite number"),
    ("server-bias-optimizer", "rmsprop", "server_bias_optimizer must be one of"),
    ("server-bias-lr", "-0.5", r"server_bias_lr must be in \(0, 1e\+06\), or 0"),
    ("server-bias-lr", "1e7", r"server_bias_lr must be in \(0, 1e\+06\), or 0"),
    ("server-lr", "1e7", "server_lr must be > 0 and below 1e\\+06"),
    ("server-bias-lr", "inf", "expected a finite number"),
])
def test_a_bad_run_config_value_is_refused_by_its_key(key, value, problem):
    config = {key: value}
    if key == "secagg-bucket":
        config["privacy"] = "secagg"
    with pytest.raises(ValueError, match=problem):
        RunSettings.from_run_config(config)


def test_the_count_rule_runs_where_the_server_counts_the_devices_that_moved_a_row():
    s = RunSettings.from_run_config({"server-bias-optimizer": "count", "weighting": "sum",
                                     "server-bias-lr": 3.0, "server-step-halving": 5})
    assert s.server_bias_step == ("count", 3.0) and s.server_step_halving == 5.0
    with pytest.raises(ValueError, match="secure sum hides which device moved which row"):
        RunSettings.from_run_config({"server-bias-optimizer": "count", "weighting": "sum",
                                     "privacy": "secagg"})
    with pytest.raises(ValueError, match="pads replies with decoy rows"):
        RunSettings.from_run_config({"server-optimizer": "count", "weighting": "sum",
                                     "privacy": "decoy", "decoy-rows": 4})
    with pytest.raises(ValueError, match="server-step-halving is not supported with privacy"):
        RunSettings.from_run_config({"privacy": "secagg+dp", "dp-epsilon": 8.0,
                                     "server-step-halving": 2})


@pytest.mark.parametrize("array", [np.zeros((0, 4), np.float32), np.ones(7, np.int16),
                                   np.arange(100_000 * 3, dtype=np.float64).reshape(-1, 3),
                                   np.array([3, 4], np.int64)])
def test_encoded_size_is_the_size_of_the_encoding(array):
    assert encoded_size(array) == len(encode_array(array).data)


def test_a_negative_weight_reaches_devices_and_only_where_negatives_are_drawn():
    s = RunSettings.from_run_config({"negative-weight": "0.25", "negatives": 16})
    cfg = s.train_config()
    assert cfg.negative_weight == 0.25 and cfg.negatives == 16
    back, _ = record_to_config(config_to_record(cfg, mean=0.0, seed=1))
    assert back.negative_weight == 0.25  # (on the wire to devices, as sent)
    for bad in (0.0, -1.0, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="negative_weight must be a finite number > 0"):
            TrainConfig(loss="bce", negative_weight=bad)
    with pytest.raises(ValueError, match="negative_weight applies to implicit feedback"):
        TrainConfig(loss="mse", negative_weight=0.5)
    with pytest.raises(ValueError, match="negative_weight applies to implicit feedback"):
        RunSettings(protocol="explicit-80-20", negative_weight=0.5)
    with pytest.raises(ValueError, match="negative-weight is not supported with "
                                         "privacy=secagg\\+dp"):
        RunSettings(privacy="secagg+dp", dp_epsilon=8.0, negative_weight=0.5)
