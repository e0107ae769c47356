"""The server's checkpoint: exact round trip, atomic replacement, clear errors, and a run
that resumes from it with the next round."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from fedrec.common.params import ItemParams
from fedrec.server.aggregate import Aggregate
from fedrec.server.checkpoint import Checkpoint, CheckpointError
from fedrec.server.item_model import ItemModel


def trained_model(rule: str, seed: int = 0, rounds: int = 3) -> ItemModel:
    rng = np.random.default_rng(seed)
    model = ItemModel(ItemParams.init(30, 4, rng, 0.1, mean=3.2), rule, 0.05)
    for r in range(1, rounds + 1):
        model.apply(random_aggregate(rng), r)
    return model


def random_aggregate(rng: np.random.Generator) -> Aggregate:
    ids = np.sort(rng.choice(30, 8, replace=False))
    return Aggregate(ids, rng.normal(size=(8, 4)), rng.normal(size=8), np.ones(8), np.ones(8))


@pytest.mark.parametrize("rule", ["sgd", "adagrad", "adam"])
def test_a_saved_model_comes_back_bit_for_bit_and_steps_on_identically(tmp_path, rule):
    model = trained_model(rule)
    cp = Checkpoint(tmp_path / "server.db")
    cp.save(model, 3, [{"round": 3, "train": {"accepted": 5.0}}], {"rejected": {"norm": 1}})
    loaded, last, history, run = cp.load()
    assert last == 3 and history == [{"round": 3, "train": {"accepted": 5.0}}]
    assert run == {"rejected": {"norm": 1}}
    for name, value in model.state()[0].items():
        np.testing.assert_array_equal(loaded.state()[0][name], value, err_msg=name)
    assert loaded.state()[1] == model.state()[1]
    step = random_aggregate(np.random.default_rng(9))
    model.apply(step, 4)
    loaded.apply(step, 4)
    np.testing.assert_array_equal(loaded.params.factors, model.params.factors)
    np.testing.assert_array_equal(loaded.version, model.version)


def test_a_save_that_fails_midway_leaves_the_previous_checkpoint_whole(tmp_path):
    cp = Checkpoint(tmp_path / "server.db")
    first = trained_model("adam", rounds=2)
    cp.save(first, 2, [])
    later = trained_model("adam", rounds=5)
    with pytest.raises(TypeError):  # the history cannot be written: inside the transaction
        cp.save(later, 5, [{"round": 5, "oops": object()}])
    loaded, last, _, _ = cp.load()
    assert last == 2
    np.testing.assert_array_equal(loaded.params.factors, first.params.factors)
    assert Checkpoint(tmp_path / "none.db").load() is None


def test_a_damaged_checkpoint_is_a_clear_error_naming_the_file(tmp_path):
    path = tmp_path / "server.db"
    Checkpoint(path).save(trained_model("sgd"), 3, [])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match=r"server\.db"):
        Checkpoint(path).load()
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(CheckpointError, match=r"server\.db: not a readable checkpoint"):
        Checkpoint(path).load()
    other = tmp_path / "other.db"
    Checkpoint(other).save(trained_model("adam"), 3, [])
    with sqlite3.connect(other) as conn:
        conn.execute("DELETE FROM arrays WHERE name = 'factor-rule.m'")
    with pytest.raises(CheckpointError, match=r"other\.db: inconsistent checkpoint"):
        Checkpoint(other).load()
    with sqlite3.connect(other) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE name = 'format'", (json.dumps(99),))
    with pytest.raises(CheckpointError, match="format 99"):
        Checkpoint(other).load()
