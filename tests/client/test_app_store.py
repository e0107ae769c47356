"""fedrec's ClientApp on a real device: it trains from the encrypted store the edge app
records into, and leaves the synced table and the user vector there for the app."""

from __future__ import annotations

import threading

import numpy as np
from flwr.app import Context, Message, MessageType, RecordDict

from fedrec.client import app as client_app
from fedrec.client.edge import EdgeClient
from fedrec.client.store import DeviceStore
from fedrec.common import records
from fedrec.common.params import ItemParams
from fedrec.common.settings import RunSettings
from fedrec.server.item_model import ItemModel
from fedrec.server.strategy import FedRec
from fedrec.simulations.engines.inprocess import TaskIdentity

KEY = bytes(range(32))


def _setup(tmp_path, n_items=50):
    key_file = tmp_path / "device.key"
    key_file.write_text(KEY.hex())
    context = Context(run_id=1, node_id=77, node_config={
        "store": str(tmp_path / "device.db"), "store-key-file": str(key_file)},
        state=RecordDict(), run_config={})
    settings = RunSettings(dataset="synthetic", factors=6, negatives=2)
    model = ItemModel(ItemParams.init(n_items, 6, np.random.default_rng(0), 0.1), "adam", 0.05)
    strategy = FedRec(model, settings.train_config())
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    return context, settings, strategy


def _train_message(strategy: FedRec, server_round: int) -> Message:
    config = strategy.round_config(server_round)
    config["server-round"] = server_round
    return Message(RecordDict({records.ITEMS: strategy.items_record(),
                               records.CONFIG: config}),
                   dst_node_id=77, message_type=MessageType.TRAIN)


def test_the_client_app_trains_from_the_store_and_leaves_table_and_user_for_the_app(
        tmp_path):
    context, settings, strategy = _setup(tmp_path)
    with DeviceStore(tmp_path / "device.db", key=KEY, create=True) as store:
        app = EdgeClient(store)
        for item in (3, 8, 13, 21):
            app.record(item, "purchase")
        app.record(30, "view")
    reply = client_app.train(_train_message(strategy, 1), context, settings.to_run_config())
    update = records.record_to_arrays(reply.content[records.UPDATE])
    assert {3, 8, 13, 21, 30} <= set(update["ids"].tolist())  # trained on the store's events
    with DeviceStore(tmp_path / "device.db", key=KEY, create=True) as store:
        app = EdgeClient(store)
        np.testing.assert_array_equal(app.factors, strategy.model.params.factors)
        assert app.user is not None and len(app.user) == 7
        assert len(app.recommend(k=5).items) == 5
    assert records.USER not in context.state.array_records  # the store holds it, not Flower


def test_the_app_records_while_the_node_trains(tmp_path):
    """Two connections to one store at once (the app's and the SuperNode's): every event
    the app records is kept, and training runs to the end."""
    context, settings, strategy = _setup(tmp_path, n_items=400)
    with DeviceStore(tmp_path / "device.db", key=KEY, create=True) as store:
        EdgeClient(store).record(1, "purchase")
    errors: list[BaseException] = []

    def record_many() -> None:
        try:
            with DeviceStore(tmp_path / "device.db", key=KEY, create=True) as store:
                app = EdgeClient(store)
                for i in range(60):
                    app.record(2 + i, "view")
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    thread = threading.Thread(target=record_many)
    thread.start()
    replies = [client_app.train(_train_message(strategy, r), context,
                                settings.to_run_config()) for r in range(1, 4)]
    thread.join(timeout=120)
    assert not errors and not thread.is_alive()
    assert all(not r.has_error() for r in replies)
    with DeviceStore(tmp_path / "device.db", key=KEY, create=True) as store:
        assert len(store) == 61


def test_a_real_device_keeps_its_table_in_the_store_for_delta_sync(tmp_path):
    from fedrec.server.aggregate import Aggregate

    context, settings, strategy = _setup(tmp_path)
    strategy.sync = "delta"
    with DeviceStore(tmp_path / "device.db", key=KEY, create=True) as store:
        EdgeClient(store).record(4, "purchase")
    first = client_app.train(_delta_message(strategy, 77, 1), context, settings.to_run_config())
    assert not first.has_error()
    strategy.acked[77] = strategy.pending.pop(77)
    rng = np.random.default_rng(1)
    strategy.model.apply(Aggregate(np.array([2, 9]), rng.normal(size=(2, 6)),
                                   rng.normal(size=2), np.ones(2), np.ones(2)), 1)
    second = _delta_message(strategy, 77, 2)
    assert "base" in second.content[records.ITEMS]
    assert not client_app.train(second, context, settings.to_run_config()).has_error()
    with DeviceStore(tmp_path / "device.db", key=KEY, create=True) as store:
        np.testing.assert_array_equal(EdgeClient(store).factors, strategy.model.params.factors)


def _delta_message(strategy: FedRec, node: int, server_round: int) -> Message:
    config = strategy.round_config(server_round)
    config["server-round"] = server_round
    return strategy.train_messages(config, [node])[0]


def test_item_categories_reach_the_apps_category_filter(tmp_path):
    """The server sends each item's category with the table (whole, then in deltas for new
    rows only); the store keeps it, and the app filters by it."""
    from fedrec.server.aggregate import Aggregate

    context, settings, strategy = _setup(tmp_path)
    categories = (np.arange(50) % 4).astype(np.int16)
    strategy.static["category"] = categories
    strategy.sync = "delta"
    with DeviceStore(tmp_path / "device.db", key=KEY, create=True) as store:
        EdgeClient(store).record(4, "purchase")
    assert not client_app.train(_delta_message(strategy, 77, 1), context,
                                settings.to_run_config()).has_error()
    strategy.acked[77] = strategy.pending.pop(77)
    strategy.model.apply(Aggregate(np.array([2]), np.ones((1, 6)), np.ones(1), np.ones(1),
                                   np.ones(1)), 1)
    strategy.model.grow(np.zeros((2, 6)), np.zeros(2), 0)  # two new listings, category 1
    strategy.static["category"] = np.r_[categories, [1, 1]].astype(np.int16)
    delta = _delta_message(strategy, 77, 2)
    assert records.record_to_arrays(delta.content[records.ITEMS])[
        "static.category"].tolist() == [1, 1]
    assert not client_app.train(delta, context, settings.to_run_config()).has_error()
    with DeviceStore(tmp_path / "device.db", key=KEY, create=True) as store:
        app = EdgeClient(store)
        np.testing.assert_array_equal(app.categories, strategy.static["category"])
        top = app.recommend(k=20, category=1)
        assert len(top.items) == 13 + 2 and (app.categories[top.items] == 1).all()
        assert {50, 51} <= set(top.items.tolist())


def test_events_beyond_the_synced_table_wait_in_the_store_and_training_goes_on(tmp_path):
    context, settings, strategy = _setup(tmp_path, n_items=20)
    with DeviceStore(tmp_path / "device.db", key=KEY, create=True) as store:
        app = EdgeClient(store)  # before its first sync, it cannot know the catalogue
        for item in (3, 8, 450):
            app.record(item, "purchase")
    reply = client_app.train(_train_message(strategy, 1), context, settings.to_run_config())
    assert not reply.has_error()
    ids = records.record_to_arrays(reply.content[records.UPDATE])["ids"]
    assert {3, 8} <= set(ids.tolist()) and ids.max() < 20
    with DeviceStore(tmp_path / "device.db", key=KEY) as store:
        assert store.events()["item"].tolist() == [3, 8, 450]  # nothing lost


def test_a_mistyped_store_path_is_an_error_reply_not_a_new_store(tmp_path):
    import pytest

    from fedrec.client.store import StoreNotFoundError

    context, settings, strategy = _setup(tmp_path)
    context.node_config["store"] = str(tmp_path / "devcie.db")
    with pytest.raises(StoreNotFoundError, match="no store here"):
        client_app.train(_train_message(strategy, 1), context, settings.to_run_config())
    assert not (tmp_path / "devcie.db").exists()


def test_a_secagg_device_holds_rows_outside_the_block_in_its_store(tmp_path):
    """secagg with a block of 25 of 50 rows: the dense vector covers the block only, and
    the device keeps its updates to the other rows in its store (not in Flower's state)
    until their block comes up; then they leave the store."""
    from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.compat.common import recorddict_compat as compat

    from fedrec.client import held

    context, settings, strategy = _setup(tmp_path)
    with DeviceStore(tmp_path / "device.db", key=KEY, create=True) as store:
        app = EdgeClient(store)
        for item in (3, 8, 30, 40):
            app.record(item, "purchase")
    p = strategy.model.params

    def train(server_round: int, start: int) -> list[np.ndarray]:
        config = {**strategy.round_config(server_round), "privacy": "secagg",
                  "server-round": server_round, "secagg-weighting": "uniform",
                  "secagg-cap": 10.0, "secagg-block-start": start, "secagg-block-size": 25}
        ins = FitIns(ndarrays_to_parameters([p.factors, p.bias]), config)
        msg = Message(compat.fitins_to_recorddict(ins, keep_input=True), dst_node_id=77,
                      message_type=MessageType.TRAIN)
        reply = client_app.train(msg, context, settings.to_run_config())
        return parameters_to_ndarrays(compat.recorddict_to_fitres(reply.content,
                                                                  keep_input=True).parameters)

    def stored() -> np.ndarray:
        with DeviceStore(tmp_path / "device.db", key=KEY) as store:
            return held.Held.from_array(store.get(held.KEY), 6).update.ids

    first = train(1, 0)
    assert [len(a) for a in first] == [25, 25, 25, 25]
    touched = np.flatnonzero(first[3])
    assert {3, 8} <= set(touched.tolist()) and touched.max() < 25
    kept = stored()
    assert {30, 40} <= set(kept.tolist()) and kept.min() >= 25
    assert held.KEY not in context.state.array_records
    second = train(2, 25)
    assert {30, 40} <= set((np.flatnonzero(second[3]) + 25).tolist())
    assert stored().max() < 25  # what the second block covered left the store


def test_a_secagg_block_outside_the_table_is_refused_and_the_store_unchanged(tmp_path):
    """A round naming a block that does not fit the table it sent (negative, past the end,
    empty, larger than the table) is an error naming the block; the device trains nothing
    and its store (user vector, held rows) is as before."""
    import pytest
    from flwr.common import FitIns, ndarrays_to_parameters
    from flwr.compat.common import recorddict_compat as compat

    from fedrec.client import held

    context, settings, strategy = _setup(tmp_path)
    with DeviceStore(tmp_path / "device.db", key=KEY, create=True) as store:
        EdgeClient(store).record(30, "purchase")
    p = strategy.model.params
    for start, size in ((-1, 10), (50, 10), (0, 0), (0, 51), (10**12, 5)):
        config = {**strategy.round_config(1), "privacy": "secagg", "server-round": 1,
                  "secagg-weighting": "uniform", "secagg-cap": 10.0,
                  "secagg-block-start": start, "secagg-block-size": size}
        ins = FitIns(ndarrays_to_parameters([p.factors, p.bias]), config)
        msg = Message(compat.fitins_to_recorddict(ins, keep_input=True), dst_node_id=77,
                      message_type=MessageType.TRAIN)
        with pytest.raises(ValueError, match="does not fit a catalogue of 50"):
            client_app.train(msg, context, settings.to_run_config())
        with DeviceStore(tmp_path / "device.db", key=KEY) as store:
            assert store.get("user") is None and store.get(held.KEY) is None
