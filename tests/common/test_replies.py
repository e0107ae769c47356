"""Reply schemas: honest devices' numbers pass, anything else is refused by name."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrec.client.device import Device
from fedrec.common.replies import (
    EVALUATE_RANKING,
    EVALUATE_RANKING_SEGMENTS,
    EVALUATE_RATINGS,
    QUERY,
    STREAM_TRAIN,
    TRAIN,
    Bounds,
)
from fedrec.common.schema import InvalidReplyError, TrainConfig

BOUNDS = Bounds((1.0, 5.0))
SCHEMAS = (TRAIN, STREAM_TRAIN, EVALUATE_RATINGS, EVALUATE_RANKING,
           EVALUATE_RANKING_SEGMENTS, QUERY)


@pytest.fixture(scope="module")
def honest():
    """What a real device reports: training, rating errors and ranking metrics."""
    rng = np.random.default_rng(0)
    factors = rng.normal(0, 0.1, (30, 4)).astype(np.float32)
    bias = np.zeros(30, np.float32)
    items = np.arange(0, 30, 3)
    ratings = rng.integers(1, 6, len(items)).astype(np.float32)
    explicit = Device(items, ratings, seed=1)
    _, train = explicit.train(factors, bias, 3.5, TrainConfig(loss="mse"))
    errors = explicit.evaluate_ratings(factors, bias, 3.5, items[:4], ratings[:4], (1, 5))
    implicit = Device(items, seed=2)
    implicit.train(factors, bias, 0.0, TrainConfig(loss="bce"))
    ranking = implicit.evaluate_ranking(factors, bias, np.array([1, 2, 4, 5]))
    nobody = implicit.evaluate_ranking(factors, bias, np.array([], np.int64))
    return train, errors, ranking, nobody


def test_what_an_honest_device_reports_passes(honest):
    train, errors, ranking, nobody = honest
    assert TRAIN.validate(train, BOUNDS) == train
    assert EVALUATE_RATINGS.validate(errors, BOUNDS) == errors
    assert EVALUATE_RANKING.validate(ranking, BOUNDS) == ranking
    assert EVALUATE_RANKING.validate(nobody, BOUNDS) == {"num-users": 0.0}
    assert QUERY.validate({"rated": 1, "rating-mean": 3.25}, BOUNDS) == {
        "rated": 1.0, "rating-mean": 3.25}
    assert QUERY.validate({"rated": 0}, BOUNDS) == {"rated": 0.0}


@pytest.mark.parametrize(("values", "reason"), [
    ({"num-examples": [2.0], "train-loss": 1.0}, "metric-type:num-examples"),
    ({"num-examples": 2.0, "train-loss": float("nan")}, "metric-nonfinite:train-loss"),
    ({"num-examples": -1, "train-loss": 1.0}, "metric-range:num-examples"),
    ({"num-examples": 2.5, "train-loss": 1.0}, "metric-whole:num-examples"),
    ({"num-examples": 10**400, "train-loss": 1.0}, "metric-range:num-examples"),
    ({"train-loss": 1.0}, "metric-missing:num-examples"),
    ({"num-examples": 2, "train-loss": 1.0, "x": 1}, "metric-unknown:x"),
    ({"num-examples": True, "train-loss": 1.0}, "metric-type:num-examples"),
])
def test_each_bad_training_field_is_refused_by_name(values, reason):
    with pytest.raises(InvalidReplyError) as info:
        TRAIN.validate(values, BOUNDS)
    assert info.value.reason == reason


def test_error_sums_are_bounded_by_their_count_and_the_scale():
    ok = {"num-examples": 2.0, "sq-err": 32.0, "abs-err": 8.0}  # both errors at the width
    assert EVALUATE_RATINGS.validate(ok, BOUNDS) == ok
    for values, reason in [({**ok, "sq-err": 32.1}, "metric-range:sq-err"),
                           ({**ok, "abs-err": 8.1}, "metric-range:abs-err"),
                           ({**ok, "sq-err": 0.5}, "metric-check:abs-sq")]:
        with pytest.raises(InvalidReplyError, match=reason):
            EVALUATE_RATINGS.validate(values, BOUNDS)


def test_the_mean_query_accepts_only_a_mean_inside_the_scale():
    for values, reason in [({"rated": 1, "rating-mean": 5.5}, "metric-range:rating-mean"),
                           ({"rated": 1}, "metric-missing:rating-mean"),
                           ({"rated": 0, "rating-mean": 3.0}, "metric-unexpected:rating-mean"),
                           ({"rated": 3}, "metric-range:rated")]:
        with pytest.raises(InvalidReplyError, match=reason):
            QUERY.validate(values, BOUNDS)


def test_a_stream_round_claims_at_most_the_round_s_events():
    values = dict.fromkeys(STREAM_TRAIN.keys, 0.0)
    values.update({"num-examples": 3.0, "rating-count": 3.0, "rating-sum": 12.0,
                   "pq-n": 3.0, "pq-sq-err": 1.0, "pq-abs-err": 1.0})
    assert STREAM_TRAIN.validate(values, Bounds((1.0, 5.0), round_events=3))
    with pytest.raises(InvalidReplyError, match="metric-range:rating-count"):
        STREAM_TRAIN.validate(values, Bounds((1.0, 5.0), round_events=2))
    with pytest.raises(InvalidReplyError, match="metric-range:rating-sum"):
        STREAM_TRAIN.validate({**values, "rating-sum": 16.0}, Bounds((1.0, 5.0)))


@pytest.mark.parametrize(("change", "reason"), [
    ({"pq-light-n": 4.0}, "metric-range:pq-light-n"),  # more than the events scored
    ({"pq-tail-n": 1.5}, "metric-whole:pq-tail-n"),
    ({"pq-heavy-hits": 3.0}, "metric-range:pq-heavy-hits"),  # more hits than events
    ({"pq-tail-ndcg": float("nan")}, "metric-nonfinite:pq-tail-ndcg"),
    ({"pq-light-sq-err": 2 * 16.0 + 1.0}, "metric-range:pq-light-sq-err"),
    ({"pq-heavy-n": [1.0]}, "metric-type:pq-heavy-n"),
    ({"pq-tail-hits": None}, "metric-type:pq-tail-hits"),
    ({"pq-light-ndcg": "DELETE"}, "metric-missing:pq-light-ndcg"),
    ({"pq-recs": 31.0}, "metric-range:pq-recs"),  # more than 10 places per event scored
    ({"pq-tail-recs": 21.0}, "metric-range:pq-tail-recs"),  # more than the places counted
    ({"pq-recs": 2.5}, "metric-whole:pq-recs"),
    ({"pq-tail-recs": float("inf")}, "metric-nonfinite:pq-tail-recs"),
    ({"pq-tail-recs": "DELETE"}, "metric-missing:pq-tail-recs"),
])
def test_a_stream_round_s_segment_sums_are_bounded_by_what_it_scored(change, reason):
    """The light/heavy/tail sums of a replay device (common.segments) are each bounded by
    the round's scored events (and the top-10 places it counts by ten a scored event, the
    tail's by those), refused by name otherwise."""
    values = dict.fromkeys(STREAM_TRAIN.keys, 0.0)
    values.update({"num-examples": 3.0, "rating-count": 3.0, "rating-sum": 12.0,
                   "pq-n": 3.0, "pq-hits": 1.0, "pq-ndcg": 0.5, "pq-light-n": 2.0,
                   "pq-light-hits": 1.0, "pq-light-ndcg": 0.5, "pq-light-sq-err": 2.0,
                   "pq-tail-n": 1.0, "pq-heavy-n": 2.0, "pq-heavy-hits": 2.0,
                   "pq-recs": 20.0, "pq-tail-recs": 4.0})
    assert STREAM_TRAIN.validate(values, BOUNDS)
    bad = {**values, **change}
    bad = {k: v for k, v in bad.items() if v != "DELETE"}
    with pytest.raises(InvalidReplyError) as info:
        STREAM_TRAIN.validate(bad, BOUNDS)
    assert info.value.reason == reason


anything = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                     st.text(max_size=5), st.binary(max_size=5),
                     st.lists(st.floats(), max_size=3),
                     st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=300, deadline=None)
@given(schema=st.sampled_from(SCHEMAS),
       values=st.dictionaries(st.one_of(st.sampled_from([k for s in SCHEMAS for k in s.keys]),
                                        st.text(max_size=8)), anything, max_size=12))
def test_any_record_is_either_in_bounds_or_refused_by_name(schema, values):
    try:
        out = schema.validate(values, BOUNDS)
    except InvalidReplyError as exc:
        assert exc.reason.split(":")[0] in {
            "metric-type", "metric-nonfinite", "metric-range", "metric-whole",
            "metric-missing", "metric-unknown", "metric-unexpected", "metric-check"}
        return
    assert set(out) <= set(schema.keys)
    for metric in schema.metrics:
        if metric.name in out:
            low, high = metric.limits(BOUNDS, out)
            assert math.isfinite(out[metric.name]) and low <= out[metric.name] <= high


def test_bounds_refuse_a_scale_that_is_not_one():
    with pytest.raises(ValueError, match="low <= high"):
        Bounds((5.0, 1.0))
    with pytest.raises(ValueError, match="low <= high"):
        Bounds((float("nan"), 1.0))
