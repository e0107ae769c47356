"""The Count rule's record of first moves: counts each mover once per row, stays compact,
and comes back from a checkpoint exactly, or is refused by name when damaged."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrec.common.first_moves import KEYS, FirstMoves


def test_first_moves_counts_each_mover_once_per_row_and_its_record_comes_back():
    moves = FirstMoves()
    assert moves.new(3, np.array([1, 4, 6])).all()
    assert moves.new(3, np.array([0, 4, 6, 9])).tolist() == [True, False, False, True]
    assert moves.new(2**64 - 1, np.array([4])).tolist() == [True]
    assert moves.new(3, np.array([0, 1, 4, 6, 9])).sum() == 0  # every round again: nothing
    pairs = moves.pairs()
    assert pairs.dtype == np.uint64 and pairs.shape == (6, 2)
    back = FirstMoves.from_pairs(pairs, 10)
    np.testing.assert_array_equal(back.pairs(), pairs)
    assert back.new(3, np.array([1, 2])).tolist() == [False, True] and len(back) == 2
    assert len(FirstMoves.from_pairs(np.empty((0, 2), np.uint64), 10)) == 0
    for bad, problem in (([[3, 1]], "uint64"), (None, "uint64"),
                         (np.array([[3, 10]], np.uint64), "beyond"),
                         (np.array([[3, 1], [3, 1]], np.uint64), "repeats"),
                         (np.array([[3.0, 1.0]]), "uint64")):
        with pytest.raises(ValueError, match=problem):
            FirstMoves.from_pairs(bad, 10)


moves_st = st.lists(st.tuples(st.integers(0, 5),
                              st.lists(st.integers(0, 99), max_size=60, unique=True)),
                    max_size=25)


@settings(max_examples=200, deadline=None)
@given(moves_st, st.integers(100, 130))
def test_the_record_answers_as_a_set_would_and_comes_back_from_its_checkpoint_form(
        calls, n_rows):
    moves, seen = FirstMoves(), {}
    for mover, rows in calls:
        rows = np.array(sorted(rows), dtype=np.int64)
        mine = seen.setdefault(mover, set())
        expected = [int(r) not in mine for r in rows]
        assert moves.new(mover, rows).tolist() == expected
        mine.update(int(r) for r in rows)
    record = moves.record(n_rows)
    assert set(record) == set(KEYS)
    back = FirstMoves.from_record(record, n_rows)
    np.testing.assert_array_equal(back.pairs(), moves.pairs())
    for mover, rows in seen.items():
        np.testing.assert_array_equal(back.rows(mover), sorted(rows))
        everything = np.arange(n_rows)
        assert back.new(mover, everything).tolist() == [r not in rows for r in range(n_rows)]


def test_a_mover_that_has_moved_much_of_the_table_is_kept_as_a_bitmap():
    # (the ML-100K implicit stream's shape: 943 devices, each ~64 % of 1,682 rows)
    rng = np.random.default_rng(0)
    n_rows, moves = 1682, FirstMoves()
    pairs = 0
    for mover in range(943):
        rows = np.flatnonzero(rng.random(n_rows) < 0.64)
        moves.new(mover, rows[: len(rows) // 2])
        moves.new(mover, rows)  # (in two rounds)
        pairs += len(rows)
    record = moves.record(n_rows)
    size = sum(a.nbytes for a in record.values())
    assert size <= 943 * (n_rows // 8 + 1 + 8) + 64 and size * 50 < 16 * pairs  # (+ node ids)
    assert len(record["moved-dense-nodes"]) == 943 and len(record["moved-rows"]) == 0
    # and a mover that moved a few rows of a large table stays a list of rows
    few = FirstMoves()
    few.new(7, np.array([5, 90_000]))
    record = few.record(100_000)
    assert record["moved-rows"].tolist() == [5, 90_000]
    assert record["moved-dense"].shape == (0, 12_500)


def test_a_bitmap_grows_with_the_table():
    moves = FirstMoves()
    moves.new(1, np.arange(0, 40))  # dense: a bitmap of 5 bytes
    assert moves.new(1, np.array([39, 41, 500])).tolist() == [False, True, True]
    back = FirstMoves.from_record(moves.record(600), 600)
    assert back.new(1, np.array([0, 41, 500, 599])).tolist() == [False, False, False, True]


def _record() -> dict[str, np.ndarray]:
    moves = FirstMoves()
    moves.new(3, np.array([2, 200]))  # a few rows of many: sorted rows
    moves.new(4, np.arange(0, 100))  # most rows: a bitmap
    record = moves.record(210)
    assert record["moved-nodes"].tolist() == [3] and record["moved-dense-nodes"].tolist() == [4]
    return record


@pytest.mark.parametrize("key, value, problem", [
    ("moved-rows", np.array([2, 200], np.int64), "moved-rows must be a 1-d uint32"),
    ("moved-nodes", np.array([[3]], np.uint64), "moved-nodes must be a 1-d uint64"),
    ("moved-dense", [[1]], "moved-dense must be a 2-d uint8"),
    ("moved-offsets", np.array([0, 3], np.int64), "moved-offsets must rise from 0"),
    ("moved-offsets", np.array([1, 2], np.int64), "moved-offsets must rise from 0"),
    ("moved-rows", np.array([200, 2], np.uint32), "not strictly rising"),
    ("moved-rows", np.array([2, 2], np.uint32), "not strictly rising"),
    ("moved-rows", np.array([2, 210], np.uint32), "moved-rows names a row beyond"),
    ("moved-dense-nodes", np.array([3], np.uint64), "repeat a node"),
    ("moved-dense", np.zeros((1, 26), np.uint8), r"moved-dense must be \(1, 27\)"),
    ("moved-dense", np.full((1, 27), 255, np.uint8), "moved-dense names a row beyond"),
])
def test_a_damaged_record_is_refused_by_name(key, value, problem):
    record = _record()
    record[key] = value
    with pytest.raises(ValueError, match=problem):
        FirstMoves.from_record(record, 210)


def test_a_record_missing_a_part_is_refused():
    record = _record()
    del record["moved-dense"]
    with pytest.raises(ValueError, match="lacks"):
        FirstMoves.from_record(record, 210)
