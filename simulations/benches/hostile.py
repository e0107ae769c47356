"""``fedrec bench hostile``: every kind of hostile reply a device can send, tried against a
live federation; for each, the server must refuse it with a named reason, stay up, and end
with the model it would have had if that device had simply failed.

Two runs of fedrec's ServerApp and ClientApp on the in-process engine, on the same shop:

* the *control*: the hostile devices fail (an error reply to every message);
* the *attack*: each hostile device answers every message with one hostile case
  (:data:`CASES`, a different one per device and exchange), and the network injects
  duplicates, replays, stale and forged replies (:data:`INJECTED`).

A case passes when its reply was refused with the expected reason (a refusal attributed to
its round, kind and node) and the attack run ends with a model (factors, biases, row
versions, μ) and a history (losses, metrics, rows updated) bit-identical to the control's.
Explicit and implicit runs together try every metric of every reply kind as a list, str,
None, bool, NaN, ±inf, huge, a Python int beyond float, negative, fractional where counts
belong, missing, plus every kind of malformed update array and record.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from copy import copy
from dataclasses import dataclass, field
from uuid import uuid4

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.common.logger import FLOWER_LOGGER

from fedrec.client.app import app as client_app
from fedrec.common import records
from fedrec.common.partition import simulated_partitions
from fedrec.common.replies import QUERY, TRAIN, evaluate_schema
from fedrec.common.settings import RunSettings
from fedrec.server.app import run as run_server
from fedrec.simulations.engines.inprocess import CLIENT_APP_ERROR, InProcessGrid

Make = Callable[[Message, Message], Message]  # (request, honest reply) -> hostile reply


@dataclass(frozen=True)
class Case:
    """One hostile reply: what it is, the exchange it answers, and the refusal expected."""

    name: str
    kind: str  # train, evaluate or query
    reason: str  # the refusal reason (the counter's key, without the kind prefix)
    make: Make


# ---- building hostile records, bypassing Flower's own type checks (a device may send anything)
def raw_record(record: object, entries: dict) -> object:
    """``record`` holding ``entries`` as they are (Flower's per-entry checks bypassed)."""
    record.__dict__["_data"] = dict(entries)
    return record


def _with_metric(reply: Message, key: str, value: object, drop: bool = False) -> RecordDict:
    metrics = dict(reply.content[records.METRICS])
    if drop:
        metrics.pop(key, None)
    else:
        metrics[key] = value
    content = RecordDict(dict(reply.content))
    content.__dict__["_data"][records.METRICS] = raw_record(MetricRecord(), metrics)
    return content


def _answer(request: Message, content: RecordDict) -> Message:
    return Message(content, reply_to=request)


def _honest_train(request: Message, honest: Message) -> Message:
    """The honest train reply a case starts from: the device's own, or (when it had nothing
    to send, or failed) a well-formed two-row one."""
    if honest.has_content() and records.UPDATE in honest.content.array_records and len(
            records.record_to_arrays(honest.content[records.UPDATE])["ids"]) >= 2:
        return honest
    k = records.array_view(request.content[records.ITEMS]["factors"]).shape[1]
    arrays = {"ids": np.array([0, 1], np.int64), "rows": np.full((2, k), 0.01, np.float32),
              "bias": np.zeros(2, np.float32), "counts": np.ones(2, np.float32)}
    return _answer(request, RecordDict({
        records.UPDATE: records.arrays_to_record(arrays),
        records.METRICS: records.metrics_to_record({"num-examples": 2.0,
                                                    "train-loss": 1.0})}))


BAD_VALUES: dict[str, tuple[object, str]] = {
    # name: (value, reason)
    "list": ([1.0, 2.0], "metric-type"),
    "str": ("1.0", "metric-type"),
    "None": (None, "metric-type"),
    "bool": (True, "metric-type"),
    "bytes": (b"\x00", "metric-type"),
    "NaN": (float("nan"), "metric-nonfinite"),
    "inf": (float("inf"), "metric-nonfinite"),
    "-inf": (float("-inf"), "metric-nonfinite"),
    "huge": (1e300, "metric-range"),
    "int beyond float": (10**400, "metric-range"),
    "negative": (-1.0, "metric-range"),
}


def _metric_cases(kind: str, keys: tuple[str, ...], whole: set[str]) -> list[Case]:
    """Every key of a reply's metrics as each bad value, fractional (whole numbers), and
    missing."""
    cases = []
    for key in keys:
        for label, (value, reason) in BAD_VALUES.items():
            cases.append(Case(f"{kind}: {key} = {label}", kind, f"{reason}:{key}",
                              _metric_maker(key, value)))
        if key in whole:
            cases.append(Case(f"{kind}: {key} = 0.5", kind, f"metric-whole:{key}",
                              _metric_maker(key, 0.5)))
        cases.append(Case(f"{kind}: {key} missing", kind, f"metric-missing:{key}",
                          _metric_maker(key, None, drop=True)))
    cases.append(Case(f"{kind}: unknown metric", kind, "metric-unknown:evil",
                      _metric_maker("evil", 1.0)))
    return cases


def _metric_maker(key: str, value: object, drop: bool = False) -> Make:
    return lambda request, honest: _answer(request, _with_metric(honest, key, value, drop))


def _update_maker(change: Callable[[dict], dict | ArrayRecord]) -> Make:
    def make(request: Message, honest: Message) -> Message:
        arrays = {k: np.array(v) for k, v in
                  records.record_to_arrays(honest.content[records.UPDATE]).items()}
        changed = change(arrays)
        record = changed if isinstance(changed, ArrayRecord) else \
            records.arrays_to_record(changed)
        content = RecordDict(dict(honest.content))
        content.__dict__["_data"][records.UPDATE] = record
        return _answer(request, content)
    return make


def _set(key: str, fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[dict], dict]:
    def change(arrays: dict) -> dict:
        return {**arrays, key: fn(arrays[key])}
    return change


def _poke(key: str, value: float) -> Callable[[dict], dict]:
    def change(arrays: dict) -> dict:
        a = arrays[key].copy()
        a.flat[0] = value
        return {**arrays, key: a}
    return change


def _raw_array(key: str, data: bytes, stype: str = records.NUMPY,
               shape: tuple[int, ...] = (1,)) -> Callable:
    def change(arrays: dict) -> ArrayRecord:
        record = records.arrays_to_record(arrays)
        bad = Array.__new__(Array)
        bad.__dict__.update(dtype="float32", shape=tuple(shape), stype=stype, data=data)
        record.__dict__["_data"][key] = bad
        return record
    return change


def _npy(header: dict, payload: bytes = b"") -> bytes:
    import io

    from numpy.lib import format as npy_format

    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, header)
    return buf.getvalue() + payload


def _update_cases(n_items: int) -> list[Case]:
    k = "train"
    specs: list[tuple[str, str, Callable]] = [
        ("ids as float64", "dtype", _set("ids", lambda a: a.astype(np.float64))),
        ("ids as int32", "dtype", _set("ids", lambda a: a.astype(np.int32))),
        ("rows as float64", "dtype", _set("rows", lambda a: a.astype(np.float64))),
        ("rows as float16", "dtype", _set("rows", lambda a: a.astype(np.float16))),
        ("bias as int64", "dtype", _set("bias", lambda a: a.astype(np.int64))),
        ("counts as int64", "dtype", _set("counts", lambda a: a.astype(np.int64))),
        ("ids 2-D", "shape", _set("ids", lambda a: a.reshape(1, -1))),
        ("rows 1-D", "shape", _set("rows", lambda a: a.ravel())),
        ("rows one factor short", "shape", _set("rows", lambda a: a[:, :-1].copy())),
        ("bias one short", "shape", _set("bias", lambda a: a[:-1].copy())),
        ("counts one long", "shape", _set("counts", lambda a: np.r_[a, np.float32(1)])),
        ("rows NaN", "nonfinite", _poke("rows", np.nan)),
        ("rows inf", "nonfinite", _poke("rows", np.inf)),
        ("bias NaN", "nonfinite", _poke("bias", np.nan)),
        ("bias -inf", "nonfinite", _poke("bias", -np.inf)),
        ("counts NaN", "nonfinite", _poke("counts", np.nan)),
        ("counts inf", "nonfinite", _poke("counts", np.inf)),
        ("rows scaled 1e6", "norm", _set("rows", lambda a: a * np.float32(1e6))),
        ("rows 3e38 (norm overflows)", "norm", _poke("rows", 3e38)),
        ("bias 1e3", "norm", _poke("bias", 1e3)),
        ("counts zero", "counts", _poke("counts", 0.0)),
        ("counts negative", "counts", _poke("counts", -5.0)),
        ("id beyond the catalogue", "id-range", _set("ids", lambda a: np.r_[a[:-1], n_items])),
        ("id negative", "id-range", _poke("ids", -1)),
        ("id 2**62", "id-range", _set("ids", lambda a: np.r_[a[:-1], 2**62])),
        ("ids repeated", "id-duplicate", _set("ids", lambda a: np.r_[a[:1], a[:-1]])),
        ("ids unsorted", "id-order", _set("ids", lambda a: a[::-1].copy())),
        ("counts missing", "keys", lambda a: {x: v for x, v in a.items() if x != "counts"}),
        ("extra array", "keys", lambda a: {**a, "evil": np.zeros(1, np.float32)}),
        ("array not numpy", "decode", _raw_array("rows", b"\x00" * 16, stype="torch")),
        ("array not .npy bytes", "decode", _raw_array("rows", b"PK\x03\x04junk")),
        ("npy header longer than the data", "decode",
         _raw_array("bias", _npy({"descr": "<f4", "fortran_order": False,
                                  "shape": (10**6,)}, b"\x00" * 8))),
        ("npy object dtype", "decode",
         _raw_array("bias", _npy({"descr": "|O", "fortran_order": False, "shape": (1,)},
                                 b"\x00" * 8))),
        ("npy bad version", "decode", _raw_array("bias", b"\x93NUMPY\x09\x00" + b"\x00" * 20)),
        ("npy header garbage", "decode",
         _raw_array("bias", b"\x93NUMPY\x01\x00\x10\x00{'evil': __import__}\n")),
    ]
    return [Case(f"{k}: update {name}", k, reason, _update_maker(change))
            for name, reason, change in specs]


def _content_maker(build: Callable[[Message], RecordDict]) -> Make:
    return lambda request, honest: _answer(request, build(honest))


def _record_cases(kind: str, names: tuple[str, ...]) -> list[Case]:
    def without(name: str) -> Callable[[Message], RecordDict]:
        return lambda h: RecordDict({n: r for n, r in h.content.items() if n != name})

    def as_config(name: str) -> Callable[[Message], RecordDict]:
        def build(h: Message) -> RecordDict:
            content = RecordDict(dict(h.content))
            content.__dict__["_data"][name] = raw_record(ConfigRecord(), {"x": "1.0"})
            return content
        return build

    def extra(h: Message) -> RecordDict:
        content = RecordDict(dict(h.content))
        content["evil"] = ConfigRecord({"cmd": "rm -rf /"})
        return content

    cases = [Case(f"{kind}: no {name!r} record", kind, "records", _content_maker(without(name)))
             for name in names]
    cases += [Case(f"{kind}: {name!r} as a ConfigRecord", kind, "records",
                   _content_maker(as_config(name))) for name in names]
    cases.append(Case(f"{kind}: an extra record", kind, "records", _content_maker(extra)))
    cases.append(Case(f"{kind}: empty content", kind, "records",
                      _content_maker(lambda h: RecordDict())))
    return cases


def _relation_cases(explicit: bool, rating_range: tuple[float, float]) -> list[Case]:
    """Replies whose values are each in range but impossible together."""
    lo, hi = rating_range
    w = hi - lo
    ev = "evaluate"
    out = []
    if explicit:
        out += [
            Case(f"{ev}: sq-err beyond count x width^2", ev, "metric-range:sq-err",
                 _metric_set({"num-examples": 2.0, "sq-err": 2 * w * w + 1.0, "abs-err": 1.0})),
            Case(f"{ev}: abs-err too large for sq-err", ev, "metric-check:abs-sq",
                 _metric_set({"num-examples": 4.0, "sq-err": 0.01, "abs-err": 4 * w})),
        ]
        q = "query"
        out += [
            Case(f"{q}: mean rating 1e7", q, "metric-range:rating-mean",
                 _metric_set({"rated": 1.0, "rating-mean": 1e7})),
            Case(f"{q}: mean rating below the scale", q, "metric-range:rating-mean",
                 _metric_set({"rated": 1.0, "rating-mean": lo - 1.0})),
            Case(f"{q}: rated 2", q, "metric-range:rated", _metric_set({"rated": 2.0})),
            Case(f"{q}: a mean without ratings", q, "metric-unexpected:rating-mean",
                 _metric_set({"rated": 0.0, "rating-mean": hi})),
        ]
    else:
        # (a simulation's evaluation rounds carry the imbalance segments: an honest reply
        # has a segment and tail counts, common.segments)
        seg = {"segment": 0.0, "recs": 10.0, "tail-recs": 1.0, "tail-test": 1.0,
               "tail-hits": 0.0}
        hit = {"num-users": 1.0, "hr@10": 1.0, "ndcg@10": 0.5, "recall@10": 0.5,
               "precision@10": 0.1}
        out += [
            Case(f"{ev}: hr@10 = 40,000", ev, "metric-range:hr@10",
                 _metric_set({"num-users": 1.0, "hr@10": 40_000.0, "ndcg@10": 1.0,
                              "recall@10": 1.0, "precision@10": 1.0, **seg})),
            Case(f"{ev}: a hit without precision", ev, "metric-check:hits",
                 _metric_set({**hit, "precision@10": 0.0, **seg})),
            Case(f"{ev}: precision@10 = 0.15", ev, "metric-check:precision",
                 _metric_set({**hit, "precision@10": 0.15, **seg})),
            Case(f"{ev}: segment 7", ev, "metric-range:segment",
                 _metric_set({**hit, **seg, "segment": 7.0})),
            Case(f"{ev}: more tail hits than hits", ev, "metric-check:tail-hits",
                 _metric_set({**hit, **seg, "tail-recs": 3.0, "tail-test": 3.0,
                              "tail-hits": 2.0})),
            Case(f"{ev}: no segment", ev, "metric-missing:segment", _metric_set(hit)),
            Case(f"{ev}: num-users 5", ev, "metric-range:num-users",
                 _metric_set({"num-users": 5.0})),
            Case(f"{ev}: metrics without a user", ev, "metric-unexpected:hr@10",
                 _metric_set({"num-users": 0.0, "hr@10": 1.0})),
        ]
    return out


def _metric_set(values: dict) -> Make:
    def make(request: Message, honest: Message) -> Message:
        return _answer(request, RecordDict({records.METRICS: MetricRecord(values)}))
    return make


def cases_for(explicit: bool, n_items: int, rating_range: tuple[float, float]) -> list[Case]:
    """Every hostile reply a device sends in an explicit or an implicit run."""
    train_whole = {m.name for m in TRAIN.metrics if m.whole}
    evaluate = evaluate_schema(explicit)
    # (ranking metrics beyond num-users are only checked for a user with a test item)
    ev_keys = evaluate.keys if explicit else evaluate.keys[:1]
    out = [*_metric_cases("train", TRAIN.keys, train_whole), *_update_cases(n_items),
           *_record_cases("train", (records.UPDATE, records.METRICS)),
           *_metric_cases("evaluate", ev_keys, {m.name for m in evaluate.metrics if m.whole}),
           *_record_cases("evaluate", (records.METRICS,)),
           *_relation_cases(explicit, rating_range)]
    if explicit:
        out += [*_metric_cases("query", QUERY.keys[:1], {"rated"}),
                *_record_cases("query", (records.METRICS,))]
    return out


# ---- what the network injects -------------------------------------------------------
@dataclass(frozen=True)
class Injected:
    """A reply the network delivers beside the devices' own: ``build`` makes it from the
    exchange's messages and honest replies (this one's and the last of its kind)."""

    name: str
    kind: str
    reason: str
    build: Callable[[Exchange], Message | None]


@dataclass
class Exchange:
    kind: str
    round: int
    messages: dict[int, Message]  # by node
    replies: dict[int, Message]  # honest replies, by node
    previous: Exchange | None
    honest: list[int]
    hostile: list[int]

    def honest_node(self, i: int) -> int:
        return self.honest[i % len(self.honest)]


def _clone(reply: Message, **metadata: object) -> Message:
    """A copy of an honest reply with some metadata forged (and a new id)."""
    out = Message(content=reply.content, metadata=copy(reply.metadata))
    for name, value in metadata.items():
        out.metadata.__dict__[f"_{name}"] = value
    out.metadata.__dict__["_message_id"] = uuid4().hex
    return out


def _duplicate(x: Exchange) -> Message:
    node = x.honest_node(0)
    return _clone(x.replies[node])


def _replay(x: Exchange) -> Message | None:
    if x.previous is None:
        return None
    node = x.honest_node(1)
    return _clone(x.previous.replies[node])


def _stale(x: Exchange) -> Message | None:
    if x.previous is None:
        return None
    node = x.honest_node(2)
    return _clone(x.replies[node],
                  reply_to_message_id=x.previous.messages[node].metadata.message_id)


def _unsampled(x: Exchange) -> Message:
    node = x.honest_node(3)
    return _clone(x.replies[node], src_node_id=7_777_777)


def _wrong_node(x: Exchange) -> Message:
    victim, attacker = x.honest_node(4), x.hostile[0]
    return _clone(x.replies[victim], src_node_id=attacker)


def _forged_error(x: Exchange) -> Message:
    victim, attacker = x.honest_node(5), x.hostile[1 % len(x.hostile)]
    out = Message(Error(CLIENT_APP_ERROR, "forged"), reply_to=x.messages[victim])
    out.metadata.__dict__["_src_node_id"] = attacker
    out.metadata.__dict__["_message_id"] = uuid4().hex
    return out


def _made_up(x: Exchange) -> Message:
    node = x.honest_node(6)
    return _clone(x.replies[node], reply_to_message_id=uuid4().hex)


INJECTED: tuple[Injected, ...] = (
    Injected("network: a second reply under one node id", "train", "duplicate", _duplicate),
    Injected("network: a reply replayed from the last round", "train", "unsolicited",
             _replay),
    Injected("network: a reply to the last round's message", "train", "unsolicited", _stale),
    Injected("network: a reply from a node that was not sampled", "train", "wrong-node",
             _unsampled),
    Injected("network: a reply to another node's message", "train", "wrong-node",
             _wrong_node),
    Injected("network: a forged error for another node's message", "train", "wrong-node",
             _forged_error),
    Injected("network: a reply to a message never sent", "train", "unsolicited", _made_up),
    Injected("network: an evaluation answered twice", "evaluate", "duplicate", _duplicate),
    Injected("network: an evaluation replayed from the last round", "evaluate",
             "unsolicited", _replay),
    Injected("network: a query answered twice", "query", "duplicate", _duplicate),
)


# ---- the grid that plays the attackers --------------------------------------------------
KIND_OF = {MessageType.TRAIN: "train", MessageType.EVALUATE: "evaluate",
           MessageType.QUERY: "query"}


@dataclass
class Plan:
    """Which case each hostile node sends in each exchange, and what was refused."""

    cases: list[Case]
    hostile: list[int]
    slots: dict[tuple[str, int, int], Case] = field(default_factory=dict)  # (kind, round, node)
    injected: dict[tuple[str, int, int], Injected] = field(default_factory=dict)


class HostileGrid(InProcessGrid):
    """The in-process engine, with ``hostile`` nodes sending ``plan``'s cases (or, in the
    control, failing) and the network injecting :data:`INJECTED`."""

    def __init__(self, *args: object, hostile: list[int], plan: Plan | None,
                 **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.hostile, self.plan = hostile, plan
        self.counts = {"train": 0, "evaluate": 0, "query": 0}
        self.last: dict[str, Exchange] = {}
        self.queue = {kind: [c for c in plan.cases if c.kind == kind] if plan else []
                      for kind in self.counts}

    def send_and_receive(self, messages: object, *, timeout: float | None = None) -> list:
        messages = list(messages)
        replies = list(super().send_and_receive(messages, timeout=timeout))
        if not messages:
            return replies
        kind = KIND_OF[messages[0].metadata.message_type]
        self.counts[kind] += 1
        server_round = 0 if kind == "query" else self.counts[kind]
        by_node = {m.metadata.dst_node_id: m for m in messages}
        honest = {r.metadata.src_node_id: r for r in replies
                  if r.metadata.src_node_id not in self.hostile and not r.has_error()}
        exchange = Exchange(kind, server_round, by_node, honest, self.last.get(kind),
                            sorted(honest), self.hostile)
        self.last[kind] = exchange
        out = []
        for reply in replies:
            node = reply.metadata.src_node_id
            if node not in self.hostile:
                out.append(reply)
                continue
            request = by_node[node]
            case = self.queue[kind].pop(0) if self.plan and self.queue[kind] else None
            if case is None:  # the control, or no case left: the device fails
                out.append(Message(Error(CLIENT_APP_ERROR, "hostile device off"),
                                   reply_to=request))
                continue
            self.plan.slots[(kind, server_round, node)] = case
            if kind == "train":
                reply = _honest_train(request, reply)
            elif reply.has_error():  # (a device that failed honestly: answer for it)
                reply = _answer(request, RecordDict({records.METRICS: MetricRecord(
                    {"rated": 0.0} if kind == "query" else {"num-users": 0.0})}))
            hostile = case.make(request, reply)
            hostile.metadata.__dict__["_message_id"] = uuid4().hex
            out.append(hostile)
        if self.plan is not None:
            for injected in INJECTED:
                if injected.kind != kind or any(v is injected
                                                for v in self.plan.injected.values()):
                    continue
                extra = injected.build(exchange)
                if extra is not None:
                    # (the refusal is the sender's: attributed by its node id)
                    self.plan.injected[(kind, server_round,
                                        extra.metadata.src_node_id)] = injected
                    out.append(extra)
        return out


# ---- the bench ---------------------------------------------------------------------------
SHOP = "synthetic:n_users=90,n_items=60,n_events=12000,seed=3"


def _settings(dataset: str, explicit: bool, rounds: int) -> RunSettings:
    return RunSettings(dataset=dataset, protocol="explicit-80-20" if explicit
                       else "implicit-80-20", num_rounds=rounds, evaluate_every=1,
                       factors=8, local_epochs=1, negatives=2, seed=5)


def _run(settings: RunSettings, n_nodes: int, hostile: list[int], plan: Plan | None):
    config = {**settings.to_run_config(), "min-nodes": n_nodes}
    grid = HostileGrid(client_app, n_nodes, config, hostile=hostile, plan=plan)
    try:
        return run_server(grid, settings)
    finally:
        grid.close()


def _fingerprint(strategy: object) -> dict:
    """What must be bit-identical between the control and the attack."""
    p = strategy.model.params
    rounds = []
    for r in strategy.history:
        kept = {"round": r["round"]}
        if "train" in r:
            kept["train"] = {k: v for k, v in r["train"].items()
                             if k not in ("rejected", "failed")}
        if "evaluate" in r:
            kept["evaluate"] = {k: v for k, v in r["evaluate"].items() if k != "refused"}
        rounds.append(kept)
    return {"factors": p.factors.tobytes(), "bias": p.bias.tobytes(),
            "mean": np.float64(p.mean).tobytes(), "version": strategy.model.version.tobytes(),
            "history": json.dumps(rounds, sort_keys=True)}


def bench_hostile(dataset: str = SHOP, rounds: int = 3, hostile_share: float = 0.3,
                  progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Both runs (explicit and implicit) of every case; the record a script reads."""
    level = FLOWER_LOGGER.level
    FLOWER_LOGGER.setLevel(logging.CRITICAL)
    out: dict = {"bench": "hostile", "dataset": dataset, "rounds": rounds, "runs": {}}
    results: list[dict] = []
    try:
        for explicit in (True, False):
            label = "explicit" if explicit else "implicit"
            settings = _settings(dataset, explicit, rounds)
            parts = simulated_partitions(settings.dataset, settings.protocol, 0, "")
            n = parts.n_users
            cases = cases_for(explicit, parts.n_items, parts.rating_range)
            per_kind = {k: sum(c.kind == k for c in cases) for k in ("train", "evaluate",
                                                                     "query")}
            exchanges = {"train": rounds, "evaluate": rounds, "query": 1}
            need = max(-(-per_kind[k] // exchanges[k]) for k in per_kind)
            n_hostile = max(need, round(hostile_share * n))
            if n_hostile >= n - 8:
                raise ValueError(f"{len(cases)} cases need {need} hostile devices; the shop "
                                 f"has {n} users: give a larger shop or more rounds")
            nodes = list(range(1001, 1001 + n))
            hostile = nodes[-n_hostile:]
            if progress:
                progress(f"{label}: control", 0, 2)
            control = _run(settings, n, hostile, None)
            if progress:
                progress(f"{label}: attack ({len(cases)} cases)", 1, 2)
            plan = Plan(cases, hostile)
            crashed = None
            try:
                attack = _run(settings, n, hostile, plan)
            except Exception as exc:  # a crash is a finding, reported, not raised
                attack, crashed = None, f"{type(exc).__name__}: {exc}"
            same = attack is not None and _fingerprint(attack) == _fingerprint(control)
            refused: dict[tuple, list[str]] = {}
            for r in (attack.refusals.recent if attack is not None else ()):
                refused.setdefault((r.kind, r.round, r.node), []).append(r.reason)
            for key, case in [*plan.slots.items(), *plan.injected.items()]:
                got = refused.get(key, [])
                named = case.reason in got
                if named:
                    got.remove(case.reason)
                results.append({"run": label, "case": case.name, "kind": case.kind,
                                "expected": case.reason,
                                "refused": case.reason if named else (got or [None])[0],
                                "named": named, "model_identical": same})
            out["runs"][label] = {"devices": n, "hostile_devices": n_hostile,
                                  "cases": len(plan.slots) + len(plan.injected),
                                  "unused_cases": [c.name for c in cases
                                                   if c not in plan.slots.values()],
                                  "crashed": crashed, "model_identical": same,
                                  "refused": dict(attack.rejected) if attack else {}}
    finally:
        FLOWER_LOGGER.setLevel(level)
    distinct = {r["case"] for r in results}
    out["results"] = results
    out["summary"] = {
        "distinct_cases": len(distinct),
        "tried": len(results),
        "refused_with_the_named_reason": sum(r["named"] for r in results),
        "model_identical": sum(r["model_identical"] for r in results),
        "server_crashes": sum(bool(r["crashed"]) for r in out["runs"].values()),
    }
    return out


def summary_lines(record: dict) -> list[str]:
    s = record["summary"]
    lines = [f"{s['distinct_cases']} distinct hostile replies ({s['tried']} tried across the "
             f"explicit and implicit runs)",
             f"refused with the named reason: {s['refused_with_the_named_reason']} of "
             f"{s['tried']}",
             f"model bit-identical to the run without them: {s['model_identical']} of "
             f"{s['tried']}",
             f"server crashes: {s['server_crashes']}"]
    wrong = [r for r in record["results"] if not r["named"]]
    lines += [f"  NOT AS EXPECTED: [{r['run']}] {r['case']}: expected {r['expected']!r}, "
              f"got {r['refused']!r}" for r in wrong[:20]]
    return lines
