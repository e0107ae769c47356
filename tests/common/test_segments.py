"""Imbalance segments: how they are drawn up, carried to devices, checked and pooled, and
that a federated evaluation (devices' replies pooled by the server) measures exactly what
the centralized metric measures on the same scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedrec.client.device import Device, UserState
from fedrec.common.metrics import ranking_metrics
from fedrec.common.replies import Bounds, evaluate_schema
from fedrec.common.round_config import RoundConfig
from fedrec.common.schema import InvalidReplyError
from fedrec.common.segments import HEAVY, LIGHT, MIDDLE, Segments, pool_segments
from tests.conftest import make_interactions


def test_thresholds_split_users_in_thirds_and_the_head_is_the_popular_fifth():
    users = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9])
    items = np.array([5, 0, 9, 9, 1, 0, 0, 3, 2, 7])  # ties (9, 9) go to the lower id
    s = Segments.from_training(users, items)
    assert (s.light_max, s.heavy_min) == (3, 7)
    np.testing.assert_array_equal(s.segment(users), [LIGHT] * 3 + [MIDDLE] * 3 + [HEAVY] * 3)
    np.testing.assert_array_equal(s.head, [2, 3])  # 20 % of 10 items: the two most popular
    assert s.tail_mask(12).sum() == 10  # items listed later are tail items
    # Users with no training event are left out of the thresholds.
    assert Segments.from_training(np.r_[users, np.zeros(20, int)], items) == s


def test_ties_at_a_threshold_share_its_segment_and_thresholds_never_meet():
    s = Segments.from_training(np.full(30, 4), np.ones(5))
    assert s.light_max == 4 and s.heavy_min == 5  # every user light, none heavy
    with pytest.raises(ValueError, match="no user has a training event"):
        Segments.from_training(np.zeros(3), np.ones(5))


def test_segments_ride_in_the_round_config_and_damaged_keys_are_refused_by_name():
    s = Segments(2, 9, np.array([0, 4, 7]))
    rc = RoundConfig.parse({"privacy": "plain", **s.to_config()})
    assert rc.segments == s
    assert RoundConfig.parse(rc.to_dict()) == rc
    assert RoundConfig.parse({"privacy": "plain"}).segments is None
    cases = {
        "'segment-head' missing": {"segment-light-max": 2, "segment-heavy-min": 9},
        "'segment-light-max' must be int": {**s.to_config(), "segment-light-max": 2.5},
        "'segment-heavy-min' must be int": {**s.to_config(), "segment-heavy-min": True},
        "list of item ids": {**s.to_config(), "segment-head": "0,4"},
        "sorted": {**s.to_config(), "segment-head": [4, 0]},
        "below heavy-min": {**s.to_config(), "segment-light-max": 9},
    }
    for message, config in cases.items():
        with pytest.raises(ValueError, match=message):
            RoundConfig.parse(config)


def _brute_force(scores, train_sets, test_sets, s, k):
    """Segment figures computed the slow, obvious way."""
    tail = s.tail_mask(scores.shape[1])
    per = {LIGHT: [], HEAVY: []}
    recs = tail_recs = tail_hits = tail_test = 0
    for u, test in enumerate(test_sets):
        if not test:
            continue
        order = [i for i in np.argsort(-scores[u], kind="stable") if i not in train_sets[u]]
        top = order[:k]
        hits = [i in test for i in top]
        dcg = sum(1 / math.log2(r + 2) for r, h in enumerate(hits) if h)
        idcg = sum(1 / math.log2(r + 2) for r in range(min(len(test), k)))
        seg = int(s.segment(len(train_sets[u])))
        if seg in per:
            per[seg].append((any(hits), dcg / idcg))
        recs += len(top)
        tail_recs += sum(tail[i] for i in top)
        tail_hits += sum(tail[i] and h for i, h in zip(top, hits, strict=True))
        tail_test += sum(tail[i] for i in test)
    out = {f"tail-share@{k}": tail_recs / recs, f"tail-recall@{k}": tail_hits / tail_test}
    for seg, name in ((LIGHT, "light"), (HEAVY, "heavy")):
        out[f"{name}-users"] = float(len(per[seg]))
        out[f"{name}-hr@{k}"] = float(np.mean([h for h, _ in per[seg]]))
        out[f"{name}-ndcg@{k}"] = float(np.mean([g for _, g in per[seg]]))
    return out


@pytest.fixture
def case():
    rng = np.random.default_rng(3)
    n_users, n_items, k = 40, 60, 10
    counts = rng.integers(1, 25, n_users)
    train_sets = [set(rng.choice(n_items, c, replace=False).tolist()) for c in counts]
    test_sets = [set(rng.choice(sorted(set(range(n_items)) - tr), rng.integers(0, 4),
                                replace=False).tolist()) for tr in train_sets]
    tr_u = [u for u, t in enumerate(train_sets) for _ in t]
    tr_i = [i for t in train_sets for i in sorted(t)]
    te_u = [u for u, t in enumerate(test_sets) for _ in t]
    te_i = [i for t in test_sets for i in sorted(t)]
    train = make_interactions(tr_u, tr_i, n_users=n_users, n_items=n_items)
    test = make_interactions(te_u, te_i, n_users=n_users, n_items=n_items)
    table = rng.normal(size=(n_items, 4))
    bias = rng.normal(size=n_items)
    users = rng.normal(size=(n_users, 4))
    return train, test, train_sets, test_sets, table, bias, users, k


def test_the_centralized_metric_matches_a_brute_force_count(case):
    train, test, train_sets, test_sets, table, bias, users, k = case
    s = Segments.of(train)
    scores = users @ table.T + bias
    got = ranking_metrics(lambda u: scores[u], train, test, k=k, segments=s)
    want = _brute_force(scores, train_sets, test_sets, s, k)
    for key, value in want.items():
        assert got[key] == pytest.approx(value), key
    plain = ranking_metrics(lambda u: scores[u], train, test, k=k)
    assert {key: got[key] for key in plain} == plain  # the overall figures are unchanged


def test_devices_pooled_by_the_server_measure_what_the_centralized_metric_does(case):
    train, test, train_sets, test_sets, table, bias, users, k = case
    s = Segments.of(train)
    rows = []
    schema = evaluate_schema(explicit=False, segments=True)
    for u in range(len(users)):
        device = Device(np.array(sorted(train_sets[u])), np.ones(len(train_sets[u])),
                        state=UserState(users[u].astype(np.float32), 0.0))
        reply = device.evaluate_ranking(table, bias, np.array(sorted(test_sets[u]), int),
                                        segments=s)
        rows.append(schema.validate(reply, Bounds()))  # every honest reply passes
    pooled = pool_segments(rows, k)
    central = ranking_metrics(lambda u: users[u].astype(np.float32) @ table.T + bias,
                              train, test, k=k, segments=s)
    for key, value in pooled.items():
        assert central[key] == pytest.approx(value, rel=1e-6), key
    assert set(pooled) == {key for key in central if key.startswith(("light", "heavy",
                                                                      "tail"))}


@pytest.mark.parametrize(("change", "reason"), [
    ({"segment": 3.0}, "metric-range:segment"),
    ({"segment": 0.5}, "metric-whole:segment"),
    ({"recs": 11.0}, "metric-range:recs"),
    ({"tail-recs": 6.0}, "metric-range:tail-recs"),
    ({"tail-hits": 2.0}, "metric-check:tail-hits"),  # more than the reply's hits
    ({"tail-test": -1.0}, "metric-range:tail-test"),
    ({"segment": None}, "metric-missing:segment"),
])
def test_a_device_lying_about_its_segment_or_tail_counts_is_refused_by_name(change, reason):
    honest = {"num-users": 1.0, "hr@10": 1.0, "ndcg@10": 0.5, "recall@10": 0.5,
              "precision@10": 0.1, "segment": 0.0, "recs": 5.0, "tail-recs": 2.0,
              "tail-test": 3.0, "tail-hits": 1.0}
    schema = evaluate_schema(explicit=False, segments=True)
    schema.validate(honest, Bounds())
    reply = {**honest, **change}
    reply = {key: v for key, v in reply.items() if v is not None}
    with pytest.raises(InvalidReplyError) as info:
        schema.validate(reply, Bounds())
    assert info.value.reason == reason
    # Without segments in the round, a reply that carries them is refused too.
    with pytest.raises(InvalidReplyError, match="segment"):
        evaluate_schema(explicit=False).validate(honest, Bounds())
