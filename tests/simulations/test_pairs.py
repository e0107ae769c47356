"""The pairs model end to end on the in-process engine: the real ServerApp and ClientApp.
A federation learns the centralized table exactly; on a generated 2,000-event shop it beats
popularity; hostile devices' counts are refused by field and change nothing, and a device
whose reply was lost is counted once."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.logger import FLOWER_LOGGER

from fedrec.client.app import query as device_query
from fedrec.common import pairs, records
from fedrec.common.data.csvlog import write_csv_log
from fedrec.common.data.synthetic import ShopConfig, generate_shop
from fedrec.common.defences import DEFAULT
from fedrec.common.partition import simulated_partitions
from fedrec.common.settings import RunSettings
from fedrec.server import pairs as server_pairs
from fedrec.server.app import app as server_app
from fedrec.simulations.benches.simulate import simulate
from fedrec.simulations.engines.inprocess import run_in_process
from fedrec.simulations.models.pairs import ItemPairs

FLOWER_LOGGER.setLevel(logging.WARNING)


def _shop(tmp_path_factory, name, **kw):
    path = tmp_path_factory.mktemp(name) / "shop.csv"
    return write_csv_log(generate_shop(ShopConfig(**kw)), path)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return _shop(tmp_path_factory, "small", n_users=40, n_items=60, n_events=2_000, seed=7)


def _settings(path, **kw) -> RunSettings:
    return RunSettings(**{"dataset": f"csv:{path}", "protocol": "implicit-80-20",
                          "num_rounds": 2, "model": "pairs", **kw})


def test_a_federation_learns_the_centralized_table_and_scores_alike(small, tmp_path):
    settings = _settings(small, results_dir=str(tmp_path))
    record = simulate(settings)
    fed, central = record["models"]["federated-pairs"], record["models"]["centralized-pairs"]
    for key in ("ndcg@10", "hr@10", "recall@10", "light-ndcg@10", "tail-share@10"):
        assert fed[key] == pytest.approx(central[key], abs=1e-12), key
    parts = simulated_partitions(settings.dataset, settings.protocol)
    model = ItemPairs(settings.pairs_cap).fit(parts.split.train)
    saved = np.load(tmp_path / "model.npz")
    np.testing.assert_array_equal(saved["counts"], model.counts)
    assert float(saved["weight"]) == model.weight == record["pairs"]["weight"]
    assert record["rejected"] == {}
    train = record["rounds"]["train"]
    assert train[0]["items-counted"] > 0 and train[0]["accepted"] == parts.n_users


def test_every_device_counts_whatever_share_of_devices_trains(small):
    """A run whose fraction-train samples 30 % of devices still counts every device: the
    table (and the figures) are the centralized model's."""
    record = simulate(_settings(small, fraction_train=0.3, num_rounds=2))
    fed, central = record["models"]["federated-pairs"], record["models"]["centralized-pairs"]
    assert fed["ndcg@10"] == pytest.approx(central["ndcg@10"], abs=1e-12)
    n = simulated_partitions(f"csv:{small}", "implicit-80-20").n_users
    assert [t["accepted"] for t in record["rounds"]["train"]] == [n, n]


def test_a_device_over_its_cap_keeps_its_latest_items_counted(small, tmp_path):
    """With a cap of 3, a device's held-out event pushes an older item out in round 2: it
    is dropped, and the table is the centralized one of every device's latest 3 items."""
    settings = _settings(small, pairs_cap=3, results_dir=str(tmp_path))
    record = simulate(settings)
    parts = simulated_partitions(settings.dataset, settings.protocol)
    model = ItemPairs(3).fit(parts.split.train)
    np.testing.assert_array_equal(np.load(tmp_path / "model.npz")["counts"], model.counts)
    fed, central = record["models"]["federated-pairs"], record["models"]["centralized-pairs"]
    assert fed["ndcg@10"] == pytest.approx(central["ndcg@10"], abs=1e-12)
    assert record["rejected"] == {}


def test_on_a_2000_event_shop_pairs_beats_popularity(tmp_path_factory):
    """The README's generated log (150 customers, 115 SKUs, seed 1), where matrix
    factorisation is level with popularity."""
    path = _shop(tmp_path_factory, "shop1", n_users=150, n_items=115, n_events=2_000, seed=1)
    record = simulate(_settings(path, num_rounds=2, stop_patience=3, evaluate_every=2))
    fed = record["models"]["federated-pairs"]["ndcg@10"]
    pop = record["models"]["popularity"]["ndcg@10"]
    assert fed > 1.03 * pop, (fed, pop)
    assert record["below_baseline"] is None
    assert record["pairs"]["weight"] in pairs.WEIGHTS


# partition → what the device sends instead of its count
HOSTILE = {0: "float ids", 1: "repeated ids", 2: "ids out of range", 3: "an extra array",
           4: "no pairs record", 5: "its counted items again", 6: "every item",
           8: "a drop never counted"}
LOST = 7  # its first count reply is lost on the way


def _hostile_app(n_items: int) -> ClientApp:
    app, first = ClientApp(), {}

    @app.query()
    def _query(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        cfg = msg.content.config_records.get(pairs.RECORD)
        reply = device_query(msg, context, context.run_config)
        if cfg is None or cfg["task"] != pairs.COUNT:
            return reply
        if pid == LOST and pid not in first:
            first[pid] = True
            raise ConnectionError("the reply was lost")
        if pid not in HOSTILE:
            return reply
        honest = records.record_to_arrays(reply.content[pairs.RECORD])["new"]
        first.setdefault(pid, honest)
        kind = HOSTILE[pid]
        arrays = {"float ids": {"new": honest.astype(np.float64)},
                  "repeated ids": {"new": np.r_[honest, honest[:1]]},
                  "ids out of range": {"new": np.r_[honest, n_items].astype(np.int64)},
                  "an extra array": {"new": honest, "rows": np.ones((2, 2), np.float32)},
                  "its counted items again": {"new": first[pid]},
                  "every item": {"new": np.arange(n_items, dtype=np.int64)},
                  "a drop never counted": {"new": honest,
                                           "drop": np.setdiff1d(np.arange(n_items),
                                                                honest)[:2]}}.get(kind)
        if kind == "no pairs record":
            return Message(RecordDict({records.METRICS: MetricRecord({"x": 1.0})}),
                           reply_to=msg)
        if kind == "its counted items again" and first[pid] is honest:
            return reply  # (round 1: honest)
        return Message(RecordDict({pairs.RECORD: records.arrays_to_record(arrays)}),
                       reply_to=msg)

    @app.evaluate()
    def _never(msg: Message, context: Context) -> Message:
        raise AssertionError("a pairs run sends no evaluate message")

    return app


def _hostile_run(small, tmp_path) -> tuple[dict, np.ndarray, list[np.ndarray], int]:
    settings = _settings(small)
    parts = simulated_partitions(settings.dataset, settings.protocol)
    config = {**settings.to_run_config(), "results-dir": str(tmp_path)}
    run_in_process(server_app, _hostile_app(parts.n_items), parts.n_users, config)
    history = json.loads((tmp_path / "history.json").read_text())
    sets = ItemPairs(settings.pairs_cap).fit(parts.split.train).items
    return history, np.load(tmp_path / "model.npz")["counts"], sets, parts.n_items


def test_hostile_counts_are_refused_by_field_and_change_nothing(small, tmp_path):
    history, table, sets, n_items = _hostile_run(small, tmp_path)
    parts = simulated_partitions(f"csv:{small}", "implicit-80-20")
    held_in = pairs.latest_distinct(parts.user(5).holding_out(1).train_items, 200)
    expected = [np.arange(n_items) if u == 6 else held_in if u == 5 else items
                for u, items in enumerate(sets) if u not in (0, 1, 2, 3, 4, 8)]
    np.testing.assert_array_equal(table, pairs.PairCounts.of_sets(expected, n_items).counts)
    # float, repeated and out-of-range ids in both rounds, the resend in round 2: by field
    assert history["rejected"]["pairs.new"] == 3 * 2 + 1
    assert history["rejected"]["pairs.arrays"] == 2
    assert history["rejected"]["records"] == 2
    assert history["rejected"]["pairs.drop"] == 2  # items it never counted, both rounds
    assert sum(history["rejected"].values()) == 13
    # the lost reply and the device told it counted every item (its own count refuses)
    assert [r["train"]["failed"] for r in history["rounds"]] == [1.0, 1.0]
    # one device claiming every item moved each count by at most 1
    honest = [items for u, items in enumerate(expected) if u != 1]
    diff = table - pairs.PairCounts.of_sets(honest, n_items).counts
    assert set(np.unique(diff)) <= {0.0, 1.0}


def test_the_hostile_run_fails_when_a_check_is_dropped(small, tmp_path, monkeypatch):
    """With items already counted let through, the resend is folded twice."""
    strict = pairs.check_contribution

    def lax(new, counted, n_items, cap, drop=None):
        if len(np.intersect1d(new, counted)):
            return
        strict(new, counted, n_items, cap, drop)

    monkeypatch.setattr(server_pairs.pairs, "check_contribution", lax)
    history, table, sets, n_items = _hostile_run(small, tmp_path)
    assert history["rejected"]["pairs.new"] == 3 * 2
    parts = simulated_partitions(f"csv:{small}", "implicit-80-20")
    held_in = pairs.latest_distinct(parts.user(5).holding_out(1).train_items, 200)
    expected = [np.arange(n_items) if u == 6 else held_in if u == 5 else items
                for u, items in enumerate(sets) if u not in (0, 1, 2, 3, 4, 8)]
    assert not np.array_equal(table, pairs.PairCounts.of_sets(expected, n_items).counts)


COLLUDERS = (10, 11, 12, 13)  # each claims the same set: a tail item with popular ones


def _colluding_app(push: np.ndarray) -> ClientApp:
    app = ClientApp()

    @app.query()
    def _query(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        cfg = msg.content.config_records.get(pairs.RECORD)
        if pid not in COLLUDERS or cfg is None or cfg["task"] != pairs.COUNT:
            return device_query(msg, context, context.run_config)
        new = push if cfg["counted"] == 0 else np.empty(0, np.int64)
        return Message(RecordDict({pairs.RECORD: records.arrays_to_record({"new": new})}),
                       reply_to=msg)

    return app


@pytest.mark.parametrize("defences", [DEFAULT, "off"])
def test_copies_sets_colluding_devices_aside_and_takes_their_counts_out(small, tmp_path,
                                                                        defences):
    settings = _settings(small, defences=defences)
    parts = simulated_partitions(settings.dataset, settings.protocol)
    push = np.array([1, 2, 3, 4, 5, 50], np.int64)
    config = {**settings.to_run_config(), "results-dir": str(tmp_path)}
    run_in_process(server_app, _colluding_app(push), parts.n_users, config)
    history = json.loads((tmp_path / "history.json").read_text())
    table = np.load(tmp_path / "model.npz")["counts"]
    sets = ItemPairs(settings.pairs_cap).fit(parts.split.train).items
    honest = [items for u, items in enumerate(sets) if u not in COLLUDERS]
    n = parts.n_items
    if defences == "off":
        np.testing.assert_array_equal(table, pairs.PairCounts.of_sets(
            honest + [push] * len(COLLUDERS), n).counts)
        assert history["set_aside"] == {}
        return
    np.testing.assert_array_equal(table, pairs.PairCounts.of_sets(honest, n).counts)
    assert history["set_aside"] == {"copies": len(COLLUDERS)}
    assert [r["train"]["set-aside"] for r in history["rounds"]] == [4.0, 0.0]
    assert history["rejected"] == {"set-aside": len(COLLUDERS)}  # round 2: not counted


def test_the_pairs_attack_bench_measures_a_push_and_the_defence_stopping_it():
    from fedrec.simulations.benches.pairs_attack import bench_pairs_attack, shops, table_lines

    record = bench_pairs_attack(shops(1), ["push", "push-jitter"], [0.1],
                                ["off", DEFAULT])
    rows = {(r["attack"], r["defences"]): r for r in record["table"]}
    none, off, on = rows["none", "default"], rows["push", "off"], rows["push", "default"]
    assert off["er@10"] > 0.1 and off["target_rank"] < none["target_rank"]
    assert on["er@10"] <= none["er@10"] + 0.01
    assert on["malicious_set_aside"] == on["malicious"] == 15 and on["honest_set_aside"] == 0
    assert on["ndcg@10"] == pytest.approx(none["ndcg@10"], abs=1e-12)
    assert ("push-jitter", "default") in rows and len(table_lines(record)) == 6


def test_the_pairs_attack_command_writes_its_table_and_refuses_bad_values(tmp_path, capsys):
    from fedrec.simulations.cli.main import main

    out = tmp_path / "pa.json"
    assert main(["bench", "pairs-attack", "--shops", "1", "--attacks", "push",
                 "--fractions", "0.05", "--quiet", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert {r["attack"] for r in record["runs"]} == {"none", "push"}
    assert "ER@10" in capsys.readouterr().out
    for bad in (["--fractions", "2"], ["--fractions", "x"], ["--shops", "0"],
                ["--rounds", "0"], ["--attacks", "shove"]):
        assert main(["bench", "pairs-attack", "--quiet", *bad]) == 2, bad
        assert "error" in capsys.readouterr().err.lower()
