"""The pairs model's math (fedrec.common.pairs): the table counted in pieces is the table
counted at once, every hostile contribution is refused by field, and scores follow the
formula written out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.common import models, pairs
from fedrec.common.schema import InvalidReplyError
from fedrec.common.settings import RunSettings


def test_latest_distinct_keeps_the_latest_cap_items_by_their_latest_event():
    items = np.array([5, 3, 5, 9, 1, 3, 7])  # latest first: 7, 3, 1, 9, 5
    assert pairs.latest_distinct(items, 10).tolist() == [1, 3, 5, 7, 9]
    assert pairs.latest_distinct(items, 3).tolist() == [1, 3, 7]
    assert pairs.latest_distinct(np.empty(0, np.int64), 3).tolist() == []


@pytest.mark.parametrize("seed", range(5))
def test_counting_in_pieces_gives_the_table_counted_at_once(seed):
    """Devices sending their items over several rounds (each the items not counted yet)
    build exactly the table of their whole sets: the model is incremental."""
    rng = np.random.default_rng(seed)
    n = 30
    sets = [np.unique(rng.integers(0, n, rng.integers(0, 12))) for _ in range(40)]
    whole = pairs.PairCounts.of_sets(sets, n)
    pieces = pairs.PairCounts.empty(n)
    counted = [np.empty(0, np.int64) for _ in sets]
    for _ in range(4):
        for d, items in enumerate(sets):
            todo = np.setdiff1d(items, counted[d])
            new = np.sort(rng.permutation(todo)[: rng.integers(0, len(todo) + 1)])
            pairs.check_contribution(new.astype(np.int64), counted[d], n, 100)
            counted[d] = pieces.change(counted[d], new.astype(np.int64))
    for d, items in enumerate(sets):  # the rest
        pieces.change(counted[d], np.setdiff1d(items, counted[d]).astype(np.int64))
    np.testing.assert_array_equal(pieces.counts, whole.counts)
    x = np.zeros((len(sets), n))
    for d, items in enumerate(sets):
        x[d, items] = 1
    np.testing.assert_array_equal(whole.counts, x.T @ x)


@pytest.mark.parametrize("new, reason, needle", [
    (np.array([1.0, 2.0]), "pairs.new", "int64"),
    (np.array([[1, 2]], np.int64), "pairs.new", "1-d"),
    ([1, 2], "pairs.new", "int64"),
    (np.array([1, 20], np.int64), "pairs.new", "outside"),
    (np.array([-1, 2], np.int64), "pairs.new", "outside"),
    (np.array([3, 3], np.int64), "pairs.new", "repeated"),
    (np.array([4, 5], np.int64), "pairs.new", "already"),
    (np.arange(10, 17, dtype=np.int64), "pairs.new", "cap"),
])
def test_every_hostile_contribution_is_refused_by_field(new, reason, needle):
    counted = np.array([4, 9], np.int64)
    with pytest.raises(InvalidReplyError) as err:
        pairs.check_contribution(new, counted, 20, 8)
    assert err.value.reason == reason and needle in str(err.value)


@pytest.mark.parametrize("drop, needle", [
    (np.array([4, 5], np.int64), "not counted"),
    (np.array([4, 4], np.int64), "repeated"),
    (np.array([4.0]), "int64"),
    (np.array([40], np.int64), "outside"),
])
def test_a_hostile_drop_is_refused_by_field(drop, needle):
    with pytest.raises(InvalidReplyError) as err:
        pairs.check_contribution(np.array([1], np.int64), np.array([4, 9], np.int64), 20, 8,
                                 drop)
    assert err.value.reason == "pairs.drop" and needle in str(err.value)


@pytest.mark.parametrize("seed", range(3))
def test_a_sliding_window_of_counts_is_the_table_of_the_latest_sets(seed):
    """Devices whose latest ``cap`` items change (new ones in, old ones dropped) leave the
    table of their current sets, whatever the order of the changes."""
    rng = np.random.default_rng(seed)
    n, cap = 25, 5
    streams = [rng.integers(0, n, rng.integers(1, 30)) for _ in range(20)]
    table = pairs.PairCounts.empty(n)
    counted = [np.empty(0, np.int64) for _ in streams]
    for step in range(1, 31):
        for d, stream in enumerate(streams):
            target = pairs.latest_distinct(stream[:step], cap)
            new, drop = np.setdiff1d(target, counted[d]), np.setdiff1d(counted[d], target)
            pairs.check_contribution(new, counted[d], n, cap, drop)
            counted[d] = table.change(counted[d], new, drop)
            np.testing.assert_array_equal(counted[d], target)
    final = [pairs.latest_distinct(s, cap) for s in streams]
    np.testing.assert_array_equal(table.counts, pairs.PairCounts.of_sets(final, n).counts)


def test_the_digest_tells_sets_apart():
    a, b = np.array([1, 2, 3]), np.array([1, 2, 4])
    assert pairs.digest(a) == pairs.digest(a.copy()) != pairs.digest(b)
    assert 0 <= pairs.digest(np.empty(0, np.int64)) < 2**56


def test_a_device_at_its_cap_is_accepted_up_to_it():
    pairs.check_contribution(np.arange(6, dtype=np.int64), np.array([10, 11], np.int64),
                             20, 8)


def test_scores_follow_the_formula_by_hand():
    rng = np.random.default_rng(3)
    n = 12
    sets = [np.unique(rng.integers(0, n, 5)) for _ in range(30)]
    c = pairs.PairCounts.of_sets(sets, n).counts
    items = np.array([0, 4, 7])
    w = 2.0
    sim = np.zeros(n)
    for j in range(n):
        for i in items:
            if i != j and c[i, i] and c[j, j]:
                sim[j] += c[i, j] / np.sqrt(c[i, i] * c[j, j])
    lp = np.log1p(np.diag(c))
    want = (sim - sim.mean()) / (sim.std() + 1e-9) + w * (lp - lp.mean()) / (lp.std() + 1e-9)
    np.testing.assert_allclose(pairs.scores(c, items, w), want, rtol=1e-7, atol=1e-7)


def test_a_device_with_no_items_ranks_by_popularity():
    c = pairs.PairCounts.of_sets([np.array([0, 1]), np.array([1, 2]), np.array([1])], 4).counts
    s = pairs.scores(c, np.empty(0, np.int64), 1.0)
    assert np.argmax(s) == 1 and s[3] == s.min()


@pytest.mark.parametrize("table, needle", [
    (np.zeros((3, 4), np.float32), "square"),
    (np.zeros((0, 0), np.float32), "square"),
    ([[1.0]], "square"),
    (np.array([[1, 2], [1, 1]], np.float32), "symmetric"),
    (np.array([[1, -1], [-1, 1]], np.float32), "non-negative"),
    (np.array([[np.nan, 0], [0, 1]], np.float32), "finite"),
    (np.zeros((pairs.MAX_ITEMS + 1, pairs.MAX_ITEMS + 1), np.float32), "more than"),
])
def test_a_damaged_table_is_refused_on_the_device(table, needle):
    with pytest.raises(ValueError, match=r"pairs\.counts") as err:
        pairs.check_table(table)
    assert needle in str(err.value)


def test_the_table_is_bounded_by_the_catalogue_it_can_ship():
    with pytest.raises(ValueError, match="2,000"):
        pairs.PairCounts.empty(pairs.MAX_ITEMS + 1)


def test_the_model_is_one_named_thing_with_its_settings_checked():
    assert set(models.MODELS) == {"mf", "pairs"}
    assert models.model_kind("pairs").federated == "federated-pairs"
    with pytest.raises(ValueError, match="model must be one of mf, pairs"):
        RunSettings(model="knn")
    with pytest.raises(ValueError, match="implicit feedback"):
        RunSettings(model="pairs", protocol="explicit-5fold")
    with pytest.raises(ValueError, match="privacy=plain"):
        RunSettings(model="pairs", privacy="secagg")
    with pytest.raises(ValueError, match="checkpoint"):
        RunSettings(model="pairs", checkpoint="/tmp/x.sqlite")
    with pytest.raises(ValueError, match="pairs_cap"):
        RunSettings(model="pairs", pairs_cap=0)
    with pytest.raises(ValueError, match="defences must be one of"):
        RunSettings(model="pairs", defences="clip")
    with pytest.raises(ValueError, match="defences"):
        RunSettings(model="mf", defences="copies")
    RunSettings(model="pairs")
    RunSettings(model="pairs", defences="off")
    RunSettings(model="pairs", defences="copies")
    RunSettings(model="mf", privacy="secagg")


def test_copies_sets_aside_groups_of_near_copies_and_no_one_else():
    from fedrec.server.defences.copies import Copies

    rng = np.random.default_rng(0)
    honest = [np.unique(rng.choice(50, rng.integers(1, 9), replace=False)) for _ in range(60)]
    push = [np.array([3, 7, 9, 40])] * 3  # three copies
    near = [np.array([3, 7, 9, 40, 41]), np.array([3, 7, 9, 40, 42])]  # J 0.8 to the copies
    pair = [np.array([20, 21, 22, 23])] * 2  # two copies: fewer than a group
    small = [np.array([5, 6])] * 5  # below min_size: never compared
    sets = honest + push + near + pair + small
    found = set(Copies().copies(sets, 50).tolist())
    assert found == set(range(60, 65))
    assert Copies(tau=0.9).copies(near + [push[0]] * 2, 50).tolist() == []  # (J 0.8 < 0.9)
    # blocks of one device give what one block gives
    assert set(Copies(block=1).copies(sets, 50).tolist()) == found
    assert Copies().copies([], 50).tolist() == []


def test_a_device_set_aside_has_its_whole_set_taken_back_out():
    sets = [np.array([0, 2, 5]), np.array([1, 2]), np.array([0, 5, 6])]
    c = pairs.PairCounts.of_sets(sets, 8)
    c.remove(sets[2])
    np.testing.assert_array_equal(c.counts, pairs.PairCounts.of_sets(sets[:2], 8).counts)
