"""Federated training end to end: Flower's ServerApp and ClientApp on the in-process engine."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import numpy as np
import pytest
from flwr.app import Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.logger import FLOWER_LOGGER

from fedrec.client.app import app as client_app
from fedrec.client.sync import TABLE
from fedrec.common import records
from fedrec.common.data.csvlog import write_csv_log
from fedrec.common.data.synthetic import ShopConfig, generate_shop
from fedrec.common.partition import simulated_partitions
from fedrec.common.settings import RunSettings
from fedrec.server.app import app as server_app
from fedrec.server.app import build_strategy
from fedrec.simulations.engines.inprocess import InProcessGrid, run_in_process
from tests.conftest import low_rank_ratings
from tests.replies import sent, train_reply, update_arrays

FLOWER_LOGGER.setLevel(logging.WARNING)


@pytest.fixture(scope="module")
def shop_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("shop") / "shop.csv"
    return write_csv_log(generate_shop(ShopConfig(n_users=120, n_items=80, n_events=6_000,
                                                  seed=4)), path)


@pytest.fixture(scope="module")
def ratings_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("ratings") / "ratings.csv"
    data = low_rank_ratings(n_users=60, n_items=40, density=0.6)
    data = replace(data, timestamp=data.timestamp + 1_600_000_000)  # realistic times
    return write_csv_log(data, path)


def settings_for(path, protocol, **kw):
    base = {"dataset": f"csv:{path}", "protocol": protocol, "num_rounds": 6,
            "evaluate_every": 3, "factors": 8, "local_epochs": 2, "negatives": 2}
    return RunSettings(**{**base, **kw})


def run(settings, tmp_path, observer=None):
    parts = simulated_partitions(settings.dataset, settings.protocol, settings.fold, "")
    config = {**settings.to_run_config(), "results-dir": str(tmp_path)}
    grid = run_in_process(server_app, client_app, parts.n_users, config, observer=observer)
    history = json.loads((tmp_path / "history.json").read_text())
    return grid, history, np.load(tmp_path / "model.npz")


def test_explicit_federated_run_learns_and_writes_results(ratings_csv, tmp_path):
    s = settings_for(ratings_csv, "explicit-80-20", lr=0.02, reg=0.02, batch_size=8,
                     server_optimizer="sgd", server_lr=20.0, num_rounds=12, evaluate_every=6)
    _, history, model = run(s, tmp_path)
    evals = [r["evaluate"]["rmse"] for r in history["rounds"] if "evaluate" in r]
    assert len(evals) == 2 and evals[-1] < evals[0]
    parts = simulated_partitions(s.dataset, s.protocol, 0, "")
    test = parts.split.test
    assert evals[-1] < 0.9 * np.std(test.value)  # better than predicting the mean
    assert model["factors"].shape == (40, 8)
    train = parts.split.train  # μ: the mean of users' mean ratings
    means = np.bincount(train.user, train.value) / np.bincount(train.user)
    assert float(model["mean"]) == pytest.approx(float(means.mean()), rel=1e-6)
    assert all(r["train"]["accepted"] == 60 for r in history["rounds"] if "train" in r)


@pytest.mark.parametrize("privacy", ["plain", "decoy", "dp", "decoy+dp"])
@pytest.mark.parametrize("protocol", ["implicit-80-20", "explicit-80-20"])
def test_every_message_is_free_of_raw_data(shop_csv, ratings_csv, tmp_path, protocol, privacy):
    """Inspect every message in both directions, in every privacy mode with sparse replies
    (secagg has its own test): nothing of a device's raw events (its ratings, timestamps)
    or its user vector is ever in one; in decoy modes every reply has the same rows and
    carries no count of the device's events."""
    path = shop_csv if protocol.startswith("implicit") else ratings_csv
    s = settings_for(path, protocol, num_rounds=4, evaluate_every=2, privacy=privacy,
                     decoy_rows=30 if "decoy" in privacy else 0)
    seen = []
    grid, history, _ = run(s, tmp_path, observer=lambda d, m: seen.append((d, m)))
    assert {d for d, _ in seen} == {"to-device", "to-server"}
    parts = simulated_partitions(s.dataset, s.protocol, 0, "")
    stamps = set(parts.split.train.timestamp.tolist()) | set(parts.split.test.timestamp.tolist())
    node_of = {nid: ctx.node_config["partition-id"] for nid, ctx in grid.contexts.items()}
    inspected = 0
    for direction, msg in seen:
        content = msg.content
        if direction == "to-device":
            assert set(content.keys()) <= {records.ITEMS, records.CONFIG}
            continue
        node = msg.metadata.src_node_id
        rows = parts.user(node_of[node])
        ratings = np.sort(np.concatenate([rows.train_values, rows.test_values]))
        p_u = records.record_to_arrays(grid.contexts[node].state[records.USER])["vector"][:-1]
        assert set(content.keys()) <= {records.UPDATE, records.METRICS}
        for record in content.array_records.values():
            assert set(record.keys()) == {"ids", "rows", "bias", "counts"}
            if s.mode.padded:
                assert len(records.record_to_arrays(record)["ids"]) == 30
                assert content[records.METRICS]["num-examples"] == 1.0
            for arr in records.record_to_arrays(record).values():
                assert not (set(np.unique(arr).tolist()) & stamps)
                if arr.ndim == 2:
                    assert not np.isclose(arr, p_u[None, :], atol=1e-6).all(axis=1).any()
                elif protocol.startswith("explicit") and len(arr) == len(ratings):
                    assert not np.array_equal(np.sort(arr), ratings)
            inspected += 1
        allowed = {"train-loss", "num-examples", "num-users", "hr@10", "ndcg@10",
                   "recall@10", "precision@10", "sq-err", "abs-err", "rated",
                   "rating-mean"}
        # The imbalance segments (common.segments), outside the padded modes only: a
        # device's segment tells how active it is.
        segment_keys = {"segment", "recs", "tail-recs", "tail-test", "tail-hits"}
        if not s.mode.padded:
            allowed |= segment_keys
        for metrics in content.metric_records.values():
            assert set(metrics) <= allowed
            if not s.mode.padded and protocol.startswith("implicit") \
                    and metrics.get("num-users") == 1 and "hr@10" in metrics:
                assert segment_keys <= set(metrics)
    assert inspected >= 4 * parts.n_users * 0.9
    evals = [r["evaluate"] for r in history["rounds"] if "evaluate" in r]
    assert len(evals) == 2


def _request(grid: InProcessGrid, node: int) -> Message:
    return Message(RecordDict(), dst_node_id=node, message_type=MessageType.TRAIN)


@pytest.mark.parametrize(("corrupt", "reason"), [
    (lambda a: a["rows"].__setitem__((0, 0), np.nan), "nonfinite"),
    (lambda a: a.__setitem__("rows", a["rows"][:, :3].copy()), "shape"),
    (lambda a: a["ids"].__setitem__(0, 10_000), "id-range"),
    (lambda a: a.__setitem__("rows", a["rows"] * 1e6), "norm"),
    (lambda a: a.__setitem__("bias", a["bias"].astype(np.float64)), "dtype"),
])
def test_malformed_replies_are_rejected_and_the_model_is_unchanged(ratings_csv, corrupt,
                                                                   reason):
    s = settings_for(ratings_csv, "explicit-80-20")
    parts = simulated_partitions(s.dataset, s.protocol, 0, "")
    grid = InProcessGrid(ClientApp(), parts.n_users, s.to_run_config())
    from fedrec.simulations.engines.inprocess import (
        TaskIdentity,  # the runtime's identity, as a run sets
    )

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    strategy = build_strategy(s, parts.n_items, 3.0, parts.rating_range)
    before = strategy.model.params.copy()
    arrays = update_arrays()
    corrupt(arrays)
    reply = train_reply(sent(strategy, grid, [1001])[1001], arrays)
    _, metrics = strategy.aggregate_train(1, [reply])
    assert strategy.rejected == {reason: 1}
    assert metrics["rejected"] == 1 and metrics["accepted"] == 0
    np.testing.assert_array_equal(strategy.model.params.factors, before.factors)
    np.testing.assert_array_equal(strategy.model.params.bias, before.bias)


def test_in_decoy_mode_a_reply_of_another_size_is_rejected(ratings_csv):
    s = settings_for(ratings_csv, "explicit-80-20", privacy="decoy", decoy_rows=5)
    parts = simulated_partitions(s.dataset, s.protocol, 0, "")
    grid = InProcessGrid(ClientApp(), parts.n_users, s.to_run_config())
    from fedrec.simulations.engines.inprocess import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    strategy = build_strategy(s, parts.n_items, 3.0, parts.rating_range)
    assert strategy.round_config(1)["decoy-rows"] == 5
    asked = sent(strategy, grid, [1001, 1002])
    replies = [train_reply(asked[node], update_arrays(range(m)),
                           {"num-examples": 1.0, "train-loss": 0.5})
               for node, m in ((1001, 5), (1002, 4))]  # the asked size, then one row short
    _, metrics = strategy.aggregate_train(1, replies)
    assert strategy.rejected == {"decoy-rows": 1} and metrics["accepted"] == 1
    assert strategy.named.tolist()[:6] == [1, 1, 1, 1, 1, 0]  # what devices draw decoys by
    assert "named" in strategy.items_record()


def test_a_failing_device_and_a_timeout_do_not_stall_the_run(ratings_csv):
    s = settings_for(ratings_csv, "explicit-80-20")
    broken = ClientApp()

    @broken.train()
    def train(msg, context):
        raise RuntimeError("device battery died")

    grid = InProcessGrid(broken, 3, s.to_run_config())
    from fedrec.simulations.engines.inprocess import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    msgs = [_request(grid, n) for n in grid.get_node_ids()]
    replies = list(grid.send_and_receive(msgs, timeout=60))
    assert len(replies) == 3 and all(r.has_error() for r in replies)
    assert "battery" in replies[0].error.reason
    msgs = [_request(grid, n) for n in grid.get_node_ids()]
    assert list(grid.send_and_receive(msgs, timeout=-1)) == []  # nothing arrived in time


def test_dp_mode_noises_every_update_reports_epsilon_and_stops_at_the_budget(ratings_csv,
                                                                           tmp_path):
    from fedrec.server.accountant import Accountant

    cap = Accountant(1.0, 2.0, 1e-5).epsilon(2) + 1e-9  # room for two rounds, not three
    s = settings_for(ratings_csv, "explicit-80-20", num_rounds=4, evaluate_every=4,
                     privacy="dp", dp_clip=0.5, dp_noise=2.0, dp_epsilon=cap)
    seen = []
    _, history, _ = run(s, tmp_path, observer=lambda d, m: seen.append((d, m)))
    train = [r["train"] for r in history["rounds"] if "train" in r]
    assert [t["accepted"] for t in train] == [60, 60, 0, 0]  # rounds 3-4 skipped
    assert history["epsilon"] == pytest.approx(cap, rel=1e-6) and history["delta"] == 1e-5
    assert train[1]["epsilon"] > train[0]["epsilon"] > 0
    replies = [m for d, m in seen if d == "to-server" and m.metadata.message_type == "train"]
    for reply in replies:
        arrays = records.record_to_arrays(reply.content[records.UPDATE])
        assert (arrays["counts"] == 1).all()  # weights carry nothing of the data
    asked = [m for d, m in seen if d == "to-device" and m.metadata.message_type == "train"]
    assert all(m.content[records.CONFIG]["dp-clip"] == 0.5 for m in asked)


def test_a_device_whose_training_diverges_answers_with_an_error_and_keeps_its_state(
        ratings_csv):
    s = settings_for(ratings_csv, "explicit-80-20")
    grid = InProcessGrid(client_app, 3, s.to_run_config())
    from fedrec.simulations.engines.inprocess import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    strategy = build_strategy(s, simulated_partitions(s.dataset, s.protocol, 0, "").n_items,
                              3.0, (1.0, 5.0))
    strategy.model.params.factors[:] = 1e19  # a table no device can train against
    content = RecordDict({records.ITEMS: strategy.items_record(),
                          records.CONFIG: strategy.round_config(1)})
    replies = list(grid.send_and_receive(
        [Message(content, dst_node_id=n, message_type=MessageType.TRAIN)
         for n in grid.get_node_ids()]))
    assert all(r.has_error() and "diverged" in r.error.reason for r in replies)
    assert all(records.USER not in c.state.array_records for c in grid.contexts.values())


def test_a_run_resumes_from_its_checkpoint_with_the_next_round(shop_csv, tmp_path):
    """The server saves its model after every round; a new run with the same checkpoint
    continues from the next round (round numbers, row versions, optimiser state, history),
    and a run already complete trains no further."""
    checkpoint = tmp_path / "server.db"
    first = settings_for(shop_csv, "implicit-80-20", num_rounds=2, evaluate_every=2,
                         checkpoint=str(checkpoint))
    (tmp_path / "a").mkdir()
    _, history, model = run(first, tmp_path / "a")
    assert [r["round"] for r in history["rounds"] if "train" in r] == [1, 2]
    from fedrec.server.checkpoint import Checkpoint

    saved, last, _, _ = Checkpoint(checkpoint).load()
    assert last == 2
    np.testing.assert_array_equal(saved.params.factors, model["factors"])

    seen = []
    (tmp_path / "b").mkdir()
    _, history, resumed = run(replace(first, num_rounds=4), tmp_path / "b",
                              observer=lambda d, m: seen.append((d, m)))
    asked = {m.content[records.CONFIG]["server-round"] for d, m in seen
             if d == "to-device" and m.metadata.message_type == MessageType.TRAIN}
    assert asked == {3, 4}  # the resumed run's rounds continue the count
    assert [r["round"] for r in history["rounds"] if "train" in r] == [1, 2, 3, 4]
    assert resumed["version"].max() == 4 and (resumed["version"] >= 3).any()
    assert not np.array_equal(resumed["factors"], model["factors"])

    (tmp_path / "c").mkdir()
    _, history, again = run(replace(first, num_rounds=4), tmp_path / "c")
    np.testing.assert_array_equal(again["factors"], resumed["factors"])  # nothing retrained


@pytest.mark.parametrize("protocol", ["implicit-80-20", "explicit-80-20"])
def test_delta_sync_trains_the_same_model(shop_csv, ratings_csv, tmp_path, protocol):
    """Devices patch the table they kept with the rows that changed: the model is bit for
    bit the one full sync trains (here every row changes every round, so the server sends
    whole tables: a delta of every row would be larger)."""
    path = shop_csv if protocol.startswith("implicit") else ratings_csv
    kw = {"num_rounds": 4, "evaluate_every": 4, "fraction_train": 0.5}
    (tmp_path / "full").mkdir()
    (tmp_path / "delta").mkdir()
    _, full, model_full = run(settings_for(path, protocol, **kw), tmp_path / "full")
    grid, delta, model_delta = run(settings_for(path, protocol, sync="delta", **kw),
                                   tmp_path / "delta")
    np.testing.assert_array_equal(model_delta["factors"], model_full["factors"])
    np.testing.assert_array_equal(model_delta["bias"], model_full["bias"])
    down_full = [r["train"]["download-bytes"] for r in full["rounds"] if "train" in r]
    down_delta = [r["train"]["download-bytes"] for r in delta["rounds"] if "train" in r]
    # (the version tags add a few hundred bytes per message to a small table)
    assert all(d <= 1.25 * f for f, d in zip(down_full, down_delta, strict=True))
    assert any(TABLE in c.state.array_records for c in grid.contexts.values())


def test_delta_sync_sends_only_the_rows_that_moved(shop_csv):
    """After a round that moved a few rows, a device that holds the previous version gets
    those rows only, and patches its table to exactly the server's."""
    from flwr.app import Context

    from fedrec.client.sync import synced_table
    from fedrec.server.aggregate import Aggregate

    s = settings_for(shop_csv, "implicit-80-20", sync="delta")
    parts = simulated_partitions(s.dataset, s.protocol, 0, "")
    strategy = build_strategy(s, parts.n_items, 0.0, parts.rating_range)
    context = Context(run_id=1, node_id=5, node_config={}, state=RecordDict(), run_config={})
    whole = strategy.table_record(None)
    synced_table(whole, context)
    moved = np.array([3, 17, 40])
    rng = np.random.default_rng(0)
    strategy.model.apply(Aggregate(moved, rng.normal(size=(3, 8)), rng.normal(size=3),
                                   np.ones(3), np.ones(3)), 1)
    n = strategy.model.n_items
    delta = strategy.table_record((0, n))
    assert records.record_to_arrays(delta)["ids"].tolist() == moved.tolist()
    size = lambda r: sum(len(a.data) for a in r.values())  # noqa: E731
    assert size(delta) < 0.35 * size(whole)  # (small table: .npy headers are most of it)
    table = synced_table(delta, context)
    np.testing.assert_array_equal(table.factors, strategy.model.params.factors)
    np.testing.assert_array_equal(table.bias, strategy.model.params.bias)


def test_a_device_that_lost_its_table_gets_it_whole_again(shop_csv):
    from flwr.app import Context, Error

    from fedrec.client.sync import StaleTableError, synced_table

    s = settings_for(shop_csv, "implicit-80-20", sync="delta")
    parts = simulated_partitions(s.dataset, s.protocol, 0, "")
    strategy = build_strategy(s, parts.n_items, 0.0, parts.rating_range)
    context = Context(run_id=1, node_id=5, node_config={}, state=RecordDict(), run_config={})
    factors = synced_table(strategy.table_record(None), context).factors
    np.testing.assert_array_equal(factors, strategy.model.params.factors)
    n = strategy.model.n_items
    delta = strategy.table_record((0, n))  # nothing moved yet: no rows
    assert len(records.record_to_arrays(delta)["ids"]) == 0
    np.testing.assert_array_equal(synced_table(delta, context).factors, factors)
    lost = Context(run_id=1, node_id=6, node_config={}, state=RecordDict(), run_config={})
    with pytest.raises(StaleTableError, match="needs the whole table"):
        synced_table(delta, lost)
    # The server: an error reply makes it forget what the device held (whole table next);
    # a good reply acknowledges the version it was sent.
    grid = InProcessGrid(ClientApp(), 2, s.to_run_config())
    from fedrec.simulations.engines.inprocess import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    strategy.acked = {1001: (0, n)}
    asked = sent(strategy, grid, [1001, 1002], server_round=0)
    assert strategy.pending == {1001: (0, n), 1002: (0, n)}
    good = train_reply(asked[1002])
    bad = Message(error=Error(code=0, reason="StaleTableError"), reply_to=asked[1001])
    strategy.aggregate_train(1, [bad, good])
    assert strategy.acked == {1002: (0, n)}
    assert "base" not in records.record_to_arrays(strategy.table_record(strategy.acked.get(1001)))
    moved = records.record_to_arrays(strategy.table_record(strategy.acked[1002]))
    assert moved["ids"].tolist() == [1, 2] and int(moved["version"][0]) == 1


def test_an_implicit_run_reports_light_and_heavy_users_and_the_tail(shop_csv, tmp_path):
    """Devices get the segments with the evaluation round, report their segment and tail
    counts, and the server pools them: the users it counts per segment are exactly those
    the training split puts there."""
    from fedrec.common.segments import HEAVY, LIGHT, Segments

    s = settings_for(shop_csv, "implicit-80-20", num_rounds=3, evaluate_every=3)
    _, history, _ = run(s, tmp_path)
    result = history["rounds"][-1]["evaluate"]
    parts = simulated_partitions(s.dataset, s.protocol, 0, "")
    segments = Segments.of(parts.split.train)
    tested = np.bincount(parts.split.test.user, minlength=parts.n_users) > 0
    counts = np.bincount(parts.split.train.user, minlength=parts.n_users)[tested]
    assert result["light-users"] == (segments.segment(counts) == LIGHT).sum() > 0
    assert result["heavy-users"] == (segments.segment(counts) == HEAVY).sum() > 0
    for key in ("light-hr@10", "light-ndcg@10", "heavy-hr@10", "heavy-ndcg@10",
                "tail-share@10", "tail-recall@10"):
        assert 0.0 <= result[key] <= 1.0, key
    assert "refused" not in result


def test_devices_rank_with_the_head_the_server_counts_and_the_checkpoint_keeps_it(
        shop_csv, tmp_path):
    """The plain mode's head layer: the server counts the devices that moved each row,
    sends the head with the table and the bonus with the round; devices rank with them.
    The same run with a large bonus puts far more of the tail in the top 10 than without
    one, and its checkpoint holds the counts a resumed server goes on from."""
    from fedrec.common.segments import head_of
    from fedrec.server.checkpoint import Checkpoint

    shares = {}
    for bonus in (0.0, 3.0):
        out = tmp_path / f"bonus-{bonus}"
        out.mkdir()
        s = settings_for(shop_csv, "implicit-80-20", num_rounds=3, evaluate_every=3,
                         tail_bonus=bonus, checkpoint=str(out / "server.db"))
        _, history, model = run(s, out)
        shares[bonus] = history["rounds"][-1]["evaluate"]["tail-share@10"]
        run_state = Checkpoint(out / "server.db").load()[3]
        counts = run_state.get("arrays", {}).get("head", {}).get("counts")
        # model.npz says how devices rank, for an app that fetches it (EdgeClient.set_table)
        assert float(model["tail_bonus"]) == bonus
        assert float(model["similarity"]) == s.similarity
        if bonus:
            parts = simulated_partitions(s.dataset, s.protocol, 0, "")
            assert counts is not None and len(counts) == parts.n_items
            assert counts.max() > 0 and (counts >= 0).all()
            np.testing.assert_array_equal(model["head"], head_of(counts))
        else:
            assert counts is None  # (no bonus: no head is counted or sent)
            assert model["head"].dtype == bool and not model["head"].any()
    assert shares[3.0] > shares[0.0] + 0.2, shares


def test_devices_rank_with_the_similarity_the_round_sends(shop_csv, tmp_path):
    """The round config's similarity reaches every evaluating device, which blends it into
    its ranking (fedrec.common.ranking.with_similarity): the same run at similarity 0 and 5
    trains the same table bit for bit and ranks differently."""
    got = {}
    for weight in (0.0, 5.0):
        out = tmp_path / f"similarity-{weight}"
        out.mkdir()
        s = settings_for(shop_csv, "implicit-80-20", num_rounds=2, evaluate_every=2,
                         similarity=weight, tail_bonus=0.0)
        _, history, model = run(s, out)
        got[weight] = (history["rounds"][-1]["evaluate"], model)
    (plain, table), (like, table_like) = got[0.0], got[5.0]
    np.testing.assert_array_equal(table["factors"], table_like["factors"])
    assert plain["num-users"] == like["num-users"] > 0
    assert plain["ndcg@10"] != like["ndcg@10"] and plain["hr@10"] != like["hr@10"]


def test_early_stopping_keeps_the_best_validated_table(shop_csv, tmp_path):
    """stop-patience: devices train without their latest event and score it in the
    validation rounds; the run stops once that stops improving and puts back the table
    of its best validation round, which is the table a run stopped at that round had."""
    kw = {"num_rounds": 30, "evaluate_every": 1, "fraction_train": 1.0, "lr": 0.3}
    seen = []
    (tmp_path / "a").mkdir()
    s = settings_for(shop_csv, "implicit-80-20", stop_patience=2, **kw)
    grid, history, model = run(s, tmp_path / "a", observer=lambda d, m: seen.append((d, m)))
    rounds = history["rounds"]
    stopping = next(r["stopping"] for r in rounds if "stopping" in r)
    best = stopping["best-round"]
    last = max(r["round"] for r in rounds if "train" in r)
    assert last == best + 2 < 30  # stopped two evaluations after its best
    assert [r["round"] for r in rounds if "validation" in r] == list(range(1, last + 1))
    assert [r["round"] for r in rounds if "evaluate" in r] == [last]  # test rows: once
    # Every device trained without its latest training event (users with 3 or more).
    parts = simulated_partitions(s.dataset, s.protocol, 0, "")
    counts = np.bincount(parts.split.train.user, minlength=parts.n_users)
    node_of = {nid: ctx.node_config["partition-id"] for nid, ctx in grid.contexts.items()}
    trained = [(m.content[records.METRICS]["num-examples"],
                counts[node_of[m.metadata.src_node_id]]) for d, m in seen
               if d == "to-server" and m.metadata.message_type == MessageType.TRAIN]
    assert len(trained) == last * parts.n_users
    assert all(n == (c - 1 if c >= 3 else c) for n, c in trained)
    # The same run stopped at its best round has the table the stopped run kept.
    (tmp_path / "b").mkdir()
    at_best = settings_for(shop_csv, "implicit-80-20", stop_patience=1000,
                           **{**kw, "num_rounds": best})
    _, _, model_b = run(at_best, tmp_path / "b")
    np.testing.assert_array_equal(model["factors"], model_b["factors"])
    np.testing.assert_array_equal(model["bias"], model_b["bias"])


class _Killed(RuntimeError):
    """The server process killed (simulated: its grid fails mid-run)."""


def test_a_server_killed_mid_run_stops_where_the_run_without_the_kill_stops(shop_csv,
                                                                           tmp_path):
    """Early stopping's state is in the checkpoint: a server killed after some validation
    rounds and restarted (the devices keep theirs, as SuperNodes do) keeps its best figure,
    its waiting and its best table, so it stops at the same round with the same table as
    the run that was never killed (a restarted rule that forgot them would wait afresh and
    end with a later table)."""
    from flwr.app import Context

    from fedrec.server.checkpoint import Checkpoint

    kw = {"num_rounds": 30, "evaluate_every": 1, "fraction_train": 1.0, "lr": 0.3,
          "stop_patience": 2}
    (tmp_path / "whole").mkdir()
    _, whole, model = run(settings_for(shop_csv, "implicit-80-20", **kw), tmp_path / "whole")
    stopping = next(r["stopping"] for r in whole["rounds"] if "stopping" in r)
    best, last = stopping["best-round"], max(r["round"] for r in whole["rounds"])
    assert best >= 2 and last == best + 2
    checkpoint = tmp_path / "server.db"
    s = settings_for(shop_csv, "implicit-80-20", checkpoint=str(checkpoint), **kw)
    parts = simulated_partitions(s.dataset, s.protocol, s.fold, "")
    config = {**s.to_run_config(), "results-dir": str(tmp_path)}
    kill_before = [best + 2]  # after the best round's validation and one more

    def observe(direction, message):
        if kill_before and direction == "to-device" and \
                message.metadata.message_type == MessageType.TRAIN and \
                message.content[records.CONFIG]["server-round"] == kill_before[0]:
            raise _Killed(f"killed before round {kill_before[0]}")

    grid = InProcessGrid(client_app, parts.n_users, config, observer=observe)

    def server_process() -> None:
        server_app(grid, Context(run_id=grid.run.run_id, node_id=0, node_config={},
                                 state=RecordDict(), run_config=dict(config)))

    try:
        with pytest.raises(_Killed):
            server_process()
        _, saved_round, _, state = Checkpoint(checkpoint).load()
        assert saved_round == best + 1
        assert state["early-stop"]["best-round"] == best
        assert state["early-stop"]["waited"] == 1
        kill_before.clear()
        server_process()  # restarted with the same checkpoint; the devices kept theirs
    finally:
        grid.close()
    resumed = json.loads((tmp_path / "history.json").read_text())
    assert next(r["stopping"] for r in resumed["rounds"] if "stopping" in r) == stopping
    ended = np.load(tmp_path / "model.npz")
    np.testing.assert_array_equal(ended["factors"], model["factors"])
    np.testing.assert_array_equal(ended["bias"], model["bias"])
    # The checkpoint holds the table the run ended with, and a restart of the stopped run
    # trains no further.
    saved, _, _, _ = Checkpoint(checkpoint).load()
    np.testing.assert_array_equal(saved.params.factors, model["factors"])
    seen = []
    (tmp_path / "again").mkdir()
    run(s, tmp_path / "again", observer=lambda d, m: seen.append(m))
    assert not any(m.metadata.message_type == MessageType.TRAIN for m in seen)


@pytest.mark.parametrize(("field", "value"), [("best-round", 99), ("waited", None),
                                              ("trace", "[[1, 0.1]]"), ("metric", "rmse")])
def test_a_checkpoint_with_a_damaged_stop_state_is_refused_by_name_at_start(
        shop_csv, tmp_path, field, value):
    """The rule's state enters the server from disk: a sealed checkpoint whose state is
    wrong (what a bug, or someone resealing an unkeyed file, leaves) stops the start with
    the file and the field named, and the file is left as it was."""
    from fedrec.server.checkpoint import Checkpoint

    checkpoint = tmp_path / "server.db"
    s = settings_for(shop_csv, "implicit-80-20", num_rounds=2, evaluate_every=1,
                     stop_patience=5, checkpoint=str(checkpoint))
    (tmp_path / "a").mkdir()
    run(s, tmp_path / "a")
    model, last, history, state = Checkpoint(checkpoint).load()
    arrays = state.pop("arrays")
    state["early-stop"][field] = value
    Checkpoint(checkpoint).save(model, last, history, state, arrays)
    before = checkpoint.read_bytes()
    (tmp_path / "b").mkdir()
    with pytest.raises(ValueError, match=f"server.db: early-stop.{field} "):
        run(replace(s, num_rounds=4), tmp_path / "b")
    assert checkpoint.read_bytes() == before
