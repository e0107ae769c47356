"""Conformance of every defence (fedrec.server.defences), and what each one is for."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.common import defences as names
from fedrec.common.schema import ItemUpdate
from fedrec.common.settings import RunSettings
from fedrec.server.defences import DEFENCES, build_defences
from fedrec.server.defences.budget import Budget, energy
from fedrec.server.defences.clip import LearnedClip, learned_bound, row_norms
from fedrec.server.defences.coordination import Coordination
from fedrec.server.defences.window import RecentMedian

K = 16


def honest_updates(n: int = 60, n_items: int = 200, seed: int = 0) -> list[ItemUpdate]:
    """Updates shaped like honest devices': each device its own user direction, a few
    dozen rows, small norms."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ids = np.sort(rng.choice(n_items, rng.integers(5, 40), replace=False))
        user = rng.standard_normal(K)
        scale = rng.uniform(0.001, 0.05, len(ids))
        rows = (scale[:, None] * user[None, :]
                + 0.002 * rng.standard_normal((len(ids), K))).astype(np.float32)
        bias = (scale * rng.choice([-1.0, 1.0], len(ids))).astype(np.float32)
        out.append(ItemUpdate(ids.astype(np.int64), rows, bias,
                              np.ones(len(ids), np.float32)))
    return out


def pushes(n: int, target: int = 7, norm: float = 10.0) -> list[ItemUpdate]:
    """``n`` devices sending the same crafted row for ``target`` at ``norm``."""
    direction = np.linspace(-1, 1, K + 1)
    direction *= norm / np.linalg.norm(direction)
    return [ItemUpdate(np.array([target]), direction[None, :K].astype(np.float32),
                       direction[K:].astype(np.float32), np.ones(1, np.float32))
            for _ in range(n)]


def copy_of(updates: list[ItemUpdate]) -> list[tuple[np.ndarray, ...]]:
    return [tuple(a.copy() for a in u.arrays().values()) for u in updates]


def test_every_named_defence_is_built_and_the_default_names_them():
    assert tuple(DEFENCES) == names.NAMES
    assert names.defence_names(names.DEFAULT)
    assert RunSettings().defences == names.DEFAULT
    assert build_defences("off") == [] and build_defences("") == []


@pytest.mark.parametrize("bad", ["clip,clip", "median", "clip,,coordination", "on"])
def test_an_unknown_or_repeated_defence_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="defences"):
        RunSettings.from_run_config({"defences": bad})
    with pytest.raises(ValueError, match="defences must be"):
        names.defence_names(bad)
    with pytest.raises(ValueError, match="defences must be"):
        RunSettings(defences=bad)


@pytest.mark.parametrize("name", names.NAMES)
def test_conformance_same_length_no_mutation_deterministic_and_honest_rows_kept(name):
    updates = honest_updates() + pushes(6)
    before = copy_of(updates)
    first = DEFENCES[name](0).screen(updates)
    second = DEFENCES[name](0).screen(updates)
    assert len(first) == len(updates)
    for got, want in zip(copy_of(updates), before, strict=True):  # inputs never mutated
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(first, second, strict=True):  # same input, same output
        assert (a is None) == (b is None)
        if a is not None:
            for x, y in zip(a.arrays().values(), b.arrays().values(), strict=True):
                np.testing.assert_array_equal(x, y)
    for u, out in zip(updates, first, strict=True):  # a kept reply keeps its ids and counts
        if out is not None:
            np.testing.assert_array_equal(out.ids, u.ids)
            np.testing.assert_array_equal(out.counts, u.counts)
            assert (row_norms(out) <= row_norms(u) + 1e-6).all()  # never lengthened
    assert DEFENCES[name](0).screen([]) == []


def test_clip_bound_is_the_median_longest_row_and_a_minority_cannot_move_it():
    honest = honest_updates()
    bound = learned_bound(honest)
    assert bound == pytest.approx(np.median([row_norms(u).max() for u in honest]))
    # 40 % of devices sending rows at the published bound move the median a little,
    # never to their own length.
    attacked = learned_bound(honest + pushes(40))
    assert attacked < 0.2 * 10.0
    out = LearnedClip().screen(honest + pushes(40))
    for u in out[len(honest):]:
        assert row_norms(u).max() == pytest.approx(attacked, rel=1e-5)


def test_clip_over_small_rounds_takes_its_median_over_recent_devices_not_one_rounds():
    """Rounds of a stream have a few devices. Five devices present in every round, with
    tiny rows on everything, are the majority of every round of four honest ones: over one
    round the median is theirs and every honest row is cut to nothing. Told the nodes,
    clip takes the median over up to ``window`` recent distinct devices, each by its latest
    reply, and the five stay a minority; a round as large as the window is its own."""
    honest = honest_updates(400, seed=3)
    tiny = [ItemUpdate(np.arange(200, dtype=np.int64), np.full((200, K), 1e-7, np.float32),
                       np.zeros(200, np.float32), np.ones(200, np.float32)) for _ in range(5)]
    windowed, one_round = LearnedClip(window=200), LearnedClip()
    for r in range(100):
        round_ = honest[4 * r:4 * r + 4] + tiny
        nodes = [1000 + 4 * r + i for i in range(4)] + [1, 2, 3, 4, 5]
        kept = windowed.screen(round_, nodes=nodes)
        cut = one_round.screen(round_)
    assert cut[0] is not None and row_norms(cut[0]).max() < 1e-5  # (one round: frozen)
    honest_median = np.median([row_norms(u).max() for u in honest[-195:]])
    assert windowed.last["bound"] == pytest.approx(honest_median, rel=0.2)
    assert len(windowed.recent.values) == 200 and all(n in windowed.recent.values
                                                      for n in range(1, 6))
    for u, k in zip(honest[396:400], kept[:4], strict=True):
        assert row_norms(k).max() >= min(row_norms(u).max(), 0.5 * honest_median)
    big = LearnedClip(window=10)  # a round larger than the window: over the round itself
    big.screen(honest[:60], nodes=list(range(60)))
    assert big.last["bound"] == pytest.approx(learned_bound(honest[:60]))
    with pytest.raises(ValueError, match="2 nodes for 3 updates"):
        LearnedClip().screen(honest[:3], nodes=[1, 2])


@pytest.mark.parametrize("defence", [LearnedClip, Budget])
def test_a_learned_bounds_window_does_not_depend_on_the_order_a_rounds_replies_arrive_in(
        defence):
    """Once the window is full, which of a round's devices it drops first must not follow
    their arrival order: Ray's engine delivers replies in another order than the
    in-process one, and the bounds (so the model) would differ from then on."""
    honest = honest_updates(300, seed=5)
    bounds = []
    for flip in (False, True):
        clip = defence(window=7)
        got = []
        for r in range(60):
            idx = list(range(5 * r, 5 * r + 5))
            if flip:
                idx = idx[::-1]
            clip.screen([honest[i] for i in idx], nodes=[1000 + i % 23 for i in idx])
            got.append(clip.last["bound"])
        bounds.append(got)
    assert bounds[0] == bounds[1]


def freezer(n_items: int = 200, norm: float = 1.0, seed: int = 9) -> ItemUpdate:
    """A reply moving every row of the table, each in a random direction at ``norm``
    (``fedrec.simulations.attacks.stream_freeze``'s)."""
    move = np.random.default_rng(seed).standard_normal((n_items, K + 1))
    move *= norm / np.linalg.norm(move, axis=1, keepdims=True)
    return ItemUpdate(np.arange(n_items, dtype=np.int64), move[:, :K].astype(np.float32),
                      move[:, K].astype(np.float32), np.ones(n_items, np.float32))


def test_budget_scales_a_reply_moving_every_row_down_to_factor_median_replies():
    """clip lets each row of a reply move as far as an ordinary device's longest row, so a
    reply moving every row at that length passed it whole. The budget bounds the reply's
    energy (its squared rows summed) by ``factor`` × the median reply's, and scales the
    whole reply down to it, every row alike; honest replies pass untouched."""
    honest = honest_updates()
    bound = learned_bound(honest)
    attack = [freezer(norm=bound, seed=s) for s in range(3)]
    budget = Budget(factor=5.0)
    out = budget.screen(honest + attack)
    median = np.median([energy(u) for u in honest + attack])
    assert budget.last == {"bound": pytest.approx(5 * median), "replies": 3.0}
    assert all(o is u for o, u in zip(out, honest, strict=False))  # (the same objects)
    for a, o in zip(attack, out[len(honest):], strict=True):
        assert energy(a) > 4 * energy(o)  # 200 rows at the bound: over budget
        assert energy(o) == pytest.approx(5 * median, rel=1e-5)
        ratio = o.rows / a.rows  # every row scaled alike: directions kept
        np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-5)
        np.testing.assert_allclose(o.bias / a.bias, ratio.flat[0], rtol=1e-5)
    # Past the budget a bigger move gains nothing: the scaled reply is the same.
    louder = Budget(factor=5.0).screen(honest + [freezer(norm=10 * bound, seed=s)
                                                 for s in range(3)])
    for o, q in zip(out[len(honest):], louder[len(honest):], strict=True):
        np.testing.assert_allclose(o.rows, q.rows, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("bad", [0.5, 0, -1, float("nan"), float("inf"), True, "20"])
def test_a_budget_factor_below_one_or_not_a_number_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="budget factor must be a number >= 1"):
        Budget(factor=bad)


@pytest.mark.parametrize("bad", [0, 10_001, 2.5, True, "200"])
def test_a_window_that_is_not_a_whole_number_in_range_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="window must be a whole number in"):
        RecentMedian(bad)
    with pytest.raises(ValueError, match="window must be a whole number in"):
        Budget(window=bad)


def test_coordination_sets_aside_alike_rows_and_no_honest_device():
    d = Coordination()
    honest = honest_updates(200)
    assert not d.flagged(honest).any()
    flagged = d.flagged(honest + pushes(d.group))
    assert flagged[len(honest):].all() and not flagged[:len(honest)].any()
    assert not d.flagged(honest + pushes(d.group - 1)).any()  # fewer than a group


def test_coordination_takes_off_the_pull_along_the_row_each_device_was_sent():
    """Weight decay pulls every device's update to an item along the row it was sent,
    alike for all of them: with the sent rows, only the devices' own parts are compared."""
    rng = np.random.default_rng(4)
    table = rng.standard_normal((50, K)).astype(np.float32)
    updates = []
    for _ in range(40):
        ids = np.sort(rng.choice(50, 10, replace=False))
        own = 0.01 * rng.standard_normal((10, K))
        rows = (0.5 * table[ids] + own).astype(np.float32)  # decay dominates
        updates.append(ItemUpdate(ids.astype(np.int64), rows, np.zeros(10, np.float32),
                                  np.ones(10, np.float32)))
    assert Coordination(common=0).flagged(updates).any()  # alike without the sent rows
    assert not Coordination(common=0).flagged(updates, table).any()
    copies = [pushes(1, target=3)[0]] * 4
    assert Coordination().flagged(updates + copies, table)[-4:].all()


def test_coordination_takes_off_the_sent_row_and_the_shared_directions_together():
    """When every user shares one taste direction and the sent rows lean on it too (as
    early in a run), taking the sent row off before the shared directions leaves, in every
    honest row on an item, the same leftover of that item's row: honest devices pointed
    alike (ML-100K implicit, rounds 3-4: 76 honest replies set aside). Copies still are."""
    rng = np.random.default_rng(5)
    k, n_items = 64, 40
    m = rng.standard_normal(k)
    m /= np.linalg.norm(m)
    own = rng.standard_normal((n_items, k))
    own -= np.outer(own @ m, m)
    own /= np.linalg.norm(own, axis=1, keepdims=True)
    table = (-0.8 * m + 0.6 * own).astype(np.float32)
    updates = []
    for _ in range(400):
        ids = np.sort(rng.choice(n_items, 10, replace=False))
        user = m + 0.01 * rng.standard_normal(k)
        rows = (0.02 * user + 0.01 * table[ids]).astype(np.float32)
        updates.append(ItemUpdate(ids.astype(np.int64), rows, np.zeros(10, np.float32),
                                  np.ones(10, np.float32)))
    assert not Coordination().flagged(updates, table).any()
    copies = [updates[0]] * 4
    assert Coordination().flagged(updates + copies, table)[-4:].all()


def test_coordination_does_nothing_below_16_factors():
    """With few factors honest rows point alike (their bias dominates), so it stands
    aside rather than set honest devices aside."""
    rng = np.random.default_rng(0)
    updates = [ItemUpdate(np.array([3]), (0.001 * rng.standard_normal((1, 4))).astype(
        np.float32), np.array([0.05], np.float32), np.ones(1, np.float32)) for _ in range(9)]
    assert not Coordination().flagged(updates).any()
    copies = [updates[0]] * 9  # it stands aside even for copies
    assert not Coordination().flagged(copies).any()
    assert Coordination(min_factors=4).flagged(copies).all()


def test_coordination_misses_alike_rows_blurred_by_noise():
    """What it does not stop (said in its docstring and the README): rows whose angle to
    each other is large, however alike their mean."""
    rng = np.random.default_rng(3)
    rows = pushes(20)
    blurred = []
    for u in rows:
        v = np.append(u.rows[0], u.bias)
        noise = rng.standard_normal(len(v))
        v = v + noise * np.linalg.norm(v) / np.linalg.norm(noise)
        blurred.append(ItemUpdate(u.ids, v[None, :K].astype(np.float32),
                                  v[K:].astype(np.float32), u.counts))
    assert not Coordination().flagged(blurred).any()


@pytest.mark.parametrize("bad", [["clip"], None, {"clip": 1}, float("nan"), 3])
def test_a_defences_value_of_the_wrong_type_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="defences"):
        RunSettings.from_run_config({"defences": bad})
