"""What a device's reply may carry, field by field: every number is checked before the
server uses it.

A reply is untrusted input: a device may send any record, any key, any value. Each kind of
reply has a :class:`MetricSchema` listing every key its ``metrics`` record may hold, with
the range each value must lie in (ranges may depend on the run's :class:`Bounds` and on
the keys checked before: an error sum is bounded by its count times the squared width of
the rating scale). :meth:`MetricSchema.validate` returns the values as floats, or raises
:class:`~fedrec.common.schema.InvalidReplyError` whose ``reason`` names the check and the
field (``metric-type:train-loss``, ``metric-range:hr@10``, ``metric-missing:sq-err``).

* :data:`TRAIN`: a round of local training (``num-examples``, ``train-loss``);
* :data:`STREAM_TRAIN`: a round of a timeline replay (also its prequential score sums, the
  ratings it learned, its stored events and its compute time);
* :data:`EVALUATE_RATINGS` and :data:`EVALUATE_RANKING`: held-out scores;
* :data:`QUERY`: the statistics the server's global mean μ comes from: whether the device
  has ratings and its mean rating (every device weighs the same, whatever it claims).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from fedrec.common.metrics import GROUPS, PREQUENTIAL_KEYS
from fedrec.common.schema import InvalidReplyError

MAX_EVENTS = 1_000_000  # the most events a device may claim for itself (a shopper's lifetime)
MAX_LOSS = 1e6  # a training loss above this is a device lying or diverged, never averaged in
MAX_SECONDS = 86_400.0  # a device's compute time for one round


@dataclass(frozen=True)
class Bounds:
    """What bounds an honest device's numbers in this run."""

    rating_range: tuple[float, float] = (-math.inf, math.inf)
    max_events: int = MAX_EVENTS  # the events a device may hold (and train on)
    round_events: int = MAX_EVENTS  # the events that may reach a device in one round

    def __post_init__(self) -> None:
        low, high = self.rating_range
        if not low <= high or math.isnan(low) or math.isnan(high):
            raise ValueError(f"rating_range must be (low, high) with low <= high. "
                             f"Found {self.rating_range}.")
        if self.max_events < 1 or self.round_events < 1:
            raise ValueError("max_events and round_events must be >= 1")

    @property
    def width(self) -> float:
        low, high = self.rating_range
        return high - low


Limit = float | Callable[[Bounds, Mapping[str, float]], float]


@dataclass(frozen=True)
class Metric:
    """One key of a metrics record: its range (``low``/``high``, numbers or functions of the
    run's bounds and the values checked before), whether it is a whole number, and when it
    is present (``when``: a function of the values before; absent otherwise)."""

    name: str
    high: Limit = math.inf
    low: Limit = 0.0
    whole: bool = False
    when: Callable[[Mapping[str, float]], bool] | None = None

    def limits(self, bounds: Bounds, values: Mapping[str, float]) -> tuple[float, float]:
        low = self.low(bounds, values) if callable(self.low) else self.low
        high = self.high(bounds, values) if callable(self.high) else self.high
        return float(low), float(high)


@dataclass(frozen=True)
class Check:
    """A relation between values that every honest reply satisfies."""

    name: str
    holds: Callable[[Mapping[str, float]], bool]
    detail: str


@dataclass(frozen=True)
class MetricSchema:
    """Every key a reply's metrics may hold, in the order they are checked."""

    kind: str
    metrics: tuple[Metric, ...]
    checks: tuple[Check, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics)

    def validate(self, record: Mapping | None, bounds: Bounds) -> dict[str, float]:
        """The record's values as floats, each checked; raises
        :class:`InvalidReplyError` naming the first field that fails."""
        if record is None:
            raise InvalidReplyError("metrics-missing", f"a {self.kind} reply needs metrics")
        known = set(self.keys)
        for key in record:
            if key not in known:
                raise InvalidReplyError(f"metric-unknown:{_name(key)}",
                                        f"{self.kind} replies carry only "
                                        f"{', '.join(self.keys)}")
        values: dict[str, float] = {}
        for metric in self.metrics:
            present = metric.name in record
            expected = metric.when is None or metric.when(values)
            if not expected:
                if present:
                    raise InvalidReplyError(f"metric-unexpected:{metric.name}",
                                            "not sent in this case by an honest device")
                continue
            if not present:
                raise InvalidReplyError(f"metric-missing:{metric.name}", "required")
            values[metric.name] = _checked(metric, record[metric.name], bounds, values)
        for check in self.checks:
            if not check.holds(values):
                raise InvalidReplyError(f"metric-check:{check.name}", check.detail)
        return values


def _name(key: object) -> str:
    text = str(key) if isinstance(key, str) else repr(key)
    return text[:40]


def _checked(metric: Metric, value: object, bounds: Bounds,
             values: Mapping[str, float]) -> float:
    name = metric.name
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InvalidReplyError(f"metric-type:{name}",
                                f"must be a number, found {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # a Python int beyond any float
        raise InvalidReplyError(f"metric-range:{name}", "beyond any float") from None
    if not math.isfinite(number):
        raise InvalidReplyError(f"metric-nonfinite:{name}", f"found {number}")
    low, high = metric.limits(bounds, values)
    if not low <= number <= high:
        raise InvalidReplyError(f"metric-range:{name}",
                                f"must be in [{low:.6g}, {high:.6g}], found {number:.6g}")
    if metric.whole and number != round(number):
        raise InvalidReplyError(f"metric-whole:{name}", f"must be whole, found {number}")
    return number


def _times(count_key: str, per: Callable[[Bounds], float]) -> Limit:
    """``values[count_key] × per(bounds)``, 0 when the count is 0 (an unbounded scale times
    no events bounds nothing)."""
    def limit(bounds: Bounds, values: Mapping[str, float]) -> float:
        count = values[count_key]
        return 0.0 if count == 0 else count * per(bounds)
    return limit


def _events(bounds: Bounds, values: Mapping[str, float]) -> float:
    return float(bounds.max_events)


def _round_events(bounds: Bounds, values: Mapping[str, float]) -> float:
    return float(bounds.round_events)


def _at(per: Callable[[Bounds], float]) -> Limit:
    return lambda bounds, values: per(bounds)


def _up_to(key: str) -> Limit:
    return lambda bounds, values: values[key]


def _width(bounds: Bounds) -> float:
    return bounds.width


def _width2(bounds: Bounds) -> float:
    return bounds.width * bounds.width


def _low(bounds: Bounds) -> float:
    return bounds.rating_range[0]


def _high(bounds: Bounds) -> float:
    return bounds.rating_range[1]


TRAIN = MetricSchema("train", (
    Metric("num-examples", _events, whole=True),
    Metric("train-loss", MAX_LOSS),
))

_PQ = "pq-"
STREAM_TRAIN = MetricSchema("stream train", (
    *TRAIN.metrics,
    # the events that arrived this round (each a rating, in an explicit replay), their sum
    Metric("rating-count", _round_events, whole=True),
    Metric("rating-sum", _times("rating-count", _high), low=_times("rating-count", _low)),
    Metric(_PQ + "n", _up_to("rating-count"), whole=True),  # those scored
    Metric(_PQ + "sq-err", _times(_PQ + "n", _width2)),
    Metric(_PQ + "abs-err", _times(_PQ + "n", _width)),
    Metric(_PQ + "hits", _up_to(_PQ + "n"), whole=True),
    Metric(_PQ + "ndcg", _up_to(_PQ + "n")),
    Metric(_PQ + "new-n", _up_to(_PQ + "n"), whole=True),
    Metric(_PQ + "new-hits", _up_to(_PQ + "new-n"), whole=True),
    Metric(_PQ + "new-ndcg", _up_to(_PQ + "new-n")),
    Metric(_PQ + "new-sq-err", _times(_PQ + "new-n", _width2)),
    # the same sums over light and heavy users' events and tail items' (common.segments)
    *(metric for g in GROUPS for metric in (
        Metric(f"{_PQ}{g}-n", _up_to(_PQ + "n"), whole=True),
        Metric(f"{_PQ}{g}-sq-err", _times(f"{_PQ}{g}-n", _width2)),
        Metric(f"{_PQ}{g}-hits", _up_to(f"{_PQ}{g}-n"), whole=True),
        Metric(f"{_PQ}{g}-ndcg", _up_to(f"{_PQ}{g}-n")))),
    # the top-10 places of its rankings, and those on tail items (common.segments)
    Metric(_PQ + "recs", _times(_PQ + "n", lambda bounds: 10.0), whole=True),
    Metric(_PQ + "tail-recs", _up_to(_PQ + "recs"), whole=True),
    Metric("stored-events", _events, whole=True),
    Metric("device-s", MAX_SECONDS),
))
assert {m.name[len(_PQ):] for m in STREAM_TRAIN.metrics
        if m.name.startswith(_PQ)} == set(PREQUENTIAL_KEYS)

EVALUATE_RATINGS = MetricSchema("evaluate (ratings)", (
    Metric("num-examples", _events, whole=True),
    Metric("sq-err", _times("num-examples", _width2)),
    Metric("abs-err", _times("num-examples", _width)),
), checks=(
    # Cauchy–Schwarz: (Σ|e|)² ≤ n Σe², for any errors.
    Check("abs-sq", lambda v: v["abs-err"] ** 2 <= v["num-examples"] * v["sq-err"] * (1 + 1e-6)
          + 1e-9, "the absolute error sum is larger than its squared sum allows"),
))


def _ranked(values: Mapping[str, float]) -> bool:
    return values["num-users"] == 1


def _ranking_schema(k: int, segments: bool = False) -> MetricSchema:
    # With segments (fedrec.common.segments, sent in the round's config): the device's
    # segment and its tail counts, each bounded by what it ranked.
    segment_metrics = (
        Metric("segment", 2.0, whole=True, when=_ranked),
        Metric("recs", float(k), whole=True, when=_ranked),
        Metric("tail-recs", _up_to("recs"), whole=True, when=_ranked),
        Metric("tail-test", _events, whole=True, when=_ranked),
        Metric("tail-hits", _up_to("tail-test"), whole=True, when=_ranked),
    ) if segments else ()
    segment_checks = (
        Check("tail-hits", lambda v: v.get("tail-hits", 0) <= min(
            v.get("tail-recs", 0), round(v.get(f"precision@{k}", 0) * k)),
              "more tail hits than tail items recommended, or than hits"),
    ) if segments else ()
    return MetricSchema("evaluate (ranking)", (
        Metric("num-users", 1.0, whole=True),
        Metric(f"hr@{k}", 1.0, whole=True, when=_ranked),
        Metric(f"ndcg@{k}", 1.0, when=_ranked),
        Metric(f"recall@{k}", 1.0, when=_ranked),
        Metric(f"precision@{k}", 1.0, when=_ranked),
        *segment_metrics,
    ), checks=(
        Check("hits", lambda v: v.get(f"hr@{k}", 0) == (v.get(f"precision@{k}", 0) > 0)
              == (v.get(f"recall@{k}", 0) > 0) == (v.get(f"ndcg@{k}", 0) > 0),
              "hit rate, precision, recall and NDCG disagree on whether there was a hit"),
        Check("precision", lambda v: abs(v.get(f"precision@{k}", 0) * k
                                         - round(v.get(f"precision@{k}", 0) * k)) < 1e-6,
              f"precision@{k} is a number of hits over {k}"),
        *segment_checks,
    ))


EVALUATE_RANKING = _ranking_schema(10)


EVALUATE_RANKING_SEGMENTS = _ranking_schema(10, segments=True)


def evaluate_schema(explicit: bool, k: int = 10, segments: bool = False) -> MetricSchema:
    """The schema of an evaluation reply in an explicit (ratings) or implicit run;
    ``segments``: the round's config carried segments (:mod:`fedrec.common.segments`)."""
    if explicit:
        return EVALUATE_RATINGS
    if k == 10:
        return EVALUATE_RANKING_SEGMENTS if segments else EVALUATE_RANKING
    return _ranking_schema(k, segments)


def _rated(values: Mapping[str, float]) -> bool:
    return values["rated"] == 1


QUERY = MetricSchema("query", (
    Metric("rated", 1.0, whole=True),
    Metric("rating-mean", _at(_high), low=_at(_low), when=_rated),
))
