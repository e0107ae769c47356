"""FedRec: a Flower strategy that keeps the item table and folds in sparse item updates.

Built on Flower's :class:`~flwr.serverapp.strategy.FedAvg` for what it does well — sampling
nodes, constructing messages, separating error replies and logging — and replacing what it
cannot do: ``FedAvg.aggregate_train`` sums dense arrays of identical shapes, while every
device here sends rows for different items. Each reply is validated on its own; an invalid
one is rejected with its reason logged and counted, and never touches the model.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from logging import INFO, WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import sample_nodes

from fedrec.common import records
from fedrec.common.negatives import negative_pool, pool_seed
from fedrec.common.neighbours import RECORD as NEIGHBOURS
from fedrec.common.replies import TRAIN, Bounds, MetricSchema, evaluate_schema
from fedrec.common.round_config import EVALUATE_ON
from fedrec.common.schema import InvalidReplyError, ItemUpdate, TrainConfig, validate_update
from fedrec.common.segments import Segments, pool_segments, pooling_order
from fedrec.common.weighting import check_weighting
from fedrec.server.aggregate import Accumulator
from fedrec.server.checkpoint import Checkpoint
from fedrec.server.defences import Defence
from fedrec.server.item_model import ItemModel
from fedrec.server.layers import ServerLayer
from fedrec.server.listings import ListingSource
from fedrec.server.neighbours import STATE as NEIGHBOUR_STATE
from fedrec.server.neighbours import NeighbourServer
from fedrec.server.publish import PublishedTable
from fedrec.server.replies import Outbox, Refusals
from fedrec.server.stopping import STATE as STOP_STATE
from fedrec.server.stopping import EarlyStop
from fedrec.server.wait import wait_for_nodes

ConfigValue = int | float | str | bool | bytes  # what a driver adds to a round's config


class FedRec(FedAvg):
    """Sparse federated matrix factorisation over Flower's message API."""

    def __init__(self, model: ItemModel, train_config: TrainConfig, *,
                 fraction_train: float = 1.0, fraction_evaluate: float = 1.0,
                 min_train_nodes: int = 1, min_evaluate_nodes: int = 1,
                 min_available_nodes: int = 1, weighting: str = "uniform", cap: float = 10.0,
                 max_norm: float = 10.0, seed: int = 0,
                 rating_range: tuple[float, float] = (-np.inf, np.inf),
                 evaluate_every: int = 1, num_rounds: int | None = None,
                 wait_timeout: float = 600.0, layers: Sequence[ServerLayer] = (),
                 checkpoint: Checkpoint | None = None,
                 round_offset: int = 0, history: list[dict] | None = None,
                 sync: str = "full", sync_threshold: float = 0.0,
                 privacy: str = "plain", defences: Sequence[Defence] = (),
                 round_every: float = 0.0, pool_rounds: int = 1,
                 similarity: float = 0.0) -> None:
        super().__init__(fraction_train=fraction_train, fraction_evaluate=fraction_evaluate,
                         min_train_nodes=min_train_nodes, min_evaluate_nodes=min_evaluate_nodes,
                         min_available_nodes=min_available_nodes,
                         weighted_by_key=records.WEIGHT_KEY, arrayrecord_key=records.ITEMS,
                         configrecord_key=records.CONFIG)
        check_weighting(weighting)
        self.model, self.train_config = model, train_config
        self.privacy = privacy  # the mode's name, told to devices every round
        self.weighting, self.cap, self.max_norm, self.seed = weighting, cap, max_norm, seed
        self.rating_range = rating_range
        self.pool_rounds = pool_rounds  # rounds that draw negatives from one public pool
        self.similarity = similarity  # how devices rank (common.ranking), told every round
        # What bounds an honest device's numbers, and the schema of its train replies
        # (a timeline replay's carry more: common.replies.STREAM_TRAIN).
        self.bounds = Bounds(rating_range)
        self.train_schema: MetricSchema = TRAIN
        self.outbox = {MessageType.TRAIN: Outbox([], "train"),
                       MessageType.EVALUATE: Outbox([], "evaluate")}
        self.accepted_metrics: list[dict[str, float]] = []  # last round's, validated
        self.evaluate_every, self.num_rounds = evaluate_every, num_rounds
        self.wait_timeout = wait_timeout
        self.rejected: Counter[str] = Counter()  # refusals by reason
        self.refusals = Refusals(self.rejected)
        self.history: list[dict] = list(history or [])
        # A resumed run: Flower counts this run's rounds from 1, the model's from the start.
        self.checkpoint, self.round_offset = checkpoint, round_offset
        # Delta sync: the table each device holds, as (version, rows), acknowledged by a
        # reply; what was sent this round; and the bytes of item rows sent.
        if sync not in ("full", "delta"):
            raise ValueError(f"sync must be full or delta. Found {sync!r}.")
        if sync_threshold and sync != "delta":
            raise ValueError("sync-threshold applies to sync=delta only")
        self.sync = sync
        self.published = PublishedTable(model, sync_threshold)  # what delta sync sends
        self.acked: dict[int, tuple[int, int]] = {}
        self.pending: dict[int, tuple[int, int]] = {}
        self.seen: set[int] = set()  # nodes sent a table before (delta sync)
        self.download = self.first_contact = 0  # bytes sent, and of them at first contact
        self.full_table = 0  # what full sync would have sent the same devices
        # Per-row arrays that never change once a row exists (a timeline's listing times),
        # sent with the table: whole, or in a delta only for the rows added since.
        self.static: dict[str, np.ndarray] = {}
        # The mode's privacy layers (fedrec.server.layers), in its order.
        self.layers = list(layers)
        # The poisoning defences (fedrec.server.defences): they see the round's accepted
        # updates together before any is folded; what they set aside is counted by name.
        self.defences = list(defences)
        self.set_aside: Counter[str] = Counter()
        # The operator's catalogue file (deployment), watched between rounds: new listings
        # grow the table, hidden items go to devices and are dropped from aggregates.
        self.listings: ListingSource | None = None
        # A server that runs on a schedule: a round starts at most every round_every s.
        self.round_every, self._next_start = float(round_every), 0.0
        self._started = 0.0  # when the round in progress started (Unix seconds)
        # Imbalance segments (fedrec.common.segments): when set, evaluation rounds send them
        # and the pooled figures add light and heavy users and the tail.
        self.segments: Segments | None = None
        self._evaluating = "test"  # what the evaluation round in progress scores
        # Early stopping (fedrec.server.stopping), when the run has it.
        self.stopper: EarlyStop | None = None
        # The neighbours part of a ratings stream (fedrec.server.neighbours), when the run
        # has it: its table goes with every train message, and each reply must carry the
        # device's new ratings' residuals, folded in with its update.
        self.neighbours: NeighbourServer | None = None
        self._contributions: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}
        # The table version each node acknowledged (by replying), and what this round sent:
        # a node is sent the table only when it does not hold the current one. (Not kept in
        # a checkpoint: a restarted server sends every node the table once more.)
        self.neighbour_acked: dict[int, int] = {}
        self.neighbour_pending: dict[int, int] = {}
        self._neighbour_record: tuple[object, ArrayRecord | None] = (None, None)
        for layer in self.layers:
            self.max_norm = layer.norm_bound(self.max_norm, model.params.n_factors)

    def layer(self, name: str) -> ServerLayer | None:
        """The run's layer called ``name``, if the mode has one."""
        return next((layer for layer in self.layers if layer.name == name), None)

    @property
    def named(self) -> np.ndarray | None:
        """decoy: how many devices named each item last round (what decoys are drawn by)."""
        decoy = self.layer("decoy")
        return None if decoy is None else decoy.named

    # ---- what goes out -----------------------------------------------------------------
    def items_record(self, published: bool = False) -> ArrayRecord:
        """The whole table (and the static per-row arrays): the model's, or the one delta
        sync publishes (:class:`~fedrec.server.publish.PublishedTable`)."""
        t = self.published if published else self.model.params
        return self._with_named(records.arrays_to_record(
            {"factors": t.factors, "bias": t.bias, **self._static(0)}))

    def _static(self, start: int) -> dict[str, np.ndarray]:
        n = self.model.n_items
        for name, values in self.static.items():
            if len(values) != n:
                raise ValueError(f"static row array {name!r} has {len(values)} rows, the "
                                 f"table {n}")
        return {f"static.{name}": values[start:] for name, values in self.static.items()}

    def _with_named(self, record: ArrayRecord) -> ArrayRecord:
        """``record`` with what the layers send beside the table (decoy: last round's
        named counts, which devices draw decoys by)."""
        for name, values in self._table_arrays().items():
            record[name] = records.encode_array(values)
        return record

    def _table_arrays(self) -> dict[str, np.ndarray]:
        """What goes whole with every table: the layers' arrays and the catalogue's
        (hidden rows, category names)."""
        out = {}
        for layer in self.layers:
            out.update(layer.table_arrays())
        if self.listings is not None:
            out.update(self.listings.table_arrays())
        return out

    def table_record(self, held: tuple[int, int] | None) -> ArrayRecord:
        """The item rows a device needs: the whole table at first contact (``held`` None),
        else, for a device holding ``held = (version, rows)``, the rows moved after round
        ``version`` and the rows added since (the whole table when that would not be
        smaller); tagged with the table's ``version`` and size (a delta with its ``base``
        version and size)."""
        n = self.model.n_items
        record = None
        if held is not None and held[1] <= n:
            base, base_n = held
            moved = self.published.changed_since(base)
            ids = np.concatenate([moved[moved < base_n], np.arange(base_n, n)])
            p = self.published
            row = p.factors.itemsize * p.factors.shape[1] + p.bias.itemsize + 8
            if len(ids) * row < self.whole_bytes():  # (else surely not smaller)
                record = self._with_named(records.arrays_to_record(
                    {"ids": ids, "factors": p.factors[ids], "bias": p.bias[ids],
                     **self._static(base_n),
                     "base": np.array([base, base_n], dtype=np.int64)}))
                if _payload(record) >= self.whole_bytes():
                    record = None
        if record is None:
            record = self.items_record(published=True)
        record["version"] = records.encode_array(np.array([self.model.round, n], np.int64))
        return record

    def whole_bytes(self) -> int:
        """The payload of :meth:`items_record` (what a full sync sends each device),
        without building it."""
        p = self.model.params
        arrays = [p.factors, p.bias, *self._static(0).values(),
                  *self._table_arrays().values()]
        return sum(records.encoded_size(a) for a in arrays)

    def train_messages(self, config: ConfigRecord, node_ids: list[int],
                       items: ArrayRecord | None = None) -> list[Message]:
        """One train message per node: the table (``items``, or the current one) and the
        round's config; in delta sync, each node's own rows. Counts the bytes sent."""
        messages = self._train_messages(config, node_ids, items)
        self.full_table += self.whole_bytes() * len(node_ids)
        self.outbox[MessageType.TRAIN] = Outbox(messages, "train")
        return messages

    def _train_messages(self, config: ConfigRecord, node_ids: list[int],
                        items: ArrayRecord | None) -> list[Message]:
        messages = self._table_messages(config, node_ids, items)
        if self.neighbours is None:
            return messages
        version = self.neighbours.version
        if self._neighbour_record[0] is not self.neighbours.table:  # (encoded once a table)
            self._neighbour_record = (self.neighbours.table, records.arrays_to_record(
                self.neighbours.table.arrays()))
        table = self._neighbour_record[1]
        out = []
        for message in messages:  # the table, to the nodes that do not hold it
            node = message.metadata.dst_node_id
            content = RecordDict(dict(message.content.items()))
            if self.neighbour_acked.get(node) != version:
                content[NEIGHBOURS] = table
                self.download += _payload(table)
            self.neighbour_pending[node] = version
            out.append(Message(content, message_type=MessageType.TRAIN, dst_node_id=node))
        return out

    def _table_messages(self, config: ConfigRecord, node_ids: list[int],
                        items: ArrayRecord | None) -> list[Message]:
        if self.sync == "full":
            items = self.items_record() if items is None else items
            self.download += len(node_ids) * _payload(items)
            content = RecordDict({records.ITEMS: items, records.CONFIG: config})
            return [Message(content, message_type=MessageType.TRAIN, dst_node_id=node)
                    for node in node_ids]
        messages = []
        for node in node_ids:
            held = self.acked.get(node)
            items = self.table_record(held)
            self.pending[node] = (self.model.round, self.model.n_items)
            self.download += _payload(items)
            if held is None and node not in self.seen:
                self.seen.add(node)
                self.first_contact += _payload(items)
            messages.append(Message(RecordDict({records.ITEMS: items,
                                                records.CONFIG: config}),
                                    message_type=MessageType.TRAIN, dst_node_id=node))
        return messages

    def round_config(self, server_round: int) -> ConfigRecord:
        low, high = self.rating_range
        extra = {"privacy": self.privacy, "rating-min": float(low), "rating-max": float(high)}
        if self.train_config.negative_pool < 1:  # the round's public pool, by its seed
            extra["negative-pool-seed"] = pool_seed(self.seed, server_round, self.pool_rounds)
        if self.neighbours is not None:
            extra["neighbours-version"] = self.neighbours.version
        if self.similarity:
            extra["similarity"] = float(self.similarity)
        for layer in self.layers:
            extra.update(layer.round_config())
        return records.config_to_record(
            self.train_config, mean=float(self.model.params.mean), seed=self.seed, **extra)

    def round_pool(self, server_round: int) -> np.ndarray | None:
        """The public negative pool devices drew from in ``server_round`` (the round
        number its config was sent with), or None when they drew from the whole catalogue."""
        share = self.train_config.negative_pool
        if share >= 1:
            return None
        return negative_pool(share, pool_seed(self.seed, server_round, self.pool_rounds),
                             self.model.n_items)

    @property
    def epsilon(self) -> float | None:
        """ε spent so far (dp mode), at the run's δ."""
        dp = self.layer("dp")
        return None if dp is None else dp.epsilon

    def wait_turn(self) -> None:
        """A server on a schedule waits for its round's turn (``round_every`` after the
        last round started); the round's start time is noted for its history."""
        if self.round_every:
            time.sleep(max(0.0, self._next_start - time.monotonic()))
            self._next_start = time.monotonic() + self.round_every
        self._started = time.time()

    def open_round(self, server_round: int, grid: Grid, nodes: Iterable[int] | None = None,
                   extra: Mapping[str, ConfigValue] | None = None,
                   before_send: Callable[[FedRec], None] | None = None) -> list[Message]:
        """Steps 1–4 of a round (:mod:`fedrec.server.rounds`): the round's train messages;
        none when a privacy layer skips the round (its budget spent: the round is still
        recorded, with nothing accepted). ``server_round`` counts this run's rounds from 1
        (a resumed run's model counts on from its checkpoint: ``round_offset``); ``nodes``
        are the devices a driver names, or FedAvg's sample of the connected ones; ``extra``
        adds a driver's keys to the round's config."""
        r = server_round + self.round_offset
        if not all(layer.allows_round(r) for layer in self.layers):
            return []
        self.wait_turn()
        if nodes is None:  # FedAvg would size its sample before the nodes register
            wait_for_nodes(grid, self.min_available_nodes, self.wait_timeout)
        if self.listings is not None:  # the catalogue as it is now: new items, hidden ones
            self.listings.refresh(self.model, self.static, r)
        config = self.round_config(r)
        nodes = self.sample_train(grid) if nodes is None else list(nodes)
        config["server-round"] = r
        for key, value in (extra or {}).items():
            config[key] = value
        if before_send is not None:
            before_send(self)
        return self.train_messages(config, nodes)

    def sample_train(self, grid: Grid) -> list[int]:
        """FedAvg's sample of the connected devices: ``fraction_train`` of them, at least
        ``min_train_nodes``, once ``min_available_nodes`` have checked in."""
        if self.fraction_train == 0.0:
            return []
        n = int(len(list(grid.get_node_ids())) * self.fraction_train)
        nodes, connected = sample_nodes(grid, self.min_available_nodes,
                                        max(n, self.min_train_nodes))
        log(INFO, "round: sampled %s devices (out of %s)", len(nodes), len(connected))
        return list(nodes)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Flower's strategy API: :meth:`open_round` (``arrays`` and ``config`` are the
        strategy's own: the table it holds, its round config)."""
        return self.open_round(server_round, grid)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """Federated evaluation every ``evaluate_every`` rounds and after the last."""
        server_round += self.round_offset
        if server_round % self.evaluate_every and server_round != self.num_rounds:
            return []
        return self.evaluation(server_round, grid)

    def evaluation(self, server_round: int, grid: Grid, on: str = "test") -> list[Message]:
        """An evaluation round's messages (``server_round`` counted over the whole run):
        the devices score the test rows, or (``on="validation"``, early stopping) the
        slice they hold out of training; the pooled figures go to the round's history
        under ``evaluate`` or ``validation``."""
        if on not in EVALUATE_ON:
            raise ValueError(f"evaluate on one of {', '.join(EVALUATE_ON)}. Found {on!r}.")
        wait_for_nodes(grid, self.min_available_nodes, self.wait_timeout)
        self._evaluating = on
        config = self.round_config(server_round)
        if self._with_segments():
            config = ConfigRecord({**config, **self.segments.to_config()})
        if on != "test":
            config = ConfigRecord({**config, "evaluate-on": on})
        messages = list(super().configure_evaluate(server_round, self.items_record(),
                                                   config, grid))
        self.outbox[MessageType.EVALUATE] = Outbox(messages, "evaluate")
        return messages

    def _with_segments(self) -> bool:
        """Whether the evaluation round in progress carries the imbalance segments: a
        ranking run's test rounds, when the run has segments."""
        return (self.segments is not None and not self.train_config.explicit
                and self._evaluating == "test")

    # ---- what comes back ---------------------------------------------------------------
    def accept(self, reply: Message, server_round: int = 0
               ) -> tuple[ItemUpdate, dict[str, float]] | None:
        """The reply's validated update and training metrics, or None (refused: the reason
        logged and counted). Every field is checked: the records present, the update's
        arrays (:func:`~fedrec.common.schema.validate_update`) and every metric
        (:attr:`train_schema`)."""
        try:
            expected = {records.UPDATE: ArrayRecord, records.METRICS: MetricRecord}
            if self.neighbours is not None:
                expected[NEIGHBOURS] = ArrayRecord
            got = records.reply_records(reply.content, expected)
            arrays = records.record_to_arrays(got[records.UPDATE])
            update = validate_update(arrays, self.model.n_items, self.model.params.n_factors,
                                     self.max_norm)
            for layer in self.layers:
                layer.check(update)
            metrics = self.train_schema.validate(got[records.METRICS], self.bounds)
            if self.neighbours is not None:
                self._contributions[id(metrics)] = self._contribution(
                    reply, got[NEIGHBOURS], metrics)
            return update, metrics
        except InvalidReplyError as exc:
            self.refusals.refuse(server_round, "train", reply, exc.reason, str(exc))
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            self.refusals.refuse(server_round, "train", reply, "decode", str(exc)[:200])
        return None

    def _contribution(self, reply: Message, record: ArrayRecord, metrics: dict[str, float]
                      ) -> tuple[int, np.ndarray, np.ndarray]:
        """A reply's neighbours record, checked (:meth:`NeighbourServer.check`): the node,
        the items it rated since its last reply, its residual on each."""
        node = int(reply.metadata.src_node_id)
        items, res = self.neighbours.check(
            node, records.record_to_arrays(record), self.model.n_items,
            self.bounds.width, metrics.get("rating-count", 0.0))
        return node, items, res

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Match replies to this round's messages, validate each, fold the accepted ones
        into the item table; checkpoint."""
        server_round += self.round_offset
        refused_before = self.refusals.total()
        replies = self.outbox[MessageType.TRAIN].match(list(replies), self.refusals,
                                                       server_round)
        ok, errors = self._check_and_log_replies(replies, is_train=True, validate=False)
        for reply in replies:  # delta sync: a reply acknowledges the rows it was sent
            node = reply.metadata.src_node_id
            if reply.has_error():
                self.acked.pop(node, None)  # (a device that lost its table gets it whole)
            elif node in self.pending:
                self.acked[node] = self.pending.pop(node)
            if reply.has_error():  # (the neighbours table, likewise)
                self.neighbour_acked.pop(node, None)
            elif node in self.neighbour_pending:
                self.neighbour_acked[node] = self.neighbour_pending.pop(node)
        # Each accepted update is folded into running sums at once (none is kept), unless
        # defences screen the round's updates together first.
        acc = Accumulator(self.model.n_items, self.model.params.n_factors, self.weighting,
                          self.cap)
        # The Count rule's counts: per row, the devices moving it for the first time.
        first = np.zeros(self.model.n_items) if self.model.counts_moves else None
        node_of: dict[int, int] = {}  # (a held reply's metrics -> its node)
        self.accepted_metrics = []
        upload, held = 0, []
        folded: list[tuple[int, np.ndarray, np.ndarray]] = []  # neighbours contributions

        def fold(update: ItemUpdate, metrics: dict[str, float], node: int) -> None:
            acc.add(update)
            for layer in self.layers:
                layer.fold(update)
            if first is not None:
                first[update.ids[self.model.first_moves(node, update.ids)]] += 1
            if self.neighbours is not None:
                folded.append(self._contributions.pop(id(metrics)))
            self.accepted_metrics.append(metrics)

        for reply in ok:
            accepted = self.accept(reply, server_round)
            if accepted is None:
                continue
            update, metrics = accepted
            upload += update.nbytes
            if self.neighbours is not None:  # (as sent: int64 ids, float32 residuals)
                upload += 12 * len(self._contributions[id(metrics)][1])
            if self.defences:
                held.append(accepted)
                node_of[id(metrics)] = int(reply.metadata.src_node_id)
                continue
            fold(update, metrics, int(reply.metadata.src_node_id))
        defended = self.screen(held, [node_of[id(m)] for _, m in held])
        for update, metrics in defended:
            fold(update, metrics, node_of[id(metrics)])
        self._contributions.clear()  # (those of replies set aside are dropped)
        if self.neighbours is not None:
            # (exact sums of quantised residuals: the order replies arrived in, Ray's or
            # the in-process engine's, changes none: common.neighbours.STEP)
            for node, items, res in folded:
                self.neighbours.fold(node, items, res, self.model.n_items)
            self.neighbours.end_round(server_round)
        agg = acc.result()
        pool = self.round_pool(server_round)
        if pool is not None and self.weighting == "sum":  # (aggregate.py says why)
            agg = agg.averaged(pool)
        if self.listings is not None and len(self.listings.hidden):
            agg = agg.without(self.listings.hidden)  # hidden items are never trained
        for layer in self.layers:
            layer.after_fold(acc.devices)
        applied = self.model.apply(agg, server_round,
                                   None if first is None else first[agg.ids])
        self.published.refresh(agg.ids if applied else agg.ids[:0], server_round)
        if not applied:
            log(WARNING, "round %s: the server step diverged (non-finite rows) and was not "
                "applied; lower server-lr", server_round)
        accepted = len(self.accepted_metrics)
        w = np.array([m[records.WEIGHT_KEY] for m in self.accepted_metrics])
        losses = [m["train-loss"] for m in self.accepted_metrics]
        summary = {
            "accepted": float(accepted),
            "rejected": float(self.refusals.total() - refused_before),
            "failed": float(len(errors)),
            "rows-updated": float(len(agg.ids)) if applied else 0.0,
            "train-loss": float(np.average(losses, weights=w)) if len(w) and w.sum() else 0.0,
            "upload-bytes": float(upload),
            "download-bytes": float(self.download),
            "first-contact-bytes": float(self.first_contact),
            "full-table-bytes": float(self.full_table),
        }
        if self.round_every:
            summary["started-at"] = self._started
        self.download = self.first_contact = self.full_table = 0
        if self.defences:
            summary["set-aside"] = float(len(held) - len(defended))
            for defence in self.defences:
                summary.update(defence.summary())
        for layer in self.layers:
            summary.update(layer.summary())
        if self.listings is not None:
            summary.update(self.listings.summary())
        if self.neighbours is not None:
            summary.update(self.neighbours.summary())
        self.history.append({"round": server_round, "train": summary})
        log(INFO, "round %s: %s accepted, %s rejected, %s failed, %s rows updated",
            server_round, accepted, summary["rejected"], len(errors), len(agg.ids))
        self.save_checkpoint(server_round)
        return self.items_record(), MetricRecord(summary)

    def save_checkpoint(self, server_round: int) -> None:
        """Save the model, history and run state after ``server_round`` (an absolute round;
        nothing without a checkpoint): after every training round, and after a validation
        round or early stopping changes the rule's state or the table."""
        if self.checkpoint is None:
            return
        state: dict = {"rejected": dict(self.rejected), "dp-rounds": 0,
                       "set-aside": dict(self.set_aside)}
        for layer in self.layers:
            state.update(layer.state())
        for defence in self.defences:
            state.update(defence.state())
        if self.listings is not None:
            state.update(self.listings.state(self.model.n_items))
        state.update(self.sync_state())
        arrays: dict[str, dict[str, np.ndarray]] = {}
        if self.stopper is not None:
            arrays[STOP_STATE], state[STOP_STATE] = self.stopper.state()
        if self.neighbours is not None:
            arrays[NEIGHBOUR_STATE] = self.neighbours.state()
        for layer in self.layers:
            if layer.arrays():
                arrays[layer.name] = layer.arrays()
        self.checkpoint.save(self.model, server_round, self.history, state, arrays)

    def load_stop_state(self, run: dict, last_round: int) -> None:
        """Restore the stopping rule's state from a checkpoint's run state (the rule must be
        set; a checkpoint without one leaves it fresh). ValueError naming the field."""
        if self.stopper is None or STOP_STATE not in run:
            return
        self.stopper.load(run.get("arrays", {}).get(STOP_STATE, {}), run[STOP_STATE],
                          last_round, self.model.n_items,
                          self.model.params.n_factors)

    def load_neighbours(self, run: dict) -> None:
        """Restore the neighbours part from a checkpoint's run state (the part must be
        set; a checkpoint without it leaves it fresh). ValueError naming the field."""
        saved = run.get("arrays", {}).get(NEIGHBOUR_STATE)
        if self.neighbours is None or saved is None:
            return
        self.neighbours.load(saved, self.model.n_items, self.bounds.width)

    def sync_state(self) -> dict:
        """Delta sync's memory of the devices (a checkpoint's run-state entries): the table
        each node acknowledged, and the nodes sent a table before. Kept, a restarted server
        sends a device the rows moved since its table, not the whole table again."""
        if self.sync != "delta":
            return {}
        return {"acked": {str(node): [int(v), int(n)] for node, (v, n) in self.acked.items()},
                "seen": sorted(int(node) for node in self.seen)}

    def load_sync_state(self, run: dict) -> None:
        """Restore :meth:`sync_state` (values checked by the checkpoint's loader)."""
        if self.sync != "delta":
            return
        self.acked = {int(node): (int(v), int(n)) for node, (v, n) in
                      run.get("acked", {}).items()}
        self.seen = {int(node) for node in run.get("seen", [])}

    def screen(self, accepted: list[tuple[ItemUpdate, dict[str, float]]],
               nodes: list[int] | None = None) -> list[tuple[ItemUpdate, dict[str, float]]]:
        """The round's accepted updates (with their metrics; ``nodes``: the node of each)
        after every defence, in order: rows changed, replies set aside (counted in
        :attr:`set_aside` by defence)."""
        for defence in self.defences:
            screened = defence.screen([update for update, _ in accepted],
                                      self.model.params.factors, nodes)
            if len(screened) != len(accepted):
                raise RuntimeError(f"defence {defence.name} returned {len(screened)} "
                                   f"updates for {len(accepted)}")
            kept = [(u, m) for u, (_, m) in zip(screened, accepted, strict=True)
                    if u is not None]
            if nodes is not None:
                nodes = [n for u, n in zip(screened, nodes, strict=True) if u is not None]
            self.set_aside[defence.name] += len(accepted) - len(kept)
            accepted = kept
        return accepted

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        """Pool devices' held-out metrics, each reply matched and every value checked
        (:func:`~fedrec.common.replies.evaluate_schema`): error sums into RMSE/MAE,
        per-user ranking metrics into their mean over users with a test item."""
        server_round += self.round_offset
        before = self.refusals.total()
        replies = self.outbox[MessageType.EVALUATE].match(list(replies), self.refusals,
                                                          server_round)
        ok, _ = self._check_and_log_replies(replies, is_train=False, validate=False)
        segments = self._with_segments()
        rows = checked_evaluations(ok, evaluate_schema(self.train_config.explicit,
                                                       segments=segments),
                                   self.bounds, self.refusals, server_round)
        refused = self.refusals.total() - before
        result = pool_evaluation(rows)
        if result and segments:
            result.update(pool_segments(rows, 10))
        if not result:
            return None
        if refused:
            result["refused"] = float(refused)
        key = "evaluate" if self._evaluating == "test" else "validation"
        if self.history and self.history[-1]["round"] == server_round:
            self.history[-1][key] = result
        else:
            self.history.append({"round": server_round, key: result})
        return MetricRecord(result) if result else None


def checked_evaluations(replies: Iterable[Message], schema: MetricSchema, bounds: Bounds,
                        refusals: Refusals, server_round: int = 0) -> list[dict[str, float]]:
    """The metrics of each evaluation reply that passes ``schema``; the others go to
    ``refusals``."""
    rows = []
    for reply in replies:
        try:
            got = records.reply_records(reply.content, {records.METRICS: MetricRecord})
            rows.append(schema.validate(got[records.METRICS], bounds))
        except InvalidReplyError as exc:
            refusals.refuse(server_round, "evaluate", reply, exc.reason, str(exc))
    return rows


def _payload(record: ArrayRecord) -> int:
    return sum(len(a.data) for a in record.values())


def pool_evaluation(rows: list[dict[str, float]]) -> dict[str, float]:
    """Combine checked per-device evaluation metrics (see :meth:`FedRec.aggregate_evaluate`):
    explicit error sums into RMSE and MAE over every held-out rating, ranking metrics into
    their mean over the devices whose user had a test item; in an order of their own
    (:func:`~fedrec.common.segments.pooling_order`), not the replies' arrival order."""
    rows = pooling_order(rows)
    explicit = [r for r in rows if "sq-err" in r]
    if explicit:
        n = sum(r["num-examples"] for r in explicit)
        if not n:
            return {}
        return {"rmse": float(np.sqrt(sum(r["sq-err"] for r in explicit) / n)),
                "mae": float(sum(r["abs-err"] for r in explicit) / n),
                "num-examples": float(n)}
    ranked = [r for r in rows if r.get("num-users", 0) > 0]
    if not ranked:
        return {}
    keys = [k for k in ranked[0] if "@" in k]
    out = {k: float(np.mean([r[k] for r in ranked])) for k in keys}
    out["num-users"] = float(len(ranked))
    return out
