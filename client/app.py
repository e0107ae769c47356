"""fedrec's Flower ClientApp: a thin wrapper around :class:`fedrec.client.device.Device`.

In simulation a node's ``partition-id`` names the user whose events it holds, and the
device's private user vector lives in the node's ``context.state``. On a real device the
SuperNode is started with ``--node-config "store=PATH store-key-file=PATH"``: events, user
vector and the synced item table then live in the device's encrypted store
(:class:`~fedrec.client.store.DeviceStore`), the same file the app's
:class:`~fedrec.client.edge.EdgeClient` records into, so both share one source of truth.
The user vector is never put in a reply.
``app`` reads the run's settings from ``context.run_config``; :func:`build_client_app` binds
them explicitly instead (Flower's Python simulation entry point passes no run config).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import (
    Code,
    EvaluateRes,
    FitRes,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat

from fedrec.client import ddp, edge, held, layers
from fedrec.client import pairs as pairs_device
from fedrec.client.device import Device, UserState
from fedrec.client.held import Held
from fedrec.client.rows import device_store, local_rows
from fedrec.client.store import DeviceStore
from fedrec.client.stream import Cursor, StreamDevice
from fedrec.client.sync import (
    HeldTable,
    StateKeeper,
    StoreKeeper,
    TableKeeper,
    store_state,
    synced_table,
)
from fedrec.common import neighbours, pairs, privacy, records
from fedrec.common.negatives import negative_pool
from fedrec.common.partition import (
    UserRows,
    simulated_segments,
    simulated_timeline,
)
from fedrec.common.ranking import HEAD_KEY, unpack_head
from fedrec.common.round_config import RoundConfig
from fedrec.common.schema import ItemUpdate, TrainConfig
from fedrec.common.secagg import Block, densify, mean_vector
from fedrec.common.settings import RunSettings

STREAM = "stream"  # context.state: ConfigRecord {seen, trained}, the device's timeline cursor
RESIDUALS = "neighbour-residuals"  # context.state: ArrayRecord {values}, one per event seen
NEIGHBOUR_TABLE = "neighbour-table"  # context.state: ArrayRecord {ids, sims, version}


def within(rows: UserRows, n_items: int) -> UserRows:
    """The rows whose items the synced table has: a device's store may hold events for
    items listed after its table (or recorded before its first sync), which it can neither
    train nor score on yet; they stay stored for later rounds."""
    train, test = rows.train_items < n_items, rows.test_items < n_items
    if train.all() and test.all():
        return rows
    return UserRows(rows.train_items[train], rows.train_values[train],
                    rows.test_items[test], rows.test_values[test])


def _load_user(context: Context, store: DeviceStore | None) -> UserState | None:
    """The device's private vector from its store or its ``context.state``, if it has one."""
    if store is not None:
        vector = store.get(edge.USER)
    elif records.USER in context.state.array_records:
        vector = records.array_view(context.state[records.USER]["vector"])
    else:
        return None
    return None if vector is None else UserState(vector[:-1].copy(), float(vector[-1]))


def _save(context: Context, device: Device | StreamDevice, store: DeviceStore | None,
          table: HeldTable | None = None, mean: float = 0.0, kept: Held | None = None,
          bonus: float = 0.0, similarity: float = 0.0) -> None:
    """Keep the user vector on the device: in simulation in the node's ``context.state``;
    on a real device in its store, with the item table just synced (and μ, and how to
    rank: the head it came with, the round's tail ``bonus`` and ``similarity``) and the
    updates it holds back (``kept``) in the same transaction, for the app to recommend
    with."""
    if device.user is None:
        return
    vector = np.append(device.user.factors, np.float32(device.user.bias))
    if store is None:
        context.state[records.USER] = records.arrays_to_record({"vector": vector})
        if kept is not None:
            context.state[held.KEY] = records.arrays_to_record({"rows": kept.to_array()})
        return
    state = {edge.USER: vector}
    if kept is not None:
        state[held.KEY] = kept.to_array()
    if table is not None:
        state.update({**edge.table_state(table.factors, table.bias, mean,
                                         table.static.get("category"),
                                         edge.catalogue_state(table.static, table.extras)),
                      **store_state(table)})
        if edge.HEAD not in state:  # (no head sent: none kept from an earlier table)
            state[edge.HEAD] = np.zeros(0, np.uint8)
        state[edge.TAIL_BONUS] = np.array([bonus], dtype=np.float64)
        state[edge.SIMILARITY] = np.array([similarity], dtype=np.float64)
    store.put_many(state)


def round_pool(config: TrainConfig, rc: RoundConfig, n_items: int) -> np.ndarray | None:
    """The round's public negative pool (None: the whole catalogue), named by the seed
    the server sent with the round."""
    if config.negative_pool >= 1:
        return None
    return negative_pool(config.negative_pool, int(rc.need("negative_pool_seed")), n_items)


def _seed(rc: RoundConfig, context: Context) -> int:
    pid = int(context.node_config.get("partition-id", context.node_id))
    return (rc.seed or 0) * 1_000_003 + pid * 10_007 + (rc.server_round or 0)


@dataclass(frozen=True)
class Prepared:
    """A message decoded and the device restored: what every handler starts from."""

    config: TrainConfig
    extra: dict
    round: RoundConfig
    table: HeldTable
    rows: UserRows
    device: Device

    @property
    def factors(self) -> np.ndarray:
        return self.table.factors

    @property
    def bias(self) -> np.ndarray:
        return self.table.bias


def _keeper(store: DeviceStore | None, keeper: TableKeeper | None) -> TableKeeper:
    """Where this device keeps its synced table: its store on a real device."""
    return StoreKeeper(store) if store is not None else keeper or StateKeeper()


def _prepare(content: RecordDict, context: Context, run_config: Mapping,
             store: DeviceStore | None, keeper: TableKeeper | None = None,
             rc: RoundConfig | None = None) -> Prepared:
    """Decode the server's message content (the table, patched in delta sync) and restore
    this node's device; ``rc``: the round config when the caller has parsed it already."""
    config, extra = records.record_to_config(content[records.CONFIG])
    rc = RoundConfig.parse(extra) if rc is None else rc
    table = synced_table(content[records.ITEMS], context, _keeper(store, keeper))
    rows = within(local_rows(context, run_config, store, config.explicit), table.n_items
                  ).holding_out(config.validation_events)
    device = Device(rows.train_items, rows.train_values, seed=_seed(rc, context),
                    state=_load_user(context, store))
    return Prepared(config, extra, rc, table, rows, device)


def _stream_train(msg: Message, rc: RoundConfig, context: Context, run_config: Mapping,
                  keeper: TableKeeper | None = None) -> Message:
    """A round of a timeline replay: take the events before the server's ``until`` (scoring
    each before learning from it), train the mode's events, reply with the update, the
    training metrics and the pooled prequential sums."""
    started = time.perf_counter()
    config, _ = records.record_to_config(msg.content[records.CONFIG])
    table = synced_table(msg.content[records.ITEMS], context, keeper)
    factors, bias = table.factors, table.bias
    c = run_config
    timeline = simulated_timeline(str(c.get("dataset", RunSettings.dataset)),
                                  config.explicit,
                                  str(c.get("data-dir", RunSettings.data_dir)))
    events = timeline.user_events(int(context.node_config["partition-id"]))
    d = timeline.data
    cursor = Cursor()
    if STREAM in context.state.config_records:
        saved = context.state[STREAM]
        cursor = Cursor(int(saved["seen"]), int(saved["trained"]))
    table_n = _neighbour_table(msg, rc, context, len(factors))
    residuals = None
    if RESIDUALS in context.state.array_records:
        residuals = records.array_view(context.state[RESIDUALS]["values"])
    device = StreamDevice(d.item[events], d.value[events], d.timestamp[events], events,
                          _load_user(context, None), cursor, seed=_seed(rc, context),
                          residuals=residuals)
    mean = float(rc.need("mean"))
    seen_before = cursor.seen
    pool = None if config.explicit else round_pool(config, rc, len(factors))
    segments = simulated_segments(str(c.get("dataset", RunSettings.dataset)),
                                  config.explicit, str(c.get("data-dir", RunSettings.data_dir)))
    scores = device.arrive(int(rc.need("until")), factors, bias, mean, config,
                           table.static.get("listed"),
                           7.0 if rc.new_days is None else rc.new_days, rc.rating_range, pool,
                           segments, table_n)
    new = slice(seen_before, device.cursor.seen)
    rating_sum = float(device.values[new].sum()) if config.explicit else 0.0
    update, metrics = device.train(factors, bias, mean, config, str(rc.need("stream_mode")),
                                   int(rc.need("buffer")),
                                   1.0 if rc.replay is None else rc.replay, pool)
    _save(context, device, None)  # (timeline replays are simulated: no device store)
    context.state[STREAM] = ConfigRecord({"seen": device.cursor.seen,
                                          "trained": device.cursor.trained})
    if table_n is not None:
        context.state[RESIDUALS] = records.arrays_to_record({"values": device.residuals})
    # μ is pooled from sums of the ratings learned this round (aggregate-only, as `query`).
    metrics = {**metrics, **scores, "rating-sum": rating_sum,
               "rating-count": float(new.stop - new.start),
               "device-s": time.perf_counter() - started}
    content = RecordDict({records.UPDATE: records.update_to_record(update),
                          records.METRICS: records.metrics_to_record(metrics)})
    if table_n is not None:
        content[neighbours.RECORD] = records.arrays_to_record(device.contribution())
    return Message(content, reply_to=msg)


def _neighbour_table(msg: Message, rc: RoundConfig, context: Context, n_items: int
                     ) -> neighbours.NeighbourTable | None:
    """The neighbours part's table (:mod:`fedrec.common.neighbours`) when the run has
    the part: the one the message brings (kept in ``context.state``), or else the one
    kept, which must be the round's version (ValueError otherwise: the error reply makes
    the server send it again)."""
    if rc.neighbours_version is None:
        return None
    if neighbours.RECORD in msg.content.array_records:
        arrays = records.record_to_arrays(msg.content[neighbours.RECORD])
        table = neighbours.NeighbourTable.from_arrays(arrays, n_items)
        context.state[NEIGHBOUR_TABLE] = records.arrays_to_record(
            {**table.arrays(), "version": np.array([rc.neighbours_version], np.int64)})
        return table
    if NEIGHBOUR_TABLE not in context.state.array_records:
        raise ValueError(f"neighbours: the round's table (version "
                         f"{rc.neighbours_version}) was not sent and none is kept")
    kept = records.record_to_arrays(context.state[NEIGHBOUR_TABLE])
    if int(kept["version"][0]) != rc.neighbours_version:
        raise ValueError(f"neighbours: the kept table is version {int(kept['version'][0])}, "
                         f"the round's {rc.neighbours_version}")
    return neighbours.NeighbourTable.from_arrays(kept, n_items)


def from_legacy(msg: Message, kind: str) -> RecordDict:
    """A legacy ``fitins``/``evaluateins`` message's content (the secagg mode's workflow)
    as fedrec's own records: the table as ``items``, the config dict as ``config``."""
    ins = (compat.recorddict_to_fitins(msg.content, keep_input=True) if kind == "fit"
           else compat.recorddict_to_evaluateins(msg.content, keep_input=True))
    factors, bias = parameters_to_ndarrays(ins.parameters)
    return RecordDict({records.ITEMS: records.items_to_record(factors, bias),
                       records.CONFIG: ConfigRecord(dict(ins.config))})


def _refuse_diverged(update: ItemUpdate, device: Device) -> None:
    """Local training that diverged (an item table grown too large, a learning rate too
    high) becomes an error reply, and the device keeps its last good state."""
    if not (np.isfinite(update.rows).all() and np.isfinite(device.user.factors).all()):
        raise FloatingPointError("local training diverged (non-finite values)")


def _held(context: Context, store: DeviceStore | None, k: int) -> Held:
    """The updates this device holds back for later blocks (:mod:`fedrec.client.held`)."""
    if store is not None:
        return Held.from_array(store.get(held.KEY), k)
    if held.KEY not in context.state.array_records:
        return Held.empty(k)
    return Held.from_array(records.array_view(context.state[held.KEY]["rows"]), k)


def _secagg_train(msg: Message, rc: RoundConfig, context: Context, run_config: Mapping
                  ) -> Message:
    """secagg mode: train as usual, reply with the dense vector (:func:`densify`) that
    Flower's ``secaggplus_mod`` masks before it leaves the device; no per-device metrics.
    For the mean query, the two-value vector of :func:`mean_vector` instead."""
    if rc.secagg_query == "mean":
        with device_store(context) as store:
            rows = local_rows(context, run_config, store, explicit=True)
        vector = mean_vector(rows.train_values, rc.rating_range)
    else:
        with device_store(context) as store:
            p = _prepare(from_legacy(msg, "fit"), context, run_config, store, rc=rc)
            n = len(p.factors)
            # Checked before any work: a block outside the table is refused by name.
            block = Block(rc.secagg_block_start or 0,
                          n if rc.secagg_block_size is None else rc.secagg_block_size, n)
            update, _ = p.device.train(p.factors, p.bias, float(p.round.need("mean")),
                                       p.config)
            _refuse_diverged(update, p.device)
            kept = None
            if not block.whole:  # rows outside the block wait for theirs
                update, kept = _held(context, store, p.factors.shape[1]).add(update).take(block)
            _save(context, p.device, store, kept=kept)
        vector = densify(update, n, str(p.round.need("secagg_weighting")),
                         float(p.round.need("secagg_cap")), block)
    return secagg_reply(msg, vector)


def secagg_reply(msg: Message, vector: list[np.ndarray]) -> Message:
    """The secagg train reply: ``vector`` as the legacy FitRes ``secaggplus_mod`` masks."""
    res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(vector), 1, {})
    return Message(compat.fitres_to_recorddict(res, keep_input=True), reply_to=msg)


def _ddp_train(msg: Message, rc: RoundConfig, context: Context, run_config: Mapping
               ) -> Message:
    """secagg+dp mode: the round's vector with this device's noise share
    (:mod:`fedrec.client.ddp`); the new user vector stays on the device."""
    ins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    with device_store(context) as store:
        rows = local_rows(context, run_config, store, explicit=bool(rc.ddp_ratings))
        partition = (None if store is not None or "partition-id" not in context.node_config
                     else int(context.node_config["partition-id"]))
        vector, user = ddp.vector(ins.config, parameters_to_ndarrays(ins.parameters),
                                  rows.train_items, rows.train_values, partition)
        if user is not None:
            state = UserState(user[0].astype(np.float32), float(user[1]))
            _save(context, Device(rows.train_items, state=state), store)
    res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([vector]), 1, {})
    return Message(compat.fitres_to_recorddict(res, keep_input=True), reply_to=msg)


def _round_of(msg: Message) -> RoundConfig:
    """The round config of a train message, fedrec's own or a legacy ``fitins``."""
    if "fitins.config" in msg.content.config_records:
        extra = dict(msg.content.config_records["fitins.config"])
    else:
        _, extra = records.record_to_config(msg.content[records.CONFIG])
    return RoundConfig.parse({k: v for k, v in extra.items()
                              if k not in TrainConfig.__dataclass_fields__})


# How each runner's train messages are answered (fedrec.common.privacy.Mode.runner).
def train(msg: Message, context: Context, run_config: Mapping,
          keeper: TableKeeper | None = None) -> Message:
    """Local training, as the round's privacy mode asks: the sparse modes reply with the
    item update and training metrics, after the mode's layers (:mod:`fedrec.client.layers`);
    the secure-sum modes with the vector SecAgg+ masks. ``keeper`` keeps the synced table
    in delta sync (default: ``context.state``; a real device's store when it has one)."""
    rc = _round_of(msg)
    mode = privacy.mode(rc.privacy)
    legacy = "fitins.parameters" in msg.content.array_records
    if (mode.runner != "fedrec") != legacy:
        raise ValueError(f"a {'legacy' if legacy else 'sparse'} train message in "
                         f"privacy={mode.name}")
    if mode.runner == "secagg":
        return _secagg_train(msg, rc, context, run_config)
    if mode.runner == "secagg+dp":
        return _ddp_train(msg, rc, context, run_config)
    if rc.until is not None:
        return _stream_train(msg, rc, context, run_config, keeper)
    items = msg.content[records.ITEMS]
    named = records.array_view(items["named"]) if "named" in items else None
    with device_store(context) as store:
        p = _prepare(msg.content, context, run_config, store, keeper, rc)
        mean = float(p.round.need("mean"))
        update, metrics = p.device.train(
            p.factors, p.bias, mean, p.config, rating_range=p.round.rating_range,
            pool=round_pool(p.config, p.round, len(p.factors)),
            **layers.train_arguments(mode, p.round, named))
        _refuse_diverged(update, p.device)
        _save(context, p.device, store, p.table, mean, bonus=p.round.tail_bonus or 0.0,
              similarity=p.round.similarity or 0.0)
    update, metrics = layers.finish(mode, update, metrics, p.round,
                                    np.random.default_rng([_seed(p.round, context), 7]))
    return Message(RecordDict({records.UPDATE: records.update_to_record(update),
                               records.METRICS: records.metrics_to_record(metrics)}),
                   reply_to=msg)


def evaluate(msg: Message, context: Context, run_config: Mapping) -> Message:
    """Score this device's held-out events; replies with aggregatable metrics only."""
    return evaluation_reply(msg, _evaluate(evaluation_content(msg), context, run_config))


def _legacy_evaluation(msg: Message) -> bool:
    return "evaluateins.parameters" in msg.content.array_records  # secagg's workflow


def evaluation_content(msg: Message) -> RecordDict:
    """An evaluation message's content as fedrec's records (secagg's legacy one
    converted)."""
    return from_legacy(msg, "evaluate") if _legacy_evaluation(msg) else msg.content


def evaluation_reply(msg: Message, metrics: dict[str, float]) -> Message:
    """The reply carrying ``metrics``, in the form the message asked (legacy in secagg)."""
    if _legacy_evaluation(msg):
        res = EvaluateRes(Status(Code.OK, ""), 0.0, 1, metrics)
        return Message(compat.evaluateres_to_recorddict(res), reply_to=msg)
    return Message(RecordDict({records.METRICS: records.metrics_to_record(metrics)}),
                   reply_to=msg)


def refitted(content: RecordDict, context: Context, run_config: Mapping) -> Prepared:
    """The device restored for an evaluation message, its user vector refitted against
    the table it was sent (not persisted): what it scores with."""
    with device_store(context) as store:
        p = _prepare(content, context, run_config, store)
    p.device.refit_user(p.factors, p.bias, float(p.round.need("mean")), p.config)
    return p


def _evaluate(content: RecordDict, context: Context, run_config: Mapping) -> dict[str, float]:
    p = refitted(content, context, run_config)
    mean = float(p.round.need("mean"))
    # The round scores the test rows, or (early stopping) the slice held out of training.
    rows = p.rows
    items, values = ((rows.valid_items, rows.valid_values)
                     if p.round.evaluate_on == "validation" else
                     (rows.test_items, rows.test_values))
    mode = privacy.mode(p.round.privacy)
    if p.config.explicit:
        metrics = p.device.evaluate_ratings(p.factors, p.bias, mean, items, values,
                                            p.round.rating_range)
    else:  # (a padded mode hides how active a device is: no segment, no tail counts)
        metrics = p.device.evaluate_ranking(p.factors, p.bias, items, segments=None
                                            if mode.padded else p.round.segments,
                                            **ranking_arguments(p.table, p.round))
    return layers.evaluation(mode, metrics) if mode.runner == "fedrec" else metrics


def ranking_arguments(table: HeldTable, rc: RoundConfig) -> dict:
    """How this device ranks (:mod:`fedrec.common.ranking`): the round's similarity
    weight; the round's tail bonus with the head the table came with, checked (a head that
    is not a bitmap of the table is refused by name). Nothing the round does not send: the
    model's own order."""
    out: dict = {"similarity": rc.similarity} if rc.similarity else {}
    bits = table.extras.get(HEAD_KEY)
    if rc.tail_bonus and bits is not None:
        out.update(head=unpack_head(bits, table.n_items), bonus=rc.tail_bonus)
    return out


PARTITION_QUERY = "partition"  # a query's config record: a simulation asks which user


def query(msg: Message, context: Context, run_config: Mapping) -> Message:
    """Aggregate-only statistics for the server's global mean μ: whether this user has
    training ratings, and their mean (μ is the mean of users' means: every device weighs
    the same, and no reply tells how many ratings its user has). A simulated device (one
    with a ``partition-id``) asked with a ``partition`` config record says which simulated
    user it is, so that a replay on an engine that numbers nodes itself (Ray) can address
    users; a real device has no partition and refuses."""
    if pairs.RECORD in msg.content.config_records:  # the pairs model's count or scoring
        return pairs_device.answer(msg, context, run_config)
    if PARTITION_QUERY in msg.content.config_records:
        if "partition-id" not in context.node_config:
            raise ValueError("asked for a partition id, but this device is not simulated")
        pid = int(context.node_config["partition-id"])
        return Message(RecordDict({records.METRICS: MetricRecord({"partition-id": pid})}),
                       reply_to=msg)
    with device_store(context) as store:
        rows = local_rows(context, run_config, store)
    stats = ({"rated": 1.0, "rating-mean": float(rows.train_values.mean())}
             if len(rows.train_values) else {"rated": 0.0})
    return Message(RecordDict({records.METRICS: MetricRecord(stats)}), reply_to=msg)


def secagg_when_asked(msg: Message, context: Context, call_next: object) -> Message:
    """Flower's ``secaggplus_mod`` for the messages of a SecAgg+ round; the others pass.
    A simulated device (one with a ``partition-id``) seeds numpy's global generator, which
    SecAgg+'s quantisation rounds with, so that the same seed gives the same model."""
    if RECORD_KEY_CONFIGS in msg.content.config_records:
        if "partition-id" in context.node_config:
            pid = int(context.node_config["partition-id"])
            # Flower rounds with the legacy global generator; nothing else to seed.
            np.random.seed((pid * 1_000_003 + int(msg.metadata.group_id or 0)) % 2**32)  # noqa: NPY002
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


def build_client_app(run_config: Mapping | None = None,
                     keeper: TableKeeper | None = None) -> ClientApp:
    """The ClientApp; with ``run_config`` given, it is used instead of the context's.
    ``keeper`` keeps simulated devices' synced tables (default: each node's
    ``context.state``)."""
    client = ClientApp()
    bound = None if run_config is None else dict(run_config)

    def settings_of(context: Context) -> Mapping:
        return bound if bound is not None else context.run_config

    @client.train(mods=[secagg_when_asked])
    def _train(msg: Message, context: Context) -> Message:
        return train(msg, context, settings_of(context), keeper)

    @client.evaluate()
    def _evaluate(msg: Message, context: Context) -> Message:
        return evaluate(msg, context, settings_of(context))

    @client.query()
    def _query(msg: Message, context: Context) -> Message:
        return query(msg, context, settings_of(context))

    return client


app = build_client_app()
