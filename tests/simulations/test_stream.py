"""Timeline replays end to end: fedrec's ClientApp and strategy on the in-process engine,
the centralized models on the same stream, and the command."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from fedrec.common import records
from fedrec.common.data.csvlog import write_csv_log
from fedrec.common.data.synthetic import ShopConfig, generate_shop
from fedrec.common.partition import simulated_timeline
from fedrec.common.segments import Segments
from fedrec.simulations.benches.stream import bench_stream
from fedrec.simulations.cli.main import main
from fedrec.simulations.engines.replay import FederatedStream, StreamSettings
from fedrec.simulations.models.presets import STREAM_EXPLICIT, STREAM_IMPLICIT


def _shop_csv(tmp_path_factory, **config) -> str:
    path = tmp_path_factory.mktemp("shop") / "shop.csv"
    return f"csv:{write_csv_log(generate_shop(ShopConfig(rating_share=1.0, **config)), path)}"


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    return _shop_csv(tmp_path_factory, n_users=80, n_items=60, n_events=3_000, seed=5)


def settings(shop: str, kind: str, **extra) -> StreamSettings:
    run = replace(STREAM_EXPLICIT if kind == "explicit" else STREAM_IMPLICIT, factors=4)
    return StreamSettings(dataset=shop, kind=kind, run=run, **({"tick_events": 100} | extra))


@pytest.mark.parametrize("kind", ["explicit", "implicit"])
def test_every_model_scores_every_event_once_on_the_same_stream(shop, kind):
    record = bench_stream(settings(shop, kind, window_events=300))
    timeline = simulated_timeline(shop, kind == "explicit", "")
    d = timeline.data
    if kind == "explicit":
        expected = len(timeline)
    else:  # first interactions of a user with an item
        expected = len(np.unique(d.user.astype(np.int64) * timeline.n_items + d.item))
    assert set(record["models"]) >= {"federated-incremental", "federated-recursive",
                                     "centralized-incremental", "static", "periodic-retrain"}
    key = "rmse" if kind == "explicit" else "hr@10"
    # Light and heavy users (by their events in the stream) and tail items: every model,
    # federated or not, sums the same events in each (devices report their own).
    segments = Segments.of(d)
    group = np.array([segments.group(c) or "" for c in np.bincount(d.user)])[d.user]
    tail = segments.tail_mask(timeline.n_items)[d.item]
    first = np.ones(len(d), dtype=bool)
    if kind == "implicit":
        first[:] = False
        first[np.unique(d.user.astype(np.int64) * timeline.n_items + d.item,
                        return_index=True)[1]] = True
    want = {"light": (first & (group == "light")).sum(),
            "heavy": (first & (group == "heavy")).sum(), "tail": (first & tail).sum()}
    assert min(want.values()) > 0
    for name, m in record["models"].items():
        assert m["scored"] == expected, name
        assert np.isfinite(m[key]), name
        if kind == "implicit":  # the tail's share of the top-10 places every model showed
            assert 0.0 <= m["tail-share@10"] <= 1.0, name
        else:
            assert "tail-share@10" not in m
        assert len(record["curves"][name]) == record["ticks"]
        for g, count in want.items():
            assert m[f"{g}-scored"] == count, (name, g)
            assert np.isfinite(m[f"{g}-{key}"]), (name, g)
    fed = record["models"]["federated-incremental"]
    assert fed["rejected"] == {} and fed["upload_bytes"] > 0 and fed["rounds"] == record["ticks"]
    assert fed["latency"]["rounds"] == 1.0
    assert record["models"]["federated-recursive"]["stored_events_per_device"] == 0
    assert fed["stored_events_per_device"] > 0


def test_the_item_table_grows_and_keeps_what_it_learned(shop):
    fed = FederatedStream(settings(shop, "implicit"))
    ticks = fed.ticks
    fed.step(ticks[0])
    n0 = fed.strategy.model.n_items
    grown = [fed.strategy.model.params.factors.copy()]
    for tick in ticks[1:4]:
        fed.step(tick)
        grown.append(fed.strategy.model.params.factors.copy())
    fed.grid.close()
    assert fed.strategy.model.n_items >= n0
    assert fed.strategy.model.n_items == fed.timeline.listed_by(ticks[3].now)
    untouched = fed.strategy.model.version[:n0] == 0
    np.testing.assert_array_equal(grown[-1][:n0][untouched], grown[0][:n0][untouched])


def test_two_workers_replay_the_same_stream_to_the_same_scores(shop):
    s = settings(shop, "explicit")
    one = bench_stream(s, ("federated-incremental",))["models"]["federated-incremental"]
    two = bench_stream(s, ("federated-incremental",),
                       workers=2)["models"]["federated-incremental"]
    assert one["rmse"] == two["rmse"] and one["upload_bytes"] == two["upload_bytes"]


def test_bench_stream_command_writes_json_and_a_plot(shop, tmp_path, capsys):
    out = tmp_path / "stream.json"
    code = main(["bench", "stream", "--dataset", shop, "--kind", "implicit", "--models",
                 "federated-incremental,recent-popularity", "--tick-events", "200",
                 "--set", "factors=4", "--quiet", "--json", "--out", str(out)])
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert record == json.loads(out.read_text()) | {"env": record["env"]}
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert record["models"]["federated-incremental"]["hr@10"] >= 0
    # The command replays exactly the preset a researcher gets in code, with its options.
    from fedrec.simulations.models.presets import STREAM_IMPLICIT, stream_settings

    want = stream_settings(shop, "implicit", tick_events=200,
                           run=replace(STREAM_IMPLICIT, factors=4),
                           data_dir=record["settings"]["data_dir"])  # (FEDREC_DATA, if set)
    assert record["settings"] == want.to_dict()


def test_the_stream_preset_in_code_is_the_command_s_and_refuses_what_it_does_not_know():
    from fedrec.simulations.models.presets import (
        STREAM_BUFFER,
        STREAM_EXPLICIT,
        STREAM_IMPLICIT,
        STREAM_REPLAY,
        STREAM_TICK_EVENTS,
        stream_settings,
    )

    for kind, run in (("explicit", STREAM_EXPLICIT), ("implicit", STREAM_IMPLICIT)):
        s = stream_settings("ml-100k", kind)
        assert (s.run, s.tick_events, s.buffer, s.replay) == (
            run, STREAM_TICK_EVENTS[kind], STREAM_BUFFER[kind], STREAM_REPLAY[kind])
        assert s.kind == kind and s.dataset == "ml-100k"
    s = stream_settings("synthetic", "implicit", replay=None, buffer=7, prefix=0.5)
    assert (s.replay, s.buffer, s.prefix) == (STREAM_REPLAY["implicit"], 7, 0.5)
    with pytest.raises(ValueError, match="kind must be one of explicit, implicit"):
        stream_settings("ml-100k", "ratings")
    with pytest.raises(ValueError, match="tick_events and buffer must be >= 1"):
        stream_settings("ml-100k", "implicit", tick_events=0)
    with pytest.raises(TypeError, match="colour"):
        stream_settings("ml-100k", "implicit", colour=1)


def test_daily_ticks_and_device_compute_are_reported(shop):
    record = bench_stream(settings(shop, "explicit", tick_seconds=86_400),
                          ("federated-incremental",))
    timeline = simulated_timeline(shop, True, "")
    days = np.unique(timeline.data.timestamp // 86_400)
    assert record["ticks"] == len(days)  # one round per day that has events
    fed = record["models"]["federated-incremental"]
    assert fed["scored"] == len(timeline) and fed["device_s_per_message"] > 0
    assert fed["stored_bytes_per_device"] == 20 * fed["stored_events_per_device"]


@pytest.mark.parametrize("kind", ["explicit", "implicit"])
def test_stream_messages_carry_no_raw_events_or_user_vectors(shop, kind):
    seen = []
    fed = FederatedStream(settings(shop, kind), observer=lambda d, m: seen.append((d, m)))
    for tick in fed.ticks[:6]:
        fed.step(tick)
    fed.grid.close()
    d = fed.timeline.data
    stamps = set(d.timestamp.tolist())
    allowed = {"train-loss", "num-examples", "rating-sum", "rating-count", "stored-events",
               "device-s"} | {f"pq-{k}" for k in ("n", "sq-err", "abs-err", "hits", "ndcg",
                                                  "new-n", "new-hits", "new-ndcg",
                                                  "new-sq-err")} | {
        f"pq-{g}-{k}" for g in ("light", "heavy", "tail")  # (sums over segments)
        for k in ("n", "sq-err", "hits", "ndcg")} | {"pq-recs", "pq-tail-recs"}
    replies = 0
    for direction, msg in seen:
        content = msg.content
        if direction == "to-device":
            assert set(content.keys()) == {records.ITEMS, records.CONFIG}
            assert set(content[records.ITEMS].keys()) == {"factors", "bias", "static.listed"}
            continue
        replies += 1
        node = msg.metadata.src_node_id
        p_u = records.record_to_arrays(fed.grid.contexts[node].state[records.USER])["vector"]
        assert set(content.keys()) == {records.UPDATE, records.METRICS}
        for arr in records.record_to_arrays(content[records.UPDATE]).values():
            assert not (set(np.unique(arr).tolist()) & stamps)
            if arr.ndim == 2 and len(arr):
                assert not np.isclose(arr, p_u[None, :-1], atol=1e-6).all(axis=1).any()
        assert set(content[records.METRICS]) <= allowed
    assert replies >= 6


def test_the_sampler_prefers_devices_with_new_events_plus_a_share_of_others(shop):
    fed = FederatedStream(settings(shop, "implicit", others_share=0.5))
    d = fed.timeline.data
    tick = fed.ticks[5]
    active = set(np.unique(d.user[tick.start:tick.stop]).tolist())
    appeared = set(np.unique(d.user[:tick.start]).tolist()) - active
    chosen = {fed.grid.contexts[n].node_config["partition-id"] for n in fed._sample(tick)}
    fed.grid.close()
    assert active <= chosen  # every device with new events
    others = chosen - active
    assert others <= appeared  # others: only devices that have appeared
    assert len(others) == min(len(appeared), round(0.5 * len(active)))


def test_a_model_that_does_not_apply_to_the_kind_is_refused(shop):
    with pytest.raises(ValueError, match=r"online-bias.*implicit"):
        bench_stream(settings(shop, "implicit"), ("online-bias",))


@pytest.fixture(scope="module")
def catalogue_shop(tmp_path_factory):
    """A shop whose catalogue is large beside what a tick moves (where deltas pay)."""
    return _shop_csv(tmp_path_factory, n_users=60, n_items=1_500, n_events=12_000, seed=3)


@pytest.mark.parametrize("kind", ["explicit", "implicit"])
def test_delta_sync_replays_the_same_stream_with_fewer_bytes(catalogue_shop, kind):
    """Devices that keep their table and take only the rows moved or listed since they
    last synced score every event exactly as with whole tables, for fewer bytes; every
    device's patched table was checked bit for bit against the server's. (Implicit: 4
    negatives an event, so a round leaves rows unmoved; with the preset's 32 on this small
    catalogue nearly every row moves each round and the server sends whole tables.)"""
    s = settings(catalogue_shop, kind, tick_events=50 if kind == "explicit" else 200)
    if kind == "implicit":
        s = replace(s, run=replace(s.run, negatives=4, negative_weight=1.0))
    full = bench_stream(s, ("federated-incremental",))["models"]["federated-incremental"]
    delta_s = replace(s, run=replace(s.run, sync="delta"))
    delta = bench_stream(delta_s, ("federated-incremental",))["models"][
        "federated-incremental"]
    key = "rmse" if kind == "explicit" else "hr@10"
    assert delta[key] == full[key] and delta["upload_bytes"] == full["upload_bytes"]
    assert full["download_bytes"] == full["full_table_bytes"]
    assert delta["full_table_bytes"] == full["full_table_bytes"]
    assert delta["download_bytes"] < full["download_bytes"]
    assert delta["tables_checked"] == delta["messages"]
    # Devices in worker processes share their worker's versions (SharedKeeper): same scores.
    two = bench_stream(delta_s, ("federated-incremental",), workers=2)["models"][
        "federated-incremental"]
    assert two[key] == full[key] and two["download_bytes"] == delta["download_bytes"]


def test_delta_messages_carry_rows_and_the_listing_times_of_new_items_only(catalogue_shop):
    seen = []
    s = settings(catalogue_shop, "explicit", tick_events=50)
    fed = FederatedStream(replace(s, run=replace(s.run, sync="delta")),
                          observer=lambda d, m: seen.append((d, m)))
    for tick in fed.ticks[:15]:
        fed.step(tick)
    fed.grid.close()
    deltas = [records.record_to_arrays(m.content[records.ITEMS]) for d, m in seen
              if d == "to-device" and "base" in m.content[records.ITEMS]]
    assert deltas
    listed = fed.timeline.item_listed
    grew = 0
    for arrays in deltas:
        assert set(arrays) == {"ids", "factors", "bias", "static.listed", "base", "version"}
        base_n, n = int(arrays["base"][1]), int(arrays["version"][1])
        np.testing.assert_array_equal(arrays["static.listed"], listed[base_n:n])
        assert set(range(base_n, n)) <= set(arrays["ids"].tolist())
        grew += n > base_n
    assert grew  # the catalogue grew between some device's syncs


def test_a_sync_threshold_sends_fewer_rows_and_devices_hold_the_published_table(
        catalogue_shop):
    """Implicit training nudges many rows; with a threshold the server publishes a row once
    it drifted 5 % from what devices hold. Every device's table is still checked bit for
    bit against the published one, and fewer bytes go down."""
    s = settings(catalogue_shop, "implicit", tick_events=200)
    runs = {}
    for threshold in (0.0, 0.05):
        variant = replace(s, run=replace(s.run, sync="delta", sync_threshold=threshold))
        runs[threshold] = bench_stream(variant, ("federated-incremental",))["models"][
            "federated-incremental"]
    exact, lazy = runs[0.0], runs[0.05]
    assert lazy["tables_checked"] == lazy["messages"] == exact["messages"]
    assert lazy["download_bytes"] < exact["download_bytes"]
    assert lazy["full_table_bytes"] == exact["full_table_bytes"]
    assert lazy["hr@10"] > 0 and lazy["scored"] == exact["scored"]


def test_a_public_negative_pool_keeps_delta_sync_exact_and_moves_fewer_rows(catalogue_shop):
    """Negatives drawn from the round's public pool (a share of the catalogue, one pool
    per few rounds) leave a tick's updates on the users' items and the pool's rows, so
    devices download fewer rows; delta sync still gives the model full sync gives, bit for
    bit, and every patched table is checked."""
    s = settings(catalogue_shop, "implicit", tick_events=200)
    pooled = replace(s.run, sync="delta", negative_pool=0.05, negative_pool_rounds=3)
    runs = {name: bench_stream(replace(s, run=run), ("federated-incremental",))["models"][
        "federated-incremental"] for name, run in (
            ("uniform", replace(s.run, sync="delta")), ("pool", pooled),
            ("pool-full", replace(pooled, sync="full")))}
    uniform, pool, full = runs["uniform"], runs["pool"], runs["pool-full"]
    assert pool["hr@10"] == full["hr@10"] and pool["upload_bytes"] == full["upload_bytes"]
    assert pool["tables_checked"] == pool["messages"] == uniform["messages"]
    after = "download_share_of_full_after_first_contact"
    assert pool[after] < 0.7 * uniform[after], (pool[after], uniform[after])
    assert pool["upload_bytes"] < uniform["upload_bytes"]  # fewer rows named, too
    assert pool["hr@10"] > 0 and pool["scored"] == uniform["scored"]


def test_a_variant_runs_the_federated_models_again_in_the_same_record(shop, tmp_path, capsys):
    """``--variant NAME:KEY=VALUE,...`` runs every federated model again with its settings
    on top of ``--set``, as MODEL+NAME: the same figures as a run of its own."""
    out = tmp_path / "stream.json"
    args = ["bench", "stream", "--dataset", shop, "--kind", "implicit", "--models",
            "federated-incremental,recent-popularity", "--tick-events", "200",
            "--set", "factors=4", "--set", "sync=delta", "--quiet", "--json"]
    assert main([*args, "--variant", "few:negatives=1,lr=0.02", "--out", str(out)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert list(record["models"]) == ["federated-incremental", "federated-incremental+few",
                                      "recent-popularity"]
    few = record["models"]["federated-incremental+few"]
    assert few["variant"]["name"] == "few"
    assert few["variant"]["run"]["negatives"] == 1 and few["variant"]["run"]["lr"] == 0.02
    assert few["variant"]["run"]["sync"] == "delta" and few["variant"]["run"]["factors"] == 4
    alone = tmp_path / "alone.json"
    assert main([*args, "--set", "negatives=1", "--set", "lr=0.02",
                 "--models", "federated-incremental", "--out", str(alone)]) == 0
    own = json.loads(capsys.readouterr().out)["models"]["federated-incremental"]
    for key in ("hr@10", "download_bytes", "full_table_bytes", "upload_bytes"):
        assert few[key] == own[key], key
    assert few["upload_bytes"] != record["models"]["federated-incremental"]["upload_bytes"]


@pytest.mark.parametrize(("spec", "problem"), [
    ("pool", "expected NAME:KEY=VALUE"), (":negative-pool=0.1", "expected NAME"),
    ("pool:", "expected NAME"), ("po ol:negative-pool=0.1", "letters, digits"),
    ("pool:negative-pool=2", "negative"), ("pool:no-such-key=1", "no-such-key")])
def test_a_malformed_variant_is_refused_by_name(shop, tmp_path, spec, problem, capsys):
    with pytest.raises((ValueError, SystemExit)) as info:
        code = main(["bench", "stream", "--dataset", shop, "--kind", "implicit", "--models",
                     "federated-incremental", "--quiet", "--variant", spec,
                     "--out", str(tmp_path / "x.json")])
        raise SystemExit(code)
    text = str(info.value) + capsys.readouterr().err
    assert problem in text


def test_a_prefix_replays_the_first_ticks_exactly_and_scores_no_later_event(shop):
    """``prefix`` (the warm-up share settings are chosen on) stops the clock: every model
    scores exactly the events of the first ticks, and the federated replay's sums over them
    are the full replay's, tick for tick (nothing later leaks back)."""
    full_s = settings(shop, "explicit", tick_events=20)
    part_s = replace(full_s, prefix=0.3)
    timeline = simulated_timeline(shop, True, "")
    ticks = part_s.ticks(timeline)
    assert 0 < len(ticks) < len(full_s.ticks(timeline))
    assert ticks[-1].stop <= 0.3 * len(timeline) < ticks[-1].stop + full_s.tick_events
    models = ("federated-incremental", "centralized-incremental", "online-bias",
              "periodic-retrain")
    record = bench_stream(part_s, models)
    assert record["ticks"] == len(ticks) and record["settings"]["prefix"] == 0.3
    for name in models:
        if name != "periodic-retrain":  # (no model before its first fit)
            assert record["models"][name]["scored"] == ticks[-1].stop, name
    n = ticks[-1].stop  # retrained every 20 % of what is replayed
    assert record["models"]["periodic-retrain"]["fits"] == len(range(int(0.2 * n), n,
                                                                      int(0.2 * n)))
    part = FederatedStream(part_s)
    part.replay()
    whole = FederatedStream(full_s)
    whole.replay()
    for t in range(len(ticks)):
        np.testing.assert_array_equal(part.sums.table[t], whole.sums.table[t])
    for bad in (0.0, -0.2, 1.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="prefix must be in"):
            replace(full_s, prefix=bad)


@pytest.mark.parametrize("bad", ["0", "-0.2", "1.5", "nan", "inf", "a fifth"])
def test_a_bad_prefix_on_the_command_line_is_refused_by_name(shop, tmp_path, bad, capsys):
    out = tmp_path / "x.json"
    with pytest.raises((ValueError, SystemExit)) as info:
        code = main(["bench", "stream", "--dataset", shop, "--kind", "explicit", "--models",
                     "online-bias", "--quiet", "--prefix", bad, "--out", str(out)])
        raise SystemExit(code)
    assert "prefix" in str(info.value) + capsys.readouterr().err
    assert not out.exists()  # refused before any replay, nothing written


@pytest.mark.parametrize("explicit", [True, False])
def test_the_centralized_online_model_moves_items_through_the_server_s_step_rule(explicit):
    """``centralized-incremental`` is the federated model without rounds: its item side takes
    the run's server step rule, each event's move standing for a round's. SGD at 1 is the
    plain online step; Adagrad's first step on a row is lr · move / |move| per coordinate."""
    from fedrec.simulations.models.stream import OnlineMF

    def model(rule: str, lr: float) -> OnlineMF:
        return OnlineMF(3, 6, 4, explicit, lr=0.1, reg=0.01, reg_bias=0.0, negatives=3,
                        seed=5, item_rule=rule, item_rule_lr=lr)

    plain, sgd, ada = model("sgd", 1.0), model("sgd", 1.0), model("adagrad", 0.2)
    assert sgd._rules is None and ada._rules is not None
    q0, b0 = plain.q.copy(), plain.bi.copy()
    for m in (plain, sgd, ada):
        m.learn(1, 2, 4.0, 6)
    assert np.array_equal(plain.q, sgd.q) and np.array_equal(plain.bi, sgd.bi)
    move, bias_move = q0 - plain.q, b0 - plain.bi
    rows = np.flatnonzero((move != 0).any(axis=1))
    assert 2 in rows and len(rows) >= (1 if explicit else 2)
    np.testing.assert_allclose(q0 - ada.q, 0.2 * move / (np.abs(move) + 1e-8), atol=1e-6)
    np.testing.assert_allclose(b0 - ada.bi, 0.2 * bias_move / (np.abs(bias_move) + 1e-8),
                               atol=1e-6)
    own = OnlineMF(3, 6, 4, explicit, lr=0.1, reg=0.01, reg_bias=0.0, negatives=3, seed=5,
                   item_rule="adagrad", item_rule_lr=0.2, bias_rule="sgd", bias_rule_lr=0.5)
    own.learn(1, 2, 4.0, 6)  # the biases' own rule: SGD at 0.5 on the same move
    np.testing.assert_allclose(q0 - own.q, q0 - ada.q, atol=1e-12)
    np.testing.assert_allclose(b0 - own.bi, 0.5 * bias_move, atol=1e-12)
    counted = OnlineMF(3, 6, 4, explicit, lr=0.1, reg=0.01, reg_bias=0.0, negatives=3,
                       seed=5, bias_rule="count", bias_rule_lr=2.0, halving=4.0)
    counted.learn(1, 2, 4.0, 6)  # Count: each row's first move at 2 · 4 / 4
    np.testing.assert_allclose(b0 - counted.bi, 2.0 * bias_move, atol=1e-12)
    counted.learn(0, 2, 4.0, 6)  # item 2's second move: its step at 2 · 4 / 5
    assert counted._rules[1].n[2] == 2
    counted.learn(0, 2, 3.0, 6)  # the same user again: moved, not counted (as the server)
    assert counted._rules[1].n[2] == 2


@pytest.mark.parametrize("kind", ["explicit", "implicit"])
def test_a_freezer_in_every_round_adds_one_to_each_rows_count_and_nothing_to_the_scores(
        shop, kind):
    """An extra device sampled in every round moves every row (``--freezers``): its replies
    pass every check, and the presets' Count rule counts it once per row, so each row's
    count is what the honest devices that moved it give plus at most one (counted round by
    round it would grow by one a round: a frozen model). Its replies claim no event: the
    replay scores the honest devices' events only, as many as without it."""
    s = settings(shop, kind, tick_events=20 if kind == "explicit" else 100)
    honest = FederatedStream(s)
    honest.replay()
    frozen = FederatedStream(s, freezers=1)
    frozen.replay()
    rounds = len(frozen.ticks)
    assert frozen.log[-1]["devices"] == honest.log[-1]["devices"] + 1
    accepted = sum(r["train"]["accepted"] for r in frozen.strategy.history if "train" in r)
    assert accepted == sum(r["devices"] for r in frozen.log)  # every freezer reply taken
    n_honest = honest.strategy.model.state()[0]["bias-rule.n"]
    n_frozen = frozen.strategy.model.state()[0]["bias-rule.n"]
    extra = n_frozen - n_honest  # (counted every round: up to `rounds` a row)
    assert rounds > 5 and set(np.unique(extra)) <= {0.0, 1.0} and (extra == 1).mean() > 0.9
    totals = frozen.sums.totals()
    assert totals["scored"] == honest.sums.totals()["scored"]
    assert kind == "implicit" or totals["scored"] == len(frozen.timeline)  # (first ones)
    with pytest.raises(ValueError, match="freezers run in process, with one worker"):
        FederatedStream(s, freezers=1, workers=2)
    with pytest.raises(ValueError, match="freezers must be a whole number >= 0"):
        FederatedStream(s, freezers=-1)


def test_a_freezers_rows_stay_within_its_norm_after_float32_rounding():
    """A freezer at the server's published bound must be taken, not refused: its rows,
    made in float64 and sent as float32, are never longer than the norm it was given
    (a hair over, every such reply was refused and the run held no attack)."""
    from fedrec.simulations.attacks.stream_freeze import freeze_update

    for norm in (10.0, 1.0, 0.3):
        update = freeze_update(5_000, 16, norm, np.random.default_rng(3))
        rows = np.hstack([update.rows, update.bias[:, None]]).astype(np.float64)
        lengths = np.linalg.norm(rows, axis=1)
        assert (lengths <= norm).all() and lengths.min() > norm * (1 - 1e-5)


def test_budget_holds_a_freezer_moving_every_row_at_the_bound_to_its_share(
        tmp_path_factory):
    """A freezer moving every row of the table as far as ``clip`` lets an honest device's
    longest row move (``--freeze-norm`` at the published bound: clip cuts it to the
    median longest row) passed clip whole. ``budget`` scales its every reply down to
    ``factor`` median replies' energy; the freezer then costs less than half of what it
    cost without. (A catalogue of 600 items: an honest reply moves a few
    dozen rows, its positives and their sampled negatives.)"""
    s = settings(_shop_csv(tmp_path_factory, n_users=80, n_items=600, n_events=3_000,
                           seed=5), "implicit")
    ndcg, scaled = {}, {}
    for freezers in (0, 1):
        for defences in ("clip,coordination", "clip,budget,coordination"):
            run = FederatedStream(replace(s, run=replace(s.run, defences=defences)),
                                  freezers=freezers, freeze_norm=s.run.max_norm)
            run.replay()
            ndcg[freezers, defences] = run.sums.totals(explicit=False)["ndcg@10"]
            scaled[freezers, defences] = [r["train"].get("budget-replies") for r
                                          in run.strategy.history if "train" in r]
    with_budget = "clip,budget,coordination"
    assert len(scaled[1, with_budget]) > 5 and min(scaled[1, with_budget]) >= 1
    honest = ndcg[0, "clip,coordination"]
    # (A small shop's rounds hold about ten devices: the budget trims a few honest replies
    # too, at a small cost.)
    assert ndcg[0, with_budget] >= 0.98 * honest
    lost, kept_lost = honest - ndcg[1, "clip,coordination"], honest - ndcg[1, with_budget]
    assert lost > 0.05 * honest and kept_lost < 0.5 * lost


def test_the_command_runs_freezers_and_refuses_them_where_they_cannot_run(shop, tmp_path,
                                                                          capsys):
    out = tmp_path / "frozen.json"
    code = main(["bench", "stream", "--dataset", shop, "--kind", "explicit", "--models",
                 "federated-incremental,online-bias", "--tick-events", "50", "--set",
                 "factors=4", "--freezers", "2", "--freeze-norm", "0.001", "--quiet",
                 "--out", str(out)])
    assert code == 0
    record = json.loads(out.read_text())
    assert record["freezers"] == {"devices": 2, "norm": 0.001}
    ticks = record["models"]["federated-incremental"]["rounds"]
    honest_messages = FederatedStream(settings(shop, "explicit", tick_events=50)).replay()
    assert record["models"]["federated-incremental"]["scored"] == honest_messages.totals()[
        "scored"]
    assert record["models"]["federated-incremental"]["messages"] >= 2 * ticks
    capsys.readouterr()
    for bad in (["--freezers", "-1"], ["--freezers", "1", "--workers", "2"],
                ["--freezers", "1", "--engines", "ray"],
                ["--freezers", "1", "--freeze-norm", "0"],
                ["--freezers", "1", "--freeze-norm", "-1"],
                ["--freezers", "1", "--freeze-norm", "nan"],
                ["--freezers", "1", "--freeze-norm", "11"]):  # (over max-norm: refused)
        code = main(["bench", "stream", "--dataset", shop, "--kind", "explicit", "--models",
                     "federated-incremental", "--tick-events", "50", "--quiet", "--out",
                     str(tmp_path / "no.json"), *bad])
        assert code != 0 and "freeze" in capsys.readouterr().err, bad
    assert not (tmp_path / "no.json").exists()


def _pair_counts(timeline, history: int) -> np.ndarray:
    """n_ij by its definition: each user's first rating of each item, in time order, paired
    with the user's ``history`` distinct items rated before it."""
    d = timeline.data
    n = np.zeros((timeline.n_items, timeline.n_items))
    for u in range(timeline.n_users):
        events = timeline.user_events(u)
        items = d.item[events].astype(np.int64)
        _, first = np.unique(items, return_index=True)
        order = items[np.sort(first)]
        for t in range(len(order)):
            for s in range(max(0, t - history), t):
                n[order[t], order[s]] += 1
                n[order[s], order[t]] += 1
    return n


def test_the_neighbours_part_replays_federated_and_centralized_beside_mf_alone(shop):
    """With the neighbours part every model still scores every event once; the bench runs
    the incremental models with and without it in the same record; the server's pair
    counts are the definition's (each device's items counted once, whatever it re-rates),
    and no honest reply is refused."""
    s = settings(shop, "explicit", neighbours=5, neighbour_refresh=2, neighbour_history=7,
                 tick_events=20)
    record = bench_stream(s)
    models = record["models"]
    assert {"federated-incremental-mf", "centralized-incremental-mf"} <= set(models)
    for name, m in models.items():
        assert m["scored"] == record["events"], name
        assert np.isfinite(m["rmse"]), name
    assert models["federated-incremental"]["rejected"] == {}
    assert models["federated-incremental"]["rmse"] != models["federated-incremental-mf"]["rmse"]
    assert (models["centralized-incremental"]["rmse"]
            != models["centralized-incremental-mf"]["rmse"])
    fed = FederatedStream(s)
    fed.replay()
    server = fed.strategy.neighbours
    timeline = fed.timeline
    np.testing.assert_array_equal(server.stats.n, _pair_counts(timeline, 7)[
        :server.stats.n_items, :server.stats.n_items])
    d = timeline.data
    distinct = len(np.unique(d.user.astype(np.int64) * timeline.n_items + d.item))
    assert sum(len(v) for v in server.items.values()) == distinct
    assert server.version == 2 * (len(fed.ticks) // 2) and (server.table.ids >= 0).any()
    assert fed.strategy.rejected == {}
    summary = models["federated-incremental"]["neighbours"]
    assert summary["ratings"] == distinct and summary["k"] == 5 and summary["beyond"] == 0
    assert summary["table_bytes"] == 4 * 5 * summary["table_items"]
    assert 0 < summary["neighbours_per_item"] <= 5
    assert "neighbours" not in models["federated-incremental-mf"]


def test_the_neighbours_table_goes_only_to_devices_without_it(shop):
    s = settings(shop, "explicit", neighbours=5, neighbour_refresh=2, tick_events=20)
    every = FederatedStream(s)
    every.strategy.neighbour_acked = _Forgetful()  # (as if no device kept the table)
    every.replay()
    kept = FederatedStream(s)
    kept.replay()
    assert kept.sums.totals() == every.sums.totals()  # the same scores, bit for bit
    assert kept.summary()["download_bytes"] < every.summary()["download_bytes"]


class _Forgetful(dict):
    def __setitem__(self, key, value) -> None:  # acknowledges nothing
        pass


@pytest.mark.parametrize("change, match", [
    ({"kind": "implicit"}, "kind=explicit"),
    ({"run": replace(STREAM_EXPLICIT, factors=4, privacy="dp", server_optimizer="sgd",
                     server_bias_optimizer="sgd", weighting="uniform")},
     "privacy=plain only"),
    ({"neighbours": 10_000}, "neighbours must be"),
    ({"neighbour_refresh": 0}, "neighbour_refresh"),
    ({"neighbour_history": 0}, "neighbour_history"),
])
def test_neighbours_where_they_cannot_run_are_refused_by_name(shop, change, match):
    base = {"dataset": shop, "kind": "explicit", "neighbours": 5,
            "run": replace(STREAM_EXPLICIT, factors=4)}
    with pytest.raises(ValueError, match=match):
        StreamSettings(**{**base, **change})


def test_freezers_alongside_the_neighbours_part_are_taken_and_add_no_pairs(shop):
    s = settings(shop, "explicit", neighbours=5, tick_events=50)
    honest, frozen = FederatedStream(s), FederatedStream(s, freezers=1)
    honest.replay()
    frozen.replay()
    accepted = sum(r["train"]["accepted"] for r in frozen.strategy.history if "train" in r)
    assert accepted == sum(r["devices"] for r in frozen.log)
    np.testing.assert_array_equal(frozen.strategy.neighbours.stats.n,
                                  honest.strategy.neighbours.stats.n)


def test_the_command_turns_the_preset_part_off_on_a_catalogue_too_large_for_it(
        shop, tmp_path, capsys, monkeypatch):
    import fedrec.simulations.cli.main as cli

    out = tmp_path / "s.json"
    args = ["bench", "stream", "--dataset", shop, "--kind", "explicit", "--models",
            "federated-incremental", "--tick-events", "200", "--set", "factors=4",
            "--quiet", "--out", str(out)]
    assert main(args) == 0
    assert json.loads(out.read_text())["settings"]["neighbours"] == 50  # the preset's
    monkeypatch.setattr(cli.neighbours, "MAX_ITEMS", 10)
    capsys.readouterr()
    assert main(args) == 0
    assert "neighbours off" in capsys.readouterr().err
    assert json.loads(out.read_text())["settings"]["neighbours"] == 0
    assert main([*args, "--neighbours", "3"]) != 0  # asked for, past the limit: refused
    assert "set neighbours=0" in capsys.readouterr().err
    monkeypatch.undo()
    assert main([*args, "--neighbours", "3"]) == 0  # asked for: the catalogue fits
    assert json.loads(out.read_text())["settings"]["neighbours"] == 3


def test_the_neighbours_part_replays_alike_with_delta_sync_and_worker_processes(
        catalogue_shop):
    """The table and each device's residuals ride beside the item table: with delta sync,
    and with devices in two worker processes, every event scores as with full sync in
    one process, and the server's sums are the same."""
    s = settings(catalogue_shop, "explicit", tick_events=50, neighbours=5,
                 neighbour_refresh=2)
    full = FederatedStream(s)
    full.replay()
    for variant, workers in ((replace(s, run=replace(s.run, sync="delta")), 1), (s, 2)):
        other = FederatedStream(variant, workers=workers)
        other.replay()
        assert other.sums.totals() == full.sums.totals(), (variant.run.sync, workers)
        np.testing.assert_array_equal(other.strategy.neighbours.stats.sxy,
                                      full.strategy.neighbours.stats.sxy)
        assert other.strategy.rejected == {}


def test_a_catalogue_too_large_for_the_neighbours_part_is_refused_by_name_in_code(
        shop, monkeypatch):
    """In code (no command to turn the preset's part off), a catalogue past the dense
    sums' limit is refused before any model runs, naming the fix."""
    import fedrec.common.neighbours as common_neighbours

    monkeypatch.setattr(common_neighbours, "MAX_ITEMS", 10)
    s = settings(shop, "explicit", neighbours=5)
    with pytest.raises(ValueError, match="set neighbours=0"):
        FederatedStream(s)
    with pytest.raises(ValueError, match="set neighbours=0"):
        bench_stream(s, ("online-bias",))
    bench_stream(replace(s, neighbours=0), ("online-bias",))


def test_the_centralized_online_model_counts_each_users_item_once_in_its_neighbour_sums():
    """A re-rated item keeps its latest residual for scoring but adds no pairs again (as a
    device sends each item once); the part is for ratings only."""
    from fedrec.simulations.models.stream import OnlineMF

    model = OnlineMF(2, 4, 2, explicit=True, lr=0.05, reg=0.0, reg_bias=0.0, neighbours=2)
    for u, i, v in ((0, 0, 5.0), (0, 1, 1.0), (0, 0, 2.0), (1, 0, 4.0), (1, 1, 4.0)):
        model.learn(u, i, v, 4, width=4.0)
    assert model.stats.n[0, 1] == 2 and model.order[0] == [0, 1]
    assert model.residual[0, 0] * 4096 == round(model.residual[0, 0] * 4096)
    assert model.residual[0, 0] < 0  # (the re-rating's, 2 stars)
    with pytest.raises(ValueError, match="ratings model"):
        OnlineMF(2, 4, 2, explicit=False, lr=0.05, reg=0.0, reg_bias=0.0, neighbours=2)


def test_a_device_refuses_a_round_without_the_table_version_it_was_told(shop):
    """A device told the round's table version that it was not sent and does not hold
    (it lost its state, or the server's record of it is wrong) replies with an error
    naming it (the server then sends the table again), and one sent a damaged table
    refuses it by field; without the part, no residuals are kept at all."""
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

    from fedrec.client import app as device_app
    from fedrec.common.neighbours import RECORD
    from fedrec.common.round_config import RoundConfig

    def message(record: dict | None) -> Message:
        content = RecordDict({"config": ConfigRecord({})})
        if record is not None:
            content[RECORD] = records.arrays_to_record(record)
        return Message(content, dst_node_id=1, message_type="train")

    from fedrec.simulations.engines.inprocess import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(),
                      run_config={})
    rc = RoundConfig(neighbours_version=10)
    good = {"ids": np.array([[1], [0]], np.int16), "sims": np.array([[0.5], [0.5]],
                                                                  np.float16)}
    with pytest.raises(ValueError, match=r"version 10.* not sent and none is kept"):
        device_app._neighbour_table(message(None), rc, context, 2)
    assert device_app._neighbour_table(message(good), rc, context, 2).n_items == 2
    assert device_app._neighbour_table(message(None), rc, context, 2).n_items == 2  # kept
    with pytest.raises(ValueError, match="kept table is version 10, the round's 20"):
        device_app._neighbour_table(message(None), RoundConfig(neighbours_version=20),
                                    context, 2)
    with pytest.raises(ValueError, match=r"neighbours\.ids"):
        device_app._neighbour_table(message({**good, "ids": good["ids"] + 5}), rc, context,
                                    2)
    assert device_app._neighbour_table(message(good), RoundConfig(), context, 2) is None
    assert isinstance(context.state[device_app.NEIGHBOUR_TABLE], ArrayRecord)
    plain = FederatedStream(settings(shop, "explicit", tick_events=50))
    plain.replay()
    assert not any(device_app.RESIDUALS in c.state.array_records
                   for c in plain.grid.contexts.values())


@pytest.mark.parametrize("bad", ["-1", "201", "1.5", "x"])
def test_a_bad_neighbours_value_on_the_command_line_is_refused_by_name(shop, tmp_path, bad,
                                                                       capsys):
    out = tmp_path / "no.json"
    try:
        code = main(["bench", "stream", "--dataset", shop, "--kind", "explicit", "--models",
                     "federated-incremental", "--quiet", "--out", str(out), "--neighbours",
                     bad])
    except SystemExit as exc:  # (argparse: not a whole number)
        code = exc.code
    assert code != 0 and "neighbours" in capsys.readouterr().err
    assert not out.exists()
