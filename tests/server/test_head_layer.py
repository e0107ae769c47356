"""The head layer (fedrec.server.layers.HeadLayer): what the server counts, sends and
keeps for the devices' tail bonus, and in which runs it exists."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from fedrec.common.ranking import HEAD_KEY, unpack_head
from fedrec.common.schema import ItemUpdate
from fedrec.common.settings import RunSettings
from fedrec.server.layers import HeadLayer, build_layers


def update(ids, bias) -> ItemUpdate:
    ids = np.asarray(ids, dtype=np.int64)
    return ItemUpdate(ids, np.zeros((len(ids), 2), np.float32),
                      np.asarray(bias, dtype=np.float32), np.ones(len(ids), np.float32))


def fold_round(layer: HeadLayer, updates: list[ItemUpdate], n_items: int) -> None:
    for u in updates:
        layer.fold(u)
    layer.after_fold(np.zeros(n_items))


def test_the_head_counts_the_devices_that_raised_an_items_bias() -> None:
    layer = HeadLayer(0.15, 10)
    assert layer.table_arrays() == {} and layer.round_config() == {"tail-bonus": 0.15}
    # (an update is old minus new: a raised bias is negative; a sampled negative, lowered,
    # is positive and counts nothing, however many devices name the row)
    fold_round(layer, [update([1, 3, 5], [-0.1, -0.2, 0.3]),
                       update([3, 5, 7], [-0.1, 0.5, -0.1]),
                       update([3, 5, 9], [-1e-6, 0.1, 0.0])], 10)
    np.testing.assert_array_equal(layer.counts, [0, 1, 0, 3, 0, 0, 0, 1, 0, 0])
    head = unpack_head(layer.table_arrays()[HEAD_KEY], 10)
    assert np.flatnonzero(head).tolist() == [1, 3]  # the fifth: 2 items, ties to the lower


def test_older_rounds_fade_and_a_grown_catalogue_is_counted() -> None:
    layer = HeadLayer(0.15, 3)
    fold_round(layer, [update([0], [-1.0])], 3)
    fold_round(layer, [update([1, 3], [-1.0, -1.0])], 4)  # (an item was listed)
    np.testing.assert_allclose(layer.counts, [HeadLayer.DECAY, 1.0, 0.0, 1.0])
    assert len(unpack_head(layer.table_arrays()[HEAD_KEY], 4)) == 4


def test_the_counts_come_back_from_a_checkpoint_and_damaged_ones_are_refused() -> None:
    layer = HeadLayer(0.15, 5)
    fold_round(layer, [update([0, 2, 4], [-1.0, -1.0, -1.0]), update([2], [-1.0])], 5)
    again = HeadLayer(0.15, 5)
    again.load({"arrays": {"head": layer.arrays()}})
    np.testing.assert_array_equal(again.counts, layer.counts)
    np.testing.assert_array_equal(again.table_arrays()[HEAD_KEY],  # (sent as it was)
                                  layer.table_arrays()[HEAD_KEY])
    fresh = HeadLayer(0.15, 5)
    fresh.load({})  # (a checkpoint from before the layer: counted anew)
    assert not fresh.counts.any()
    for bad in (np.array([1.0, math.nan]), np.array([-1.0]), np.array([1, 2]),
                np.zeros(6), np.zeros((1, 5)), [1.0]):
        with pytest.raises(ValueError, match=r"run\.arrays\.head\.counts must be"):
            HeadLayer(0.15, 5).load({"arrays": {"head": {"counts": bad}}})


@pytest.mark.parametrize(("settings", "has_head"), [
    ({}, True),
    ({"tail_bonus": 0.0}, False),
    ({"protocol": "explicit-80-20"}, False),
    ({"privacy": "decoy"}, False),
    ({"privacy": "dp"}, False),
    ({"privacy": "decoy+dp"}, False),
])
def test_only_a_plain_ranking_run_with_a_bonus_counts_a_head(settings, has_head) -> None:
    layers = build_layers(RunSettings(**settings), 20)
    assert any(isinstance(layer, HeadLayer) for layer in layers) == has_head


@pytest.mark.parametrize("value", [-0.1, 11.0, math.nan, math.inf, "0.3", None, True])
def test_a_run_setting_tail_bonus_out_of_range_is_refused_by_name(value) -> None:
    with pytest.raises(ValueError, match="tail_bonus must be a number"):
        RunSettings(tail_bonus=value)


@pytest.mark.parametrize("value", [-0.1, 11.0, math.nan, math.inf, "0.1", None, True])
def test_a_run_setting_similarity_out_of_range_is_refused_by_name(value) -> None:
    with pytest.raises(ValueError, match="similarity must be a number"):
        RunSettings(similarity=value)


@pytest.mark.parametrize(("settings", "sent"), [
    ({}, 0.1),
    ({"similarity": 0.0}, None),
    ({"similarity": 2.5, "privacy": "decoy"}, 2.5),
    ({"similarity": 2.5, "privacy": "dp"}, 2.5),
    ({"similarity": 2.5, "protocol": "explicit-80-20"}, None),  # (ratings are not ranked)
])
def test_an_implicit_run_tells_devices_its_similarity_every_round(settings, sent) -> None:
    from fedrec.server.app import build_strategy, secagg_strategy

    s = RunSettings(**settings)
    strategy = build_strategy(s, 20, 0.0, (1.0, 5.0))
    assert dict(strategy.round_config(1)).get("similarity") == sent
    secure = secagg_strategy(replace(s, privacy="secagg"), 20, (1.0, 5.0))
    assert secure._config(1).get("similarity") == sent
