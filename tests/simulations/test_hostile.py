"""The adversarial suite end to end: every hostile reply of ``fedrec bench hostile``,
against the real ServerApp and ClientApp on the in-process engine."""

from __future__ import annotations

import pytest

from fedrec.server import replies
from fedrec.simulations.benches.hostile import bench_hostile


@pytest.fixture(scope="module")
def record():
    return bench_hostile(rounds=3)


def test_every_hostile_reply_is_refused_by_name_and_changes_nothing(record):
    s = record["summary"]
    assert s["distinct_cases"] >= 100
    assert s["server_crashes"] == 0
    wrong = [r for r in record["results"] if not r["named"]]
    assert not wrong, wrong[:5]
    assert s["refused_with_the_named_reason"] == s["model_identical"] == s["tried"]
    for run in record["runs"].values():
        assert run["model_identical"] and not run["unused_cases"]
    kinds = {r["kind"] for r in record["results"]}
    assert kinds == {"train", "evaluate", "query"}
    names = {r["case"] for r in record["results"]}
    for needle in ("list", "str", "None", "NaN", "inf", "huge", "negative", "missing",
                   "a second reply under one node id", "replayed", "last round's message",
                   "not sampled", "npy header"):
        assert any(needle in n for n in names), needle


def test_the_suite_fails_when_a_hole_reopens(monkeypatch):
    """With duplicates let through, the same update is folded twice: the model differs."""
    strict = replies.Outbox._refusal

    def lax(self, reply, sent):
        reason = strict(self, reply, sent)
        return None if reason == "duplicate" else reason

    monkeypatch.setattr(replies.Outbox, "_refusal", lax)
    s = bench_hostile(rounds=2)["summary"]
    assert s["model_identical"] == 0 and s["refused_with_the_named_reason"] < s["tried"]
