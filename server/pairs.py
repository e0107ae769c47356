"""The server side of the ``pairs`` model (:mod:`fedrec.common.pairs`): it asks devices to
count their items into the table, chooses popularity's weight on the slice every device
holds out, and has devices score their test rows with the table.

A run of ``R`` rounds:

1. round 1 counts every device's items without its latest event, then scores that held-out
   event at each weight of :data:`~fedrec.common.pairs.WEIGHTS` and keeps the best
   (NDCG@10): the only choice the run makes, and it sees no test event;
2. every later round counts what devices have not counted yet (their held-out event, and in
   a live shop their new behaviour), and the scheduled rounds (every ``evaluate-every``,
   and the last) score the test rows at the chosen weight.

A count asks every connected device (``fraction-train`` does not apply: a count is a few ids,
and the table must be whole); scoring asks ``fraction-evaluate`` of them. A count is a
query message (the ``pairs`` config record: the task, the cap and how many
items the server has counted for that device); its reply is the device's new item ids
(and those that left its latest ``cap``),
checked where they enter (:func:`~fedrec.common.pairs.check_contribution`): a reply that
fails is refused with the field named and counted, and changes nothing. The server keeps
each device's counted items, so one device's share of any count is 0 or 1.
Evaluations carry the table (float32, ``n²`` values) and come back as the same per-device
ranking metrics a matrix-factorisation run pools, checked by the same schema.
"""

from __future__ import annotations

import json
import random
import time
from logging import INFO, WARNING
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from fedrec.common import pairs, records
from fedrec.common.atomic import atomic_open
from fedrec.common.defences import OFF
from fedrec.common.replies import Bounds, evaluate_schema
from fedrec.common.schema import InvalidReplyError
from fedrec.common.segments import Segments, pool_segments
from fedrec.common.settings import RunSettings
from fedrec.server.defences.copies import Copies
from fedrec.server.replies import Outbox, Refusals
from fedrec.server.strategy import checked_evaluations, pool_evaluation
from fedrec.server.wait import wait_for_nodes

KEY = "ndcg@10"  # what the weight is chosen by


class PairsRun:
    """The table, each device's counted items, the chosen weight and the run's history."""

    def __init__(self, n_items: int, cap: int, weights: tuple[float, ...] = pairs.WEIGHTS,
                 segments: Segments | None = None, defence: Copies | None = None) -> None:
        self.counts = pairs.PairCounts.empty(n_items)
        self.cap, self.weights, self.segments = cap, tuple(weights), segments
        self.counted: dict[int, np.ndarray] = {}
        self.refusals = Refusals()
        self.history: list[dict] = []
        self.weight: float | None = None
        self.epsilon = None  # (plain mode: no guarantee to report)
        self.defence = defence
        self.defences: list = [] if defence is None else [defence]
        self.set_aside: dict[str, int] = {} if defence is None else {defence.name: 0}
        self.aside: set[int] = set()  # nodes set aside: their counts taken out

    @property
    def rejected(self) -> dict[str, int]:
        return dict(self.refusals.counts)

    # ---- counting --------------------------------------------------------------------
    def count_messages(self, nodes: list[int], include: str) -> list[Message]:
        return [Message(RecordDict({pairs.RECORD: ConfigRecord({
            "task": pairs.COUNT, "include": include, "cap": self.cap,
            "n-items": self.counts.n_items,
            "counted": len(self.counted.get(node, ())),
            "digest": pairs.digest(self.counted.get(node, np.empty(0, np.int64)))})}),
            dst_node_id=node, message_type=MessageType.QUERY) for node in nodes]

    def fold(self, replies: list[Message], server_round: int) -> dict[str, float]:
        """Check each count reply and add the accepted ones; the round's summary."""
        accepted = failed = items = upload = 0
        before = self.refusals.total()
        for reply in replies:
            if reply.has_error():
                failed += 1
                continue
            node = int(reply.metadata.src_node_id)
            if node in self.aside:  # (set aside: nothing it sends is counted again)
                self.refusals.refuse(server_round, "train", reply, "set-aside")
                continue
            counted = self.counted.get(node, np.empty(0, np.int64))
            try:
                got = records.reply_records(reply.content, {pairs.RECORD: ArrayRecord})
                arrays = records.record_to_arrays(got[pairs.RECORD])
                if "new" not in arrays or not set(arrays) <= {"new", "drop"}:
                    raise InvalidReplyError("pairs.arrays", f"expected 'new' (and 'drop'), "
                                            f"found {sorted(arrays)[:5]}")
                new, drop = arrays["new"], arrays.get("drop")
                pairs.check_contribution(new, counted, self.counts.n_items, self.cap, drop)
            except InvalidReplyError as exc:
                self.refusals.refuse(server_round, "train", reply, exc.reason, str(exc))
                continue
            except (TypeError, ValueError, KeyError, OverflowError) as exc:
                self.refusals.refuse(server_round, "train", reply, "decode", str(exc)[:200])
                continue
            self.counted[node] = self.counts.change(counted, new, drop)
            accepted += 1
            items += len(new)
            upload += int(new.nbytes)
        summary = {"accepted": float(accepted),
                   "rejected": float(self.refusals.total() - before),
                   "failed": float(failed), "items-counted": float(items),
                   "upload-bytes": float(upload)}
        if self.defence is not None:
            summary["set-aside"] = float(self.screen())
        return summary

    def screen(self) -> int:
        """Set aside the devices the defence finds among all counted sets: their pairs
        subtracted (the table is a sum of sets), their node kept out. How many it set
        aside now."""
        nodes = [n for n in sorted(self.counted) if n not in self.aside]
        found = self.defence.copies([self.counted[n] for n in nodes], self.counts.n_items)
        for i in found:
            node = nodes[int(i)]
            self.counts.remove(self.counted.pop(node))
            self.aside.add(node)
        self.set_aside[self.defence.name] += len(found)
        if len(found):
            log(WARNING, "pairs: %s devices set aside as near copies of each other (%s)",
                len(found), self.defence.name)
        return len(found)

    # ---- scoring ---------------------------------------------------------------------
    def evaluation_messages(self, nodes: list[int], weight: float, on: str
                            ) -> list[Message]:
        config = {"task": pairs.EVALUATE, "on": on, "weight": float(weight),
                  "cap": self.cap}
        if on == "test" and self.segments is not None:
            config.update(self.segments.to_config())
        table = records.arrays_to_record({"counts": self.counts.table()})
        return [Message(RecordDict({pairs.RECORD: ConfigRecord(config),
                                    pairs.TABLE: table}),
                        dst_node_id=node, message_type=MessageType.QUERY) for node in nodes]

    def evaluate(self, grid: Grid, nodes: list[int], weight: float, on: str,
                 server_round: int, timeout: float) -> dict[str, float]:
        """The pooled metrics of the devices' checked replies."""
        outbox = Outbox(self.evaluation_messages(nodes, weight, on), "evaluate")
        replies = outbox.match(grid.send_and_receive(outbox.messages, timeout=timeout),
                               self.refusals, server_round)
        ok = [r for r in replies if not r.has_error()]
        segments = on == "test" and self.segments is not None
        rows = checked_evaluations(ok, evaluate_schema(False, segments=segments),
                                   Bounds((1.0, 1.0)), self.refusals, server_round)
        return pool_evaluation(rows) if not segments else _with_segments(rows)

    # ---- the run -----------------------------------------------------------------------
    def run(self, grid: Grid, settings: RunSettings) -> None:
        rng = random.Random(settings.seed)
        timeout = settings.round_timeout
        for server_round in range(1, settings.num_rounds + 1):
            nodes = sorted(grid.get_node_ids())
            include = "train" if server_round == 1 else "all"
            # Every connected device counts (fraction-train does not apply: a count is a
            # few ids, and a device with nothing new sends none), so the table is whole.
            outbox = Outbox(self.count_messages(nodes, include), "train")
            replies = outbox.match(grid.send_and_receive(outbox.messages, timeout=timeout),
                                   self.refusals, server_round)
            entry: dict = {"round": server_round, "train": self.fold(replies, server_round)}
            scored = _sample(nodes, settings.fraction_evaluate, rng)
            if server_round == 1:
                by_weight = {w: self.evaluate(grid, scored, w, "validation", server_round,
                                              timeout) for w in self.weights}
                self.weight = max(self.weights, key=lambda w: by_weight[w].get(KEY, -1.0))
                entry["validation"] = {**by_weight[self.weight], "weight": self.weight}
                entry["pairs-weights"] = {str(w): m.get(KEY) for w, m in by_weight.items()}
                log(INFO, "pairs: popularity's weight %s chosen on the held-out slice "
                    "(%s %.4f)", self.weight, KEY, by_weight[self.weight].get(KEY, np.nan))
            last = server_round == settings.num_rounds
            if last or server_round % settings.evaluate_every == 0:
                entry["evaluate"] = self.evaluate(grid, scored, self.weight, "test",
                                                  server_round, timeout)
            log(INFO, "pairs round %s: %s accepted, %s rejected, %s items counted",
                server_round, entry["train"]["accepted"], entry["train"]["rejected"],
                entry["train"]["items-counted"])
            self.history.append(entry)

    def save(self, folder: Path, settings: RunSettings) -> None:
        """``model.npz`` (the table and the chosen weight) and ``history.json``."""
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_open(folder / "model.npz", "wb") as out:
            np.savez(out, counts=self.counts.counts, weight=np.array(self.weight))
        history = {"settings": settings.to_run_config(), "rounds": self.history,
                   "rejected": self.rejected,
                   "defences": [d.name for d in self.defences], "set_aside": self.set_aside,
                   "set_aside_nodes": sorted(self.aside),
                   "epsilon": None, "delta": None, "weight": self.weight}
        with atomic_open(folder / "history.json") as out:
            json.dump(history, out, indent=1)


def _sample(nodes: list[int], fraction: float, rng: random.Random) -> list[int]:
    if fraction >= 1.0:
        return list(nodes)
    return sorted(rng.sample(nodes, max(1, int(len(nodes) * fraction))))


def _with_segments(rows: list[dict[str, float]]) -> dict[str, float]:
    out = pool_evaluation(rows)
    if out:
        out.update(pool_segments(rows, 10))
    return out


def run_pairs(grid: Grid, settings: RunSettings, n_items: int,
              segments: Segments | None = None) -> PairsRun:
    """A whole ``pairs`` run on ``grid`` (:class:`PairsRun`)."""
    start = time.perf_counter()
    wait_for_nodes(grid, settings.min_nodes, settings.round_timeout)
    defence = None if settings.defences in (OFF, "") else Copies()
    run = PairsRun(n_items, settings.pairs_cap, segments=segments, defence=defence)
    run.run(grid, settings)
    log(INFO, "pairs: %s rounds in %.1f s", settings.num_rounds, time.perf_counter() - start)
    return run
