"""The public negative pool end to end on the settings and the round config: where it may
be used (and where it is refused by name), the server naming each round's pool by its seed,
and a device refusing a pooled round that names none."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedrec.client.app import round_pool
from fedrec.common.negatives import negative_pool, pool_seed
from fedrec.common.privacy import for_mode
from fedrec.common.round_config import RoundConfig
from fedrec.common.schema import TrainConfig
from fedrec.common.settings import RunSettings
from fedrec.server.app import build_strategy

POOLED = RunSettings(negative_pool=0.05, negative_pool_rounds=2)


@pytest.mark.parametrize("mode", ["plain", "dp"])
def test_the_sparse_modes_take_a_pool(mode) -> None:
    assert for_mode(POOLED, mode, negative_pool=0.05).train_config().negative_pool == 0.05


@pytest.mark.parametrize("mode", ["decoy", "decoy+dp", "secagg", "secagg+dp"])
def test_modes_that_cannot_honour_a_pool_refuse_it_by_name(mode) -> None:
    base = for_mode(RunSettings(), mode, **({"dp_epsilon": 8.0} if mode == "secagg+dp" else {}))
    with pytest.raises(ValueError, match="negative-pool is not supported with privacy="):
        replace(base, negative_pool=0.05)
    with pytest.raises(ValueError, match="negative-pool-rounds is not supported"):
        replace(base, negative_pool_rounds=3)


def test_bad_pool_settings_are_refused_by_name() -> None:
    for bad in (0.0, 1.5, -1.0):
        with pytest.raises(ValueError, match="negative_pool must be a number in"):
            RunSettings(negative_pool=bad)
    with pytest.raises(ValueError, match="negative_pool_rounds must be >= 1"):
        RunSettings(negative_pool_rounds=0)
    with pytest.raises(ValueError, match="negative_pool applies to implicit feedback"):
        RunSettings(protocol="explicit-80-20", negative_pool=0.1)
    with pytest.raises(ValueError, match="expected a number"):
        RunSettings.from_run_config({"negative-pool": "some"})


def test_the_server_names_each_rounds_pool_and_a_device_draws_the_same_one() -> None:
    strategy = build_strategy(POOLED, 5_000, 0.0, (-np.inf, np.inf))
    seeds = []
    for r in (1, 2, 3):
        config = dict(strategy.round_config(r))
        rc = RoundConfig.parse({k: v for k, v in config.items()
                                if k not in TrainConfig.__dataclass_fields__})
        assert rc.negative_pool_seed == pool_seed(POOLED.seed, r, 2)
        pool = round_pool(POOLED.train_config(), rc, 5_000)
        np.testing.assert_array_equal(pool, negative_pool(0.05, rc.negative_pool_seed, 5_000))
        seeds.append(rc.negative_pool_seed)
    assert seeds[0] == seeds[1] != seeds[2]  # two rounds a pool
    # Without a pool the round says nothing of one, and a device draws from everything.
    plain = build_strategy(RunSettings(), 5_000, 0.0, (-np.inf, np.inf))
    assert "negative-pool-seed" not in dict(plain.round_config(1))
    assert round_pool(RunSettings().train_config(), RoundConfig(), 5_000) is None


def test_a_device_told_to_use_a_pool_but_not_which_refuses_the_round() -> None:
    with pytest.raises(ValueError, match="this round needs 'negative-pool-seed'"):
        round_pool(POOLED.train_config(), RoundConfig(seed=0, server_round=1), 5_000)


@pytest.mark.parametrize("bad", ["0.1", None, [0.1], True, float("nan"), float("inf"), 0.0,
                                 -0.5, 2.0])
def test_a_server_sending_a_malformed_pool_share_is_refused_by_name(bad) -> None:
    """The share comes from the server with the round's train config: a device refuses a
    value that is not a number in (0, 1] by the field's name, before it trains."""
    values = {**POOLED.train_config().to_dict(), "negative_pool": bad}
    with pytest.raises(ValueError, match="negative_pool must be a number in"):
        TrainConfig.from_dict(values)
