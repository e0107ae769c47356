"""Early stopping: the rule, the best table put back, and the validation slice devices hold
out of training."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.common.params import ItemParams
from fedrec.common.partition import UserRows
from fedrec.common.settings import RunSettings
from fedrec.server.item_model import ItemModel
from fedrec.server.stopping import EarlyStop


def _model(n: int = 6, k: int = 3) -> ItemModel:
    rng = np.random.default_rng(0)
    return ItemModel(ItemParams.init(n, k, rng, 0.1), "sgd", 1.0)


def test_the_rule_stops_after_patience_evaluations_without_a_better_figure():
    model = _model()
    stop = EarlyStop.for_run(2, explicit=False)
    assert stop.metric == "ndcg@10"
    assert not stop.observe(1, {"ndcg@10": 0.10}, model)
    assert not stop.observe(2, {"ndcg@10": 0.20}, model)
    assert not stop.observe(3, {"ndcg@10": 0.19}, model)  # worse: waits once
    assert not stop.observe(4, {"ndcg@10": 0.25}, model)  # better: waiting starts over
    assert not stop.observe(5, None, model)  # no figure (no validation event): no gain
    assert stop.observe(6, {"ndcg@10": 0.25 * (1 + 1e-6)}, model)  # a negligible gain
    assert (stop.best, stop.best_round) == (0.25, 4)
    assert stop.summary()["validation"] == [[1, 0.10], [2, 0.20], [3, 0.19], [4, 0.25],
                                            [6, 0.25 * (1 + 1e-6)]]


def test_for_ratings_lower_error_is_better():
    model = _model()
    stop = EarlyStop.for_run(1, explicit=True)
    assert not stop.observe(1, {"rmse": 1.0}, model)
    assert not stop.observe(2, {"rmse": 0.9}, model)
    assert stop.observe(3, {"rmse": 0.95}, model)
    assert stop.best_round == 2
    with pytest.raises(ValueError, match="stop-patience must be >= 1"):
        EarlyStop.for_run(0, explicit=True)


def test_restore_puts_the_best_table_back_and_versions_the_rows_it_changes():
    model = _model()
    stop = EarlyStop.for_run(1, explicit=False)
    stop.observe(1, {"ndcg@10": 0.3}, model)
    best_f, best_b = model.params.factors.copy(), model.params.bias.copy()
    model.params.factors[[1, 4]] += 1.0  # two rows move after the best round
    model.params.bias[2] += 1.0
    model.version[[1, 2, 4]] = 2
    model.grow(np.ones((2, 3)), np.ones(2), 2)  # and two items are listed
    assert stop.observe(2, {"ndcg@10": 0.1}, model)
    changed = stop.restore(model, 3)
    assert changed == 3
    np.testing.assert_array_equal(model.params.factors[:6], best_f)
    np.testing.assert_array_equal(model.params.bias[:6], best_b)
    np.testing.assert_array_equal(model.params.factors[6:], np.ones((2, 3)))  # kept
    np.testing.assert_array_equal(model.version, [0, 3, 3, 0, 3, 0, 2, 2])
    assert EarlyStop.for_run(1, explicit=False).restore(model, 4) == 0  # nothing kept


def test_a_device_holds_its_latest_training_events_out():
    rows = UserRows(np.array([5, 3, 9, 1]), np.array([1, 1, 1, 1], np.float32),
                    np.array([7]), np.array([1], np.float32))
    held = rows.holding_out(1)
    np.testing.assert_array_equal(held.train_items, [5, 3, 9])
    np.testing.assert_array_equal(held.valid_items, [1])
    np.testing.assert_array_equal(held.test_items, [7])  # the test rows are untouched
    assert rows.holding_out(0) is rows
    assert rows.holding_out(3) is rows  # it would keep one event: holds nothing out
    with pytest.raises(ValueError, match="validation events must be >= 0"):
        rows.holding_out(-1)


def test_stop_patience_is_refused_where_it_cannot_work():
    assert RunSettings(stop_patience=2).train_config().validation_events == 1
    assert RunSettings().train_config().validation_events == 0
    with pytest.raises(ValueError, match="stop-patience needs"):
        RunSettings(stop_patience=2, num_rounds=0)
    with pytest.raises(ValueError, match="stop-patience is not supported with privacy=secagg"):
        RunSettings(stop_patience=2, privacy="secagg")
    with pytest.raises(ValueError, match="stop_patience must be >= 0"):
        RunSettings(stop_patience=-1)


def _observed() -> tuple[EarlyStop, ItemModel]:
    model = _model()
    stop = EarlyStop.for_run(3, explicit=False)
    stop.observe(1, {"ndcg@10": 0.1}, model)
    model.params.factors += 1.0
    stop.observe(2, {"ndcg@10": 0.2}, model)
    stop.observe(3, {"ndcg@10": 0.15}, model)
    return stop, model


def test_the_rules_state_goes_through_a_checkpoint_whole(tmp_path):
    from fedrec.server.checkpoint import Checkpoint

    stop, model = _observed()
    arrays, meta = stop.state()
    ckpt = Checkpoint(tmp_path / "server.db", key=b"k" * 32)
    ckpt.save(model, 3, [{"round": 3}], {"early-stop": meta}, {"early-stop": arrays})
    _, last, _, run = ckpt.load()
    again = EarlyStop.for_run(3, explicit=False)
    again.load(run["arrays"]["early-stop"], run["early-stop"], last, model.n_items,
               model.params.n_factors)
    assert (again.best, again.best_round, again.waited, again.trace) == (
        stop.best, stop.best_round, stop.waited, stop.trace)
    model.params.factors += 5.0
    assert again.restore(model, 4) == model.n_items
    np.testing.assert_array_equal(model.params.factors, _observed()[1].params.factors)
    # Before any figure: no table, and that is a state too.
    fresh = EarlyStop.for_run(2, explicit=True)
    arrays, meta = fresh.state()
    assert arrays == {} and meta["best"] is None
    fresh.load(arrays, meta, 0, 6, 3)
    assert fresh.best_round == 0 and not fresh.stopped


def _hostile_states():
    stop, _ = _observed()
    arrays, meta = stop.state()
    f, b = arrays["factors"], arrays["bias"]
    nan = f.copy()
    nan[0, 0] = np.nan
    yield "metric", arrays, {**meta, "metric": "rmse"}
    yield "best", arrays, {**meta, "best": float("inf")}
    yield "best", arrays, {**meta, "best": "0.2"}
    yield "best", arrays, {**meta, "best": 0.9}  # not a figure the trace holds
    yield "best-round", arrays, {**meta, "best-round": 7}  # after the last round
    yield "best-round", arrays, {**meta, "best-round": 1.5}
    yield "waited", arrays, {**meta, "waited": -1}
    yield "waited", arrays, {**meta, "waited": True}
    yield "trace", arrays, {**meta, "trace": [[2, 0.2], [1, 0.1]]}
    yield "trace", arrays, {**meta, "trace": [[1, float("nan")]]}
    yield "trace", arrays, {**meta, "trace": "[[1, 0.1]]"}
    yield "factors", {}, meta  # a best figure without its table
    yield "factors", {"factors": f.astype(np.float64), "bias": b}, meta
    yield "factors", {"factors": f[:, :2], "bias": b}, meta
    yield "factors", {"factors": np.vstack([f, f]), "bias": np.r_[b, b]}, meta  # too many
    yield "bias", {"factors": f, "bias": b[:-1]}, meta
    yield "factors", {"factors": nan, "bias": b}, meta
    yield "arrays", {**arrays, "extra": b}, meta
    yield "state", arrays, [meta]


@pytest.mark.parametrize(("field", "arrays", "meta"), list(_hostile_states()))
def test_a_damaged_rule_state_is_refused_by_name_and_nothing_is_taken(field, arrays, meta):
    stop = EarlyStop.for_run(2, explicit=False)
    with pytest.raises(ValueError, match=f"early-stop.{field} "):
        stop.load(arrays, meta, 3, 6, 3)
    assert stop.best_round == 0 and not stop.trace and stop.restore(_model(), 1) == 0
