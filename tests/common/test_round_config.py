"""The round config a device is told: every key typed, and what a server must not send
refused by name."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedrec.common.ddp import Skellam
from fedrec.common.round_config import KEYS, RoundConfig
from fedrec.server.secagg_dp import from_sum


def test_every_key_parses_and_round_trips() -> None:
    values = {str: "x", int: 3, float: 0.5}
    extra = {key: values[kind] for key, (_, kind, _) in KEYS.items()}
    extra["evaluate-on"] = "validation"  # (one of EVALUATE_ON)
    rc = RoundConfig.parse(extra)
    assert rc.to_dict() == extra
    assert RoundConfig.parse({}).privacy == "plain"
    assert RoundConfig.parse({"rating-min": -math.inf}).rating_range == (-math.inf, math.inf)


@pytest.mark.parametrize(("key", "value", "reason"), [
    ("colour", 1, "unknown key 'colour'"),
    ("decoy-rows", True, "'decoy-rows' must be int"),
    ("decoy-rows", 2.0, "'decoy-rows' must be int"),
    ("mean", "3.5", "'mean' must be float"),
    ("mean", None, "'mean' must be float"),
    ("mean", [3.5], "'mean' must be float"),
    ("mean", math.nan, "'mean' must be finite"),
    ("dp-noise", math.inf, "'dp-noise' must be finite"),
    ("ddp-mu", -math.inf, "'ddp-mu' must be finite"),
    ("rating-max", math.nan, "'rating-max' must be finite"),
    ("privacy", 1, "'privacy' must be str"),
    ("evaluate-on", "train", "'evaluate-on' must be one of test, validation"),
    ("tail-bonus", -0.1, r"'tail-bonus' must be a number in \[0, 10\]"),
    ("tail-bonus", 11.0, r"'tail-bonus' must be a number in \[0, 10\]"),
    ("tail-bonus", math.nan, "'tail-bonus' must be finite"),
    ("tail-bonus", "0.1", "'tail-bonus' must be float"),
    ("similarity", -0.1, r"'similarity' must be a number in \[0, 10\]"),
    ("similarity", 12.0, r"'similarity' must be a number in \[0, 10\]"),
    ("similarity", math.inf, "'similarity' must be finite"),
    ("similarity", "0.1", "'similarity' must be float"),
])
def test_a_wrong_key_or_value_is_refused_by_name(key, value, reason) -> None:
    with pytest.raises(ValueError, match=reason):
        RoundConfig.parse({key: value})


def test_a_round_that_needs_a_key_names_it() -> None:
    with pytest.raises(ValueError, match="this round needs 'mean'"):
        RoundConfig.parse({"seed": 1}).need("mean")


@pytest.mark.parametrize(("arrays", "reason"), [
    ([np.zeros(5), np.zeros(5)], "one array"),
    ([np.zeros(4)], "has 5 values"),
    ([np.full(5, np.nan)], "non-finite"),
    ([np.full(5, np.inf)], "non-finite"),
])
def test_a_malformed_secure_sum_is_refused_by_name(arrays, reason) -> None:
    enc = Skellam(dim=5, clip=1.0, scale=10.0, bits=12, device_mu=0.0)
    with pytest.raises(ValueError, match=reason):
        from_sum(arrays, 3, enc)
