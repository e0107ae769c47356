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
    """``rule``: the server's step rule, or ``FACTORS/BIASES`` (the biases' own, at 0.5)."""
    rng = np.random.default_rng(seed)
    factor_rule, _, bias_rule = rule.partition("/")
    model = ItemModel(ItemParams.init(30, 4, rng, 0.1, mean=3.2), factor_rule, 0.05,
                      bias_rule or None, 0.5 if bias_rule else None)
    for r in range(1, rounds + 1):
        model.apply(random_aggregate(rng), r)
    return model


def random_aggregate(rng: np.random.Generator) -> Aggregate:
    ids = np.sort(rng.choice(30, 8, replace=False))
    return Aggregate(ids, rng.normal(size=(8, 4)), rng.normal(size=8), np.ones(8), np.ones(8))


@pytest.mark.parametrize("rule", ["sgd", "adagrad", "adam", "count", "adagrad/sgd", "sgd/adam",
                                  "count/count"])
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
    with pytest.raises(CheckpointError, match=r"other\.db: the digest does not match"):
        Checkpoint(other).load()
    reseal(other)  # sealed again, as someone who knows the format would
    with pytest.raises(CheckpointError, match=r"other\.db: inconsistent checkpoint"):
        Checkpoint(other).load()
    with sqlite3.connect(other) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE name = 'format'", (json.dumps(99),))
    reseal(other)
    with pytest.raises(CheckpointError, match="format 99"):
        Checkpoint(other).load()


def reseal(path, key: bytes | None = None) -> None:
    """Recompute the seal over whatever the file now holds (an attacker who knows the
    format; with ``key``, one who also holds the operator's key)."""
    import hashlib

    from fedrec.server.checkpoint import _canonical, _mac

    with sqlite3.connect(path) as conn:
        blobs = dict(conn.execute("SELECT name, npy FROM arrays"))
        texts = dict(conn.execute("SELECT name, value FROM meta"))
        conn.execute("DELETE FROM seal")
        conn.execute("INSERT INTO seal VALUES ('sha256', ?)",
                     (hashlib.sha256(_canonical(blobs, texts)).hexdigest(),))
        if key is not None:
            conn.execute("INSERT INTO seal VALUES ('hmac-sha256', ?)",
                         (_mac(key, blobs, texts),))


def rewrite(path, arrays: dict | None = None, meta: dict | None = None,
            key: bytes | None = None) -> None:
    """Replace some arrays or settings, then reseal."""
    import io

    with sqlite3.connect(path) as conn:
        for name, value in (arrays or {}).items():
            buf = io.BytesIO()
            np.save(buf, value)
            conn.execute("UPDATE arrays SET npy = ? WHERE name = ?", (buf.getvalue(), name))
        for name, value in (meta or {}).items():
            conn.execute("UPDATE meta SET value = ? WHERE name = ?", (json.dumps(value), name))
    reseal(path, key)


def test_200_random_bit_flips_never_load_as_a_different_model(tmp_path):
    path = tmp_path / "server.db"
    model = trained_model("adam")
    Checkpoint(path).save(model, 3, [{"round": 3, "train": {"accepted": 5.0}}],
                          {"rejected": {"norm": 1}, "dp-rounds": 0})
    original = path.read_bytes()
    rng = np.random.default_rng(42)
    refused = same = different = 0
    for bit in rng.choice(len(original) * 8, 200, replace=False):
        damaged = bytearray(original)
        damaged[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(damaged))
        try:
            loaded, last, history, _ = Checkpoint(path).load()
        except CheckpointError:
            refused += 1
            continue
        arrays, meta = loaded.state()
        identical = (last == 3 and history == [{"round": 3, "train": {"accepted": 5.0}}]
                     and meta == model.state()[1] and all(
                         np.array_equal(arrays[k], v) for k, v in model.state()[0].items()))
        same += identical  # the flip hit space SQLite does not use
        different += not identical
    assert different == 0, f"{different} flips loaded as a different model"
    assert refused > 0 and refused + same == 200


@pytest.mark.parametrize(("arrays", "meta", "problem"), [
    ({"factors": np.full((30, 4), np.nan, np.float32)}, None, "factors holds NaN"),
    ({"bias": np.full(30, np.inf, np.float32)}, None, "bias holds NaN or infinity"),
    ({"factors": np.zeros((30, 4))}, None, "factors must be a float32"),
    ({"version": np.full(30, 7, np.int64)}, None, "versions must be in"),
    (None, {"round": -5}, "round must be a whole number >= 0"),
    (None, {"server-round": 1000, "round": 1000}, "the history ends at round 3"),
    (None, {"server-round": 1}, "server-round must be a whole number >= the model's round"),
    (None, {"mean": float("nan")}, "mean must be a finite number"),
    (None, {"lr": 1e30}, "lr must be a finite number in"),
    (None, {"step-rule": "rmsprop"}, "step-rule must be one of"),
    (None, {"bias-lr": -1.0}, "bias-lr must be a finite number in"),
    (None, {"bias-lr": "fast"}, "bias-lr must be a finite number in"),
    (None, {"bias-step-rule": "rmsprop"}, "bias-step-rule must be one of"),
    (None, {"history": {"round": 1}}, "history must be a list"),
    (None, {"run": {"dp-rounds": -1}}, "dp-rounds"),
    (None, {"run": {"rejected": {"norm": "many"}}}, "rejected must map"),
    (None, {"run": {"set-aside": {"coordination": -2}}}, "set-aside must map"),
    (None, {"run": {"set-aside": ["coordination"]}}, "set-aside must map"),
    (None, {"run": {"acked": {"7": [99, 1]}}}, "acked must map"),  # a version after the run
    (None, {"run": {"acked": {"7": [1, 10**6]}}}, "acked must map"),  # more rows than exist
    (None, {"run": {"acked": {"node-7": [1, 1]}}}, "acked must map"),
    (None, {"run": {"acked": {"7": [1]}}}, "acked must map"),
    (None, {"run": {"seen": [-1]}}, "seen must list"),
    (None, {"run": {"seen": {"7": 1}}}, "seen must list"),
    ({"factor-rule.v": np.full((30, 4), -1.0, np.float32)}, None, "must be >= 0"),
    (None, {"run": {"clip-recent": [[7, 0.1], [7, 0.2]]}}, "clip-recent must list distinct"),
    (None, {"run": {"clip-recent": None}}, "clip-recent must list distinct"),
    (None, {"run": {"clip-recent": {"7": 0.1}}}, "clip-recent must list distinct"),
    (None, {"run": {"clip-recent": [[2**64, 0.1]]}}, "clip-recent must list distinct"),
    (None, {"run": {"clip-recent": [[7, float("nan")]]}}, "clip-recent must list distinct"),
    (None, {"run": {"clip-recent": [[7, None]]}}, "clip-recent must list distinct"),
    (None, {"run": {"clip-recent": [[True, 0.1]]}}, "clip-recent must list distinct"),
    (None, {"run": {"clip-recent": [[-1, 0.1]]}}, "clip-recent must list distinct"),
    (None, {"run": {"clip-recent": [[7, -0.1]]}}, "clip-recent must list distinct"),
    (None, {"run": {"clip-recent": [[7, "big"]]}}, "clip-recent must list distinct"),
    (None, {"run": {"clip-recent": [[7, 0.1, 3]]}}, "clip-recent must list distinct"),
    (None, {"run": {"clip-recent": [[n, 0.1] for n in range(10_001)]}},
     "clip-recent must list distinct"),
    (None, {"run": {"budget-recent": [[7, 0.1], [7, 0.2]]}}, "budget-recent must list distinct"),
    (None, {"run": {"budget-recent": [[7, float("inf")]]}}, "budget-recent must list distinct"),
    (None, {"run": {"budget-recent": [[7, -1.0]]}}, "budget-recent must list distinct"),
    (None, {"run": {"budget-recent": "x"}}, "budget-recent must list distinct"),
    (None, {"halving": 0.0}, "halving must be a finite number in"),
    (None, {"halving": float("inf")}, "halving must be a finite number in"),
    (None, {"halving": "4"}, "halving must be a finite number in"),
])
def test_values_that_no_honest_run_writes_are_refused_by_name(tmp_path, arrays, meta,
                                                              problem):
    path = tmp_path / "server.db"
    Checkpoint(path).save(trained_model("adam"), 3, [{"round": 3}], {"dp-rounds": 0})
    rewrite(path, arrays, meta)
    with pytest.raises(CheckpointError, match=problem):
        Checkpoint(path).load()


@pytest.mark.parametrize("name", ["run/foo.factors", "run/early-stop", "run/.bias",
                                  "run/early-stopx.bias"])
def test_a_run_array_that_no_part_of_the_server_owns_is_refused_by_name(tmp_path, name):
    """An array under run/ is state some part of the server keeps (early stopping's best
    table); one nobody owns cannot have come from an honest run, and is not skipped."""
    import io

    path = tmp_path / "server.db"
    model = trained_model("adam")
    best = {"factors": model.params.factors.copy(), "bias": model.params.bias.copy()}
    Checkpoint(path).save(model, 3, [{"round": 3}], {"dp-rounds": 0}, {"early-stop": best})
    assert Checkpoint(path).load()[3]["arrays"]["early-stop"].keys() == best.keys()
    buf = io.BytesIO()
    np.save(buf, np.zeros(3, np.float32))
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO arrays VALUES (?, ?)", (name, buf.getvalue()))
    reseal(path)
    with pytest.raises(CheckpointError, match=f"array '{name}' belongs to no part of the "
                                              "server's state"):
        Checkpoint(path).load()


def test_saving_arrays_for_a_part_that_keeps_none_is_a_bug_caught_before_writing(tmp_path):
    path = tmp_path / "server.db"
    with pytest.raises(ValueError, match="run arrays of 'stopping'"):
        Checkpoint(path).save(trained_model("sgd"), 1, [{"round": 1}], {},
                              {"stopping": {"bias": np.zeros(3, np.float32)}})
    assert not path.exists()


def test_with_the_operator_s_key_a_resealed_change_is_refused(tmp_path):
    key, other = bytes(range(32)), bytes(range(1, 33))
    path = tmp_path / "server.db"
    model = trained_model("sgd")
    Checkpoint(path, key=key).save(model, 3, [])
    assert Checkpoint(path, key=key).load()[1] == 3
    with pytest.raises(CheckpointError, match="the MAC does not match"):
        Checkpoint(path, key=other).load()
    rewrite(path, meta={"mean": 4.9})  # resealed with the digest, but not the MAC
    with pytest.raises(CheckpointError, match="no MAC, but the operator's key is given"):
        Checkpoint(path, key=key).load()
    rewrite(path, meta={"mean": 4.9}, key=other)
    with pytest.raises(CheckpointError, match="the MAC does not match"):
        Checkpoint(path, key=key).load()


def test_an_empty_checkpoint_is_an_error_unless_a_fresh_start_is_asked(tmp_path):
    path = tmp_path / "server.db"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty.*fresh start"):
        Checkpoint(path).load()
    Checkpoint(tmp_path / "kept.db").save(trained_model("sgd"), 3, [])
    emptied = tmp_path / "kept.db"
    with sqlite3.connect(emptied) as conn:
        for table in ("arrays", "meta", "seal"):
            conn.execute(f"DELETE FROM {table}")
    with pytest.raises(CheckpointError, match="holds nothing"):
        Checkpoint(emptied).load()
    fresh = Checkpoint(emptied, fresh=True)
    assert fresh.load() is None
    fresh.save(trained_model("sgd", rounds=1), 1, [])
    assert Checkpoint(emptied).load()[1] == 1
    assert (tmp_path / "kept.db.before-fresh").exists()  # nothing is lost


def test_an_unsealed_format_1_checkpoint_is_refused_with_the_way_out(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE arrays (name TEXT PRIMARY KEY, npy BLOB)")
        conn.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT INTO meta VALUES ('format', '1')")
    with pytest.raises(CheckpointError, match=r"format 1, unsealed.*checkpoint-fresh"):
        Checkpoint(path).load()


def test_a_bad_checkpoint_key_file_or_option_is_named(tmp_path):
    from fedrec.common.keyfile import KeyFileError
    from fedrec.common.settings import RunSettings
    from fedrec.server.app import open_checkpoint

    for content in (b"short", b"zz" * 32, b""):
        (tmp_path / "bad.key").write_bytes(content)
        with pytest.raises(KeyFileError, match=r"bad\.key: a key file holds 32 raw bytes"):
            open_checkpoint(RunSettings(checkpoint=str(tmp_path / "s.db"),
                                        checkpoint_key_file=str(tmp_path / "bad.key")))
    with pytest.raises(KeyFileError, match=r"missing\.key: cannot read"):
        open_checkpoint(RunSettings(checkpoint=str(tmp_path / "s.db"),
                                    checkpoint_key_file=str(tmp_path / "missing.key")))
    with pytest.raises(ValueError, match="need a checkpoint"):
        open_checkpoint(RunSettings(checkpoint_fresh=True))
    assert not (tmp_path / "s.db").exists()  # nothing made on the way


def test_a_count_rules_counts_are_checked_and_its_halving_comes_back(tmp_path):
    path = tmp_path / "server.db"
    rng = np.random.default_rng(0)
    model = ItemModel(ItemParams.init(30, 4, rng, 0.1), "count", 2.0, "count", 3.0, halving=7.0)
    model.apply(random_aggregate(rng), 1)
    big = 2**64 - 5  # (Flower's node ids are unsigned 64-bit)
    model.first_moves(big, np.array([3, 9]))
    model.first_moves(7, np.array([1]))
    Checkpoint(path).save(model, 1, [{"round": 1}])
    loaded = Checkpoint(path).load()[0]
    assert loaded.halving == 7.0 and loaded.state()[1]["halving"] == 7.0
    np.testing.assert_array_equal(loaded.state()[0]["bias-rule.n"], model.state()[0]["bias-rule.n"])
    # the rows each node moved come back: a node's later move on them is not counted again
    assert loaded.first_moves(big, np.array([3, 4, 9])).tolist() == [False, True, False]
    assert loaded.first_moves(7, np.array([1, 2])).tolist() == [False, True]
    # (every way the record can be damaged: tests/common/test_first_moves.py; here, that a
    # damaged one is refused by name through the checkpoint)
    good = model.state()[0]
    assert good["moved-dense-nodes"].tolist() == [7, big]  # (two of 30 rows: bitmaps)
    for key, damaged, problem in (
            ("moved-dense", np.full((2, 4), 0x80, np.uint8), "moved-dense names a row beyond"),
            ("moved-dense-nodes", np.array([7, 7], np.uint64), "repeat a node"),
            ("moved-dense", np.zeros((2, 3), np.uint8), "moved-dense must be"),
            ("moved-offsets", np.array([0, 5], np.int64), "moved-offsets must rise")):
        rewrite(path, {key: damaged})
        with pytest.raises(CheckpointError, match=problem):
            Checkpoint(path).load()
        rewrite(path, {key: good[key]})
    assert Checkpoint(path).load()[0].first_moves(7, np.array([1])).tolist() == [False]
    rewrite(path, {"bias-rule.n": np.full(30, -1.0)})
    with pytest.raises(CheckpointError, match=r"bias-rule\.n must be >= 0"):
        Checkpoint(path).load()
    rewrite(path, {"bias-rule.n": np.zeros(29)})
    with pytest.raises(CheckpointError, match="'n' has shape"):
        Checkpoint(path).load()


def test_a_checkpoint_from_before_the_biases_had_their_own_rule_loads_with_the_factors(
        tmp_path):
    path = tmp_path / "server.db"
    model = trained_model("adagrad")
    Checkpoint(path).save(model, 3, [{"round": 3}])
    with sqlite3.connect(path) as conn:  # as an older fedrec wrote it
        conn.execute("DELETE FROM meta WHERE name IN ('bias-step-rule', 'bias-lr')")
    rewrite(path, meta={})  # resealed
    loaded = Checkpoint(path).load()[0]
    assert (loaded.bias_step_rule, loaded.bias_lr) == ("adagrad", 0.05)
    np.testing.assert_array_equal(loaded.state()[0]["bias-rule.accum"],
                                  model.state()[0]["bias-rule.accum"])


def test_the_learned_bounds_windows_come_back_with_a_resumed_run(tmp_path):
    """The clip and budget defences' windows of recent devices are in the checkpoint: a
    restarted server takes its medians over the same devices, so a few devices present in
    every round do not own the bounds again while the windows refill."""
    from fedrec.common.schema import ItemUpdate
    from fedrec.common.settings import RunSettings
    from fedrec.server.app import build_strategy, open_checkpoint, resume_strategy

    s = RunSettings(checkpoint=str(tmp_path / "server.db"), factors=4,
                    defences="clip,budget,coordination")
    cp = open_checkpoint(s)
    strategy = build_strategy(s, 30, 3.5, (1.0, 5.0), cp)
    rows = [ItemUpdate(np.array([1, 2]), np.full((2, 4), v, np.float32),
                       np.zeros(2, np.float32), np.ones(2, np.float32))
            for v in (0.1, 0.2, 0.3)]
    for defence in strategy.defences[:2]:
        defence.screen(rows, nodes=[2**64 - 1, 5, 9])
    strategy.history.append({"round": 1})
    strategy.save_checkpoint(1)
    resumed = resume_strategy(s, open_checkpoint(s).load(), (1.0, 5.0), open_checkpoint(s))
    for before, after in zip(strategy.defences[:2], resumed.defences[:2], strict=True):
        assert after.name == before.name and after.recent.values == before.recent.values
        assert list(after.recent.values) == [2**64 - 1, 5, 9]
    assert resumed.defences[1].recent.values[9] == pytest.approx(2 * 4 * 0.3 ** 2)


def as_pairs_record(path, pairs: np.ndarray, keep_new: bool = False) -> None:
    """Rewrite a checkpoint's record of first moves as a checkpoint before the compact
    record stored it: (node, row) pairs under "moved"."""
    import io

    buf = io.BytesIO()
    np.save(buf, pairs)
    with sqlite3.connect(path) as conn:
        if not keep_new:
            conn.execute("DELETE FROM arrays WHERE name LIKE 'moved-%'")
        conn.execute("INSERT OR REPLACE INTO arrays VALUES (?, ?)", ("moved", buf.getvalue()))
    reseal(path, None)


def test_a_checkpoint_that_stored_first_moves_as_pairs_still_loads(tmp_path):
    path = tmp_path / "server.db"
    rng = np.random.default_rng(0)
    model = ItemModel(ItemParams.init(30, 4, rng, 0.1), "count", 2.0)
    model.first_moves(2**64 - 5, np.array([3, 9]))
    model.first_moves(7, np.arange(0, 25))
    Checkpoint(path).save(model, 1, [{"round": 1}])
    pairs = model._moved.pairs()
    as_pairs_record(path, pairs)
    loaded = Checkpoint(path).load()[0]
    np.testing.assert_array_equal(loaded._moved.pairs(), pairs)
    assert loaded.first_moves(7, np.array([24, 25])).tolist() == [False, True]
    as_pairs_record(path, np.array([[7, 30]], np.uint64))
    with pytest.raises(CheckpointError, match="moved names a row beyond"):
        Checkpoint(path).load()
    # both forms at once: which one is the record? Refused.
    Checkpoint(path).save(model, 1, [{"round": 1}])
    as_pairs_record(path, pairs, keep_new=True)
    with pytest.raises(CheckpointError, match="the moved record is there twice"):
        Checkpoint(path).load()
