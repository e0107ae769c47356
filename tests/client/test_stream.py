"""A streaming device: each event is scored before it is learned, the two modes, and the
update it uploads."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.client.device import UserState
from fedrec.client.stream import Cursor, StreamDevice
from fedrec.common.schema import TrainConfig

RNG = np.random.default_rng(0)
Q = RNG.normal(0, 0.3, (12, 4)).astype(np.float32)
B = RNG.normal(0, 0.1, 12).astype(np.float32)
EXPLICIT = TrainConfig(loss="mse", optimizer="online", local_epochs=1, lr=0.05, reg=0.0,
                       reg_bias=0.0)


def test_every_event_is_scored_before_it_is_learned():
    items, values = np.array([3, 5, 3]), np.array([4.0, 2.0, 5.0], np.float32)
    p0 = np.array([0.1, -0.2, 0.3, 0.05], np.float32)
    dev = StreamDevice(items, values, np.array([10, 20, 30]), state=UserState(p0.copy(), 0.0))
    sums = dev.arrive(3, Q, B, 3.0, EXPLICIT)
    # The same walk by hand: predict with the state before the event, then one SGD step.
    p, bu = p0.astype(np.float64), 0.0
    q, b = Q.astype(np.float64), B.astype(np.float64)
    want = 0.0
    for i, r in zip(items, values, strict=True):
        pred = 3.0 + bu + b[i] + q[i] @ p
        want += (pred - r) ** 2
        e = pred - r
        p, q[i] = p - 0.05 * e * q[i], q[i] - 0.05 * e * p
        bu, b[i] = bu - 0.05 * e, b[i] - 0.05 * e
    assert sums["pq-n"] == 3
    assert sums["pq-sq-err"] == pytest.approx(want, rel=1e-9)
    # Scoring with the model *after* learning an event would give a smaller error.
    assert sums["pq-sq-err"] > 0


def test_only_events_before_the_clock_arrive_and_each_arrives_once():
    dev = StreamDevice(np.array([1, 2, 3, 4]), np.ones(4, np.float32),
                       np.array([5, 6, 7, 8]), positions=np.array([10, 20, 30, 40]))
    assert dev.arrive(25, Q, B, 3.0, EXPLICIT)["pq-n"] == 2  # positions 10 and 20
    dev.train(Q, B, 3.0, EXPLICIT, "recursive", buffer=10)
    assert dev.arrive(25, Q, B, 3.0, EXPLICIT)["pq-n"] == 0  # nothing new
    dev.train(Q, B, 3.0, EXPLICIT, "recursive", buffer=10)
    assert dev.arrive(41, Q, B, 3.0, EXPLICIT)["pq-n"] == 2
    assert dev.cursor.seen == 4


def test_implicit_scores_first_interactions_only_ranked_among_unseen_items():
    cfg = TrainConfig(loss="bce", optimizer="online", local_epochs=1, lr=1e-12, negatives=2)
    items = np.array([7, 7, 2])  # a repeat of item 7 is not scored again (lr ~ 0: no drift)
    dev = StreamDevice(items, np.ones(3, np.float32), np.array([1, 2, 3]),
                       state=UserState(np.ones(4, np.float32), 0.0))
    sums = dev.arrive(3, Q, B, 0.0, cfg)
    assert sums["pq-n"] == 2
    scores = Q.astype(np.float64) @ np.ones(4) + B
    rank7 = int((scores > scores[7]).sum())
    rank2 = int((np.delete(scores, 7) > scores[2]).sum())  # 7 is no longer a candidate
    assert sums["pq-hits"] == (rank7 < 10) + (rank2 < 10)


def test_recursive_uploads_the_online_steps_and_forgets_incremental_keeps_a_buffer():
    items = np.arange(10) % 12
    values = np.linspace(1, 5, 10).astype(np.float32)
    times = np.arange(10)
    rec = StreamDevice(items, values, times, seed=1)
    inc = StreamDevice(items, values, times, seed=1)
    for dev in (rec, inc):
        dev.arrive(6, Q, B, 3.0, EXPLICIT)
    moved = rec._table  # the rows the arrival steps moved, beside the synced ones
    before = Q.astype(np.float64)
    before[moved.ids] = moved.q
    update, metrics = rec.train(Q, B, 3.0, EXPLICIT, "recursive", buffer=4)
    np.testing.assert_allclose(update.rows, (Q[update.ids] - before[update.ids]), rtol=1e-6)
    assert update.ids.tolist() == list(range(6)) and metrics["stored-events"] == 0
    _, metrics = inc.train(Q, B, 3.0, EXPLICIT, "incremental", buffer=4)
    assert metrics["stored-events"] == 4
    inc.arrive(9, Q, B, 3.0, EXPLICIT)  # three new events, 0.5 replays each: 2 old ones
    rows = inc.training_rows("incremental", buffer=6, replay=0.5)
    assert len(rows) == 2 and set(rows.tolist()) <= {3, 4, 5}  # old events in the buffer
    assert len(inc.training_rows("incremental", buffer=4, replay=0.5)) == 1  # only 5 is old


@pytest.mark.parametrize("optimizer", ["gd", "sgd", "online"])
@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_both_modes_run_with_every_optimiser(optimizer, loss):
    cfg = TrainConfig(loss=loss, optimizer=optimizer, local_epochs=2, lr=0.01,
                      negatives=2, batch_size=4)
    items = np.array([0, 3, 5, 3, 7, 9, 11, 2])
    values = np.array([4, 3, 5, 2, 1, 4, 3, 5], np.float32)
    for mode in ("incremental", "recursive"):
        dev = StreamDevice(items, values, np.arange(8), seed=3)
        dev.arrive(5, Q, B, 3.0, cfg)
        dev.train(Q, B, 3.0, cfg, mode, buffer=6, replay=1.0)
        dev.arrive(8, Q, B, 3.0, cfg)
        update, _ = dev.train(Q, B, 3.0, cfg, mode, buffer=6, replay=1.0)
        assert len(update.ids) and np.isfinite(update.rows).all()
        assert (np.diff(update.ids) > 0).all() and (update.counts > 0).all()
        assert dev.cursor == Cursor(8, 8)


def test_train_needs_arrive_first():
    dev = StreamDevice(np.array([1]), np.ones(1, np.float32), np.array([1]))
    with pytest.raises(RuntimeError, match="arrive"):
        dev.train(Q, B, 3.0, EXPLICIT, "recursive", buffer=1)


def test_with_a_pool_a_streaming_device_moves_only_its_items_and_the_pools_rows():
    rng = np.random.default_rng(4)
    q = rng.normal(0, 0.3, (200, 4)).astype(np.float32)
    b = rng.normal(0, 0.1, 200).astype(np.float32)
    items = np.array([5, 17, 40, 5, 99, 150])
    pool = np.array([2, 11, 40, 77, 123, 188])
    cfg = TrainConfig(loss="bce", optimizer="online", local_epochs=2, lr=0.05, negatives=4,
                      negative_pool=0.03)
    dev = StreamDevice(items, np.ones(6, np.float32), np.arange(6) * 10, seed=2)
    dev.arrive(6, q, b, 0.0, cfg, pool=pool)
    update, _ = dev.train(q, b, 0.0, cfg, "incremental", buffer=10, replay=2.0, pool=pool)
    named = set(update.ids.tolist())
    assert set(items.tolist()) <= named <= set(items.tolist()) | set(pool.tolist())
    assert len(named - set(items.tolist())) >= 3


def test_a_negative_weight_scales_what_a_streaming_device_pushes_on_its_negatives():
    """One implicit event, the same seed (so the same negatives): the event's row moves as
    it would unweighted, every negative row by ``negative_weight`` of its unweighted move,
    in the update the device uploads; in replayed (batch) steps too."""
    updates = {}
    for weight in (1.0, 0.25):
        cfg = TrainConfig(loss="bce", optimizer="online", local_epochs=1, lr=0.2, reg=0.0,
                          reg_bias=0.0, negatives=6, negative_weight=weight)
        dev = StreamDevice(np.array([3]), np.ones(1, np.float32), np.array([1]), seed=4,
                           state=UserState(np.full(4, 0.2, np.float32), 0.0))
        dev.arrive(1, Q, B, 0.0, cfg)
        updates[weight] = dev.train(Q, B, 0.0, cfg, "recursive", buffer=4)[0]
    one, quarter = updates[1.0], updates[0.25]
    np.testing.assert_array_equal(one.ids, quarter.ids)
    assert len(one.ids) > 2  # the event's row and its negatives
    event = one.ids == 3
    np.testing.assert_allclose(quarter.rows[event], one.rows[event], rtol=1e-6)
    np.testing.assert_allclose(quarter.rows[~event], 0.25 * one.rows[~event], rtol=1e-5,
                               atol=1e-8)
    np.testing.assert_allclose(quarter.bias[~event], 0.25 * one.bias[~event], rtol=1e-5,
                               atol=1e-8)


def _table(n_items: int = 12):
    """Each item's neighbour is the next one (similarity 0.5), the last one's the first."""
    from fedrec.common.neighbours import NeighbourTable

    ids = np.full((n_items, 2), -1, np.int16)
    ids[:, 0] = (np.arange(n_items) + 1) % n_items
    sims = np.where(ids >= 0, 0.5, 0.0).astype(np.float16)
    return NeighbourTable(ids, sims)


def test_the_neighbours_part_adds_the_users_residuals_on_neighbours_and_learns_as_before():
    """With the part, each prediction adds the term over the residuals the device kept
    (each against μ + b_u + b_i before its step); the factors and biases take the steps
    they take without it, so the update is the same."""
    from fedrec.common.neighbours import LAMBDA, WEIGHT, quantised

    items, values = np.array([4, 3, 7, 4]), np.array([5.0, 1.0, 4.0, 2.0], np.float32)
    p0 = np.array([0.1, -0.2, 0.3, 0.05], np.float32)
    kw = {"state": UserState(p0.copy(), 0.0), "seed": 3}
    plain = StreamDevice(items, values, np.arange(4), **kw)
    with_part = StreamDevice(items, values, np.arange(4), **kw)
    s_plain = plain.arrive(4, Q, B, 3.0, EXPLICIT, rating_range=(1.0, 5.0))
    s_part = with_part.arrive(4, Q, B, 3.0, EXPLICIT, rating_range=(1.0, 5.0),
                              neighbours=_table())
    p, bu = p0.astype(np.float64), 0.0
    q, b = Q.astype(np.float64), B.astype(np.float64)
    residual, want_sq = {}, 0.0
    for i, r in zip(items, values, strict=True):
        base = 3.0 + bu + b[i]
        pred = base + q[i] @ p
        j = (i + 1) % 12  # the one neighbour
        term = WEIGHT * 0.5 * residual[j] / (0.5 + LAMBDA) if j in residual else 0.0
        want_sq += (min(max(pred + term, 1.0), 5.0) - r) ** 2
        residual[i] = float(quantised(min(max(r - base, -4.0), 4.0)))
        e = pred - r
        p, q[i] = p - 0.05 * e * q[i], q[i] - 0.05 * e * p
        bu, b[i] = bu - 0.05 * e, b[i] - 0.05 * e
    assert s_part["pq-sq-err"] == pytest.approx(want_sq, rel=1e-6)
    assert s_part["pq-sq-err"] != pytest.approx(s_plain["pq-sq-err"], rel=1e-6)
    u_plain, _ = plain.train(Q, B, 3.0, EXPLICIT, "recursive", 10)
    u_part, _ = with_part.train(Q, B, 3.0, EXPLICIT, "recursive", 10)
    np.testing.assert_array_equal(u_plain.rows, u_part.rows)
    # Sent: each item's first rating (item 4 rated twice: once), in time order.
    sent = with_part.contribution()
    assert sent["items"].tolist() == [4, 3, 7]
    assert sent["items"].dtype == np.int64 and sent["residuals"].dtype == np.float32
    assert sent["residuals"][0] == pytest.approx(5.0 - 3.0 - B[4], abs=2.0 ** -13)
    assert (sent["residuals"] * 4096 == np.round(sent["residuals"] * 4096)).all()


def test_a_device_sends_each_item_once_and_keeps_its_residuals_across_rounds():
    items = np.array([1, 2, 1, 5])
    values = np.array([4.0, 3.0, 2.0, 5.0], np.float32)
    dev = StreamDevice(items, values, np.arange(4), seed=1)
    dev.arrive(2, Q, B, 3.0, EXPLICIT, rating_range=(1.0, 5.0), neighbours=_table())
    assert dev.contribution()["items"].tolist() == [1, 2]
    kept = dev.residuals.copy()
    # The next round, as the ClientApp restores it: cursor, user and residuals.
    again = StreamDevice(items, values, np.arange(4), state=dev.user, cursor=dev.cursor,
                         seed=1, residuals=kept)
    again.arrive(4, Q, B, 3.0, EXPLICIT, rating_range=(1.0, 5.0), neighbours=_table())
    assert again.contribution()["items"].tolist() == [5]  # item 1 was sent before
    assert len(again.residuals) == 4 and np.isfinite(again.residuals).all()
    with pytest.raises(ValueError, match="residuals"):
        StreamDevice(items, values, np.arange(4), cursor=Cursor(2, 2), residuals=kept[:1])


def test_residuals_stay_within_the_scales_width():
    """A baseline far off the scale (a damaged table's bias) would give a residual the
    server refuses; the device keeps it within ±width, so its reply stays valid."""
    bias = B.copy()
    bias[2] = -50.0
    dev = StreamDevice(np.array([2]), np.array([5.0], np.float32), np.array([1]))
    dev.arrive(1, Q, bias, 3.0, EXPLICIT, rating_range=(1.0, 5.0), neighbours=_table())
    assert dev.contribution()["residuals"].tolist() == [4.0]
