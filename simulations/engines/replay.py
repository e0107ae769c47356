"""The federated timeline replay: a shop's timeline through fedrec's ClientApp and FedRec
strategy, scoring every event before anyone learns from it (``fedrec bench stream`` runs
it beside the centralized models: :mod:`fedrec.simulations.benches.stream`).

The federated replay is fedrec's Flower ClientApp and FedRec strategy, driven through the
server's own round loop (:class:`~fedrec.server.rounds.RoundLoop`, the one a deployment
runs) by a simulated clock: after each tick the server

1. lists the items that appeared by then, growing the item table (first rows from content
   features, or neutral; old rows untouched: :class:`~fedrec.server.listings.TimedListings`);
2. trains the devices that had new events in the tick (in a deployment, the devices that
   check in), plus a configurable share of random others;
3. sends them the item table and the position ``until`` the clock has reached; each device
   scores its new events, learns its user vector online, trains the mode's events and
   replies with an item update and pooled scores;
4. folds the accepted updates in, and updates μ from the devices' rating sums.

An event is scored at the round that follows it, with the model of the round before: its
item side lags one round, which is the price of federation measured against
``centralized-incremental`` (no lag).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial

import numpy as np
from flwr.common.logger import FLOWER_LOGGER
from flwr.serverapp import Grid

from fedrec.client.app import app as client_app
from fedrec.client.app import build_client_app
from fedrec.client.stream import MODES
from fedrec.common.neighbours import MODES as NEIGHBOUR_MODES
from fedrec.common.neighbours import check_catalogue, check_k
from fedrec.common.partition import simulated_timeline
from fedrec.common.replies import STREAM_TRAIN
from fedrec.common.settings import RunSettings
from fedrec.common.stream import Tick, Timeline
from fedrec.server.app import build_strategy
from fedrec.server.catalogue import INITS
from fedrec.server.listings import TimedListings
from fedrec.server.mean import fallback_mean
from fedrec.server.neighbours import NeighbourServer
from fedrec.server.rounds import RoundLoop
from fedrec.server.strategy import FedRec
from fedrec.simulations.attacks.stream_freeze import TINY, freeze_client_app
from fedrec.simulations.attacks.stream_freeze import check as check_freezers
from fedrec.simulations.engines.inprocess import InProcessGrid, Observer
from fedrec.simulations.engines.prequential import Sums
from fedrec.simulations.engines.table_archive import ArchiveKeeper, SharedKeeper, TableArchive

Progress = Callable[[str, int, int], None]
KINDS = ("explicit", "implicit")


@dataclass(frozen=True)
class StreamSettings:
    """A stream replay: the data, the clock, the federated model and the baselines."""

    dataset: str = "ml-100k"
    kind: str = "explicit"
    data_dir: str = ""
    tick_events: int = 1000
    tick_seconds: int | None = None  # a span of time per tick instead of a number of events
    mode: str = "incremental"
    buffer: int = 200
    replay: float = 0.3
    others_share: float = 0.0
    init: str = "content"
    new_days: float = 7.0
    window_events: int = 10_000
    warmup: float = 0.2
    retrain_every: float = 0.2
    retrain_epochs: int = 10
    prefix: float = 1.0  # share of the timeline replayed (a warm-up prefix to tune on)
    # The neighbours part of a ratings model (fedrec.common.neighbours): each item's k
    # neighbours (0: off), the table refreshed every `neighbour_refresh` rounds, each new
    # rating paired with a device's latest `neighbour_history` ones.
    neighbours: int = 0
    neighbour_refresh: int = 10
    neighbour_history: int = 200
    run: RunSettings = field(default_factory=RunSettings)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}. Found {self.kind!r}.")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}. Found {self.mode!r}.")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}. Found {self.init!r}.")
        if self.tick_events < 1 or self.buffer < 1:
            raise ValueError("tick_events and buffer must be >= 1")
        if not self.others_share >= 0 or not 0 < self.warmup < 1 \
                or not 0 < self.retrain_every <= 1:
            raise ValueError("others_share must be >= 0, warmup in (0, 1), "
                             "retrain_every in (0, 1]")
        if not 0 < self.prefix <= 1:
            raise ValueError(f"prefix must be in (0, 1]. Found {self.prefix!r}.")
        check_k(self.neighbours)
        if self.neighbours:
            if not self.explicit:
                raise ValueError("neighbours is a part of the ratings model: it needs "
                                 "kind=explicit")
            if self.run.privacy not in NEIGHBOUR_MODES:
                raise ValueError(f"neighbours sends each device's residuals in the clear; "
                                 f"it runs with privacy={', '.join(NEIGHBOUR_MODES)} only. "
                                 f"Found privacy={self.run.privacy}.")
            if self.neighbour_refresh < 1 or self.neighbour_history < 1:
                raise ValueError(f"neighbour_refresh and neighbour_history must be >= 1. "
                                 f"Found {self.neighbour_refresh}, {self.neighbour_history}.")

    @property
    def explicit(self) -> bool:
        return self.kind == "explicit"

    def ticks(self, timeline: Timeline) -> list[Tick]:
        """The replay's ticks: the whole timeline's, or with ``prefix`` < 1 those that end
        within its first ``prefix`` share of events (at least one): the clock stops there,
        so no model, federated or not, sees or is scored on a later event."""
        if self.tick_seconds:
            ticks = timeline.ticks(seconds=self.tick_seconds)
        else:
            ticks = timeline.ticks(events=self.tick_events)
        if self.prefix < 1:
            cut = self.prefix * len(timeline)
            ticks = ticks[:max(1, sum(1 for t in ticks if t.stop <= cut))]
        return ticks

    def run_settings(self) -> RunSettings:
        """The federated model's settings (the protocol only picks the loss)."""
        protocol = "explicit-80-20" if self.explicit else "implicit-80-20"
        return replace(self.run, dataset=self.dataset, protocol=protocol,
                       data_dir=self.data_dir)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["run"] = self.run.to_run_config()
        return out


def load_timeline(s: StreamSettings) -> Timeline:
    return simulated_timeline(s.dataset, s.explicit, s.data_dir)


def rating_range(timeline: Timeline, explicit: bool) -> tuple[float, float]:
    """The rating scale (public shop metadata, as the catalogue is)."""
    if not explicit:
        return (-np.inf, np.inf)
    v = timeline.data.value
    return float(v.min()), float(v.max())


class FederatedStream:
    """The federated replay (see the module docstring)."""

    def __init__(self, s: StreamSettings, workers: int = 1,
                 observer: Observer | None = None, grid: Grid | None = None,
                 node_of_user: list[int] | None = None, freezers: int = 0,
                 freeze_norm: float = TINY) -> None:
        """On the in-process engine by default; on another engine's ``grid`` (Flower's
        Ray simulation) with ``node_of_user``, each user's node id there. ``freezers``:
        extra devices sampled in every round, each moving every row at ``freeze_norm``
        (:mod:`fedrec.simulations.attacks.stream_freeze`; in process, one worker, full
        sync)."""
        self.s = s
        self.run = s.run_settings()
        self.timeline = t = load_timeline(s)
        self.ticks = s.ticks(t)
        self.rating_range = rating_range(t, s.explicit)
        mean = fallback_mean(self.rating_range) if s.explicit else 0.0  # until they report
        first = max(1, t.listed_by(self.ticks[0].now)) if self.ticks else 1
        self.strategy: FedRec = build_strategy(self.run, first, mean, self.rating_range)
        self.strategy.train_schema = STREAM_TRAIN
        if s.neighbours:
            check_catalogue(t.n_items, s.dataset)
            self.strategy.neighbours = NeighbourServer(
                s.neighbours, s.neighbour_history, s.neighbour_refresh, first)
        self.rng = np.random.default_rng(self.run.seed + 17)
        config = self.run.to_run_config()
        devices = client_app if workers == 1 else build_client_app
        self.archive: TableArchive | None = None
        check_freezers(freezers, freeze_norm, self.run.max_norm)
        if freezers and (grid is not None or workers != 1 or self.run.sync != "full"):
            raise ValueError(f"freezers run in process, with one worker and full sync. "
                             f"Found {freezers} freezers with workers={workers}, "
                             f"sync={self.run.sync}.")
        if freezers:
            devices = freeze_client_app(t.n_users, freeze_norm, config, self.run.seed)
        if grid is not None:  # another engine's devices: each keeps its own table
            if node_of_user is None or len(node_of_user) != t.n_users:
                raise ValueError("a replay on another engine's grid needs each user's node")
            self.grid, self.node_of_user = grid, list(node_of_user)
            self.freezer_nodes: list[int] = []
        else:
            # Delta sync in one process: simulated devices' tables shared through an
            # archive of the versions sent, each checked bit for bit (see table_archive).
            if self.run.sync == "delta" and workers == 1:
                self.archive = TableArchive()
                self.keeper = ArchiveKeeper(self.archive)
                devices = build_client_app(None, self.keeper)
            elif self.run.sync == "delta":  # each worker's devices share its versions
                devices = partial(build_client_app, None, SharedKeeper())
            self.grid = InProcessGrid(devices, t.n_users + freezers, config,
                                      workers=workers, observer=observer)
            nodes = list(self.grid.get_node_ids())  # partition id = user index
            self.node_of_user, self.freezer_nodes = nodes[:t.n_users], nodes[t.n_users:]
        features = t.data.item_features
        content = None if features is None or s.init != "content" else features.matrix
        self.now = float(self.ticks[0].now) if self.ticks else 0.0  # the simulated clock
        self.strategy.listings = TimedListings(
            t.item_listed, content, explicit=s.explicit, clock=lambda: self.now,
            rng=self.rng, init_std=self.run.init_std)
        self.loop = RoundLoop(self.strategy, self.grid, self.run.round_timeout,
                              before_send=None if self.archive is None else
                              lambda fed: self.archive.sent(fed.published, fed.static))
        self.rating_total = self.rating_count = 0.0
        self.sums = Sums(len(self.ticks))
        self.log: list[dict] = []

    # ---- the server's side of one tick ---------------------------------------------------
    def _sample(self, tick: Tick) -> list[int]:
        d = self.timeline.data
        active = np.unique(d.user[tick.start:tick.stop])
        if self.s.others_share > 0:
            appeared = np.unique(d.user[:tick.start])
            others = np.setdiff1d(appeared, active)
            n = min(len(others), round(self.s.others_share * len(active)))
            if n:
                active = np.union1d(active, self.rng.choice(others, n, replace=False))
        return [self.node_of_user[u] for u in active] + list(self.freezer_nodes)

    def step(self, tick: Tick) -> dict:
        """One tick: one round of the server's loop at the tick's time, over the devices
        with new events in it; returns the round's record."""
        r = tick.index + 1
        start = time.perf_counter()
        self.now = float(tick.now)
        nodes = self._sample(tick)
        # No device has more new events than the tick: what bounds its claims this round.
        train = self.loop.train(r, nodes, {"until": int(tick.stop),
                                           "stream-mode": self.s.mode,
                                           "buffer": int(self.s.buffer),
                                           "replay": float(self.s.replay),
                                           "new-days": float(self.s.new_days)},
                                round_events=tick.stop - tick.start)
        stored = device_s = 0.0
        for metrics in self.strategy.accepted_metrics:  # every field checked
            self.sums.add(tick.index, metrics)
            self.rating_total += metrics["rating-sum"]
            self.rating_count += metrics["rating-count"]
            stored += metrics["stored-events"]
            device_s += metrics["device-s"]
        if self.s.explicit and self.rating_count:
            self.strategy.model.params.mean = self.rating_total / self.rating_count
        record = {"round": r, "events": tick.stop - tick.start, "devices": len(nodes),
                  "replies": int(train["accepted"] + train["rejected"]),
                  "items": self.strategy.model.n_items,
                  "seconds": time.perf_counter() - start,
                  "download_bytes": train["download-bytes"],
                  "first_contact_bytes": train["first-contact-bytes"],
                  "full_table_bytes": train["full-table-bytes"],
                  "upload_bytes": train["upload-bytes"],
                  "stored_events_per_device": stored / max(1, train["accepted"]),
                  "device_s": device_s,
                  "lag_s": float(tick.now - self.timeline.data.timestamp[
                      tick.start:tick.stop].mean())}
        self.log.append(record)
        return record

    def replay(self, progress: Progress | None = None) -> Sums:
        level = FLOWER_LOGGER.level
        FLOWER_LOGGER.setLevel(logging.WARNING)
        try:
            for tick in self.ticks:
                self.step(tick)
                if progress is not None:
                    progress(f"federated {self.s.mode}/{self.s.init}", tick.stop,
                             self.ticks[-1].stop)
        finally:
            FLOWER_LOGGER.setLevel(level)
            if isinstance(self.grid, InProcessGrid):
                self.grid.close()
        return self.sums

    def summary(self) -> dict:
        log = self.log
        seconds = sum(r["seconds"] for r in log)
        device_s = sum(r["device_s"] for r in log)
        messages = sum(r["devices"] for r in log)
        return {"rounds": len(log), "compute_s": seconds,
                "device_s_per_message": device_s / max(1, messages),
                "seconds_per_round": seconds / max(1, len(log)),
                "download_bytes": float(sum(r["download_bytes"] for r in log)),
                "sync": self.run.sync,
                "full_table_bytes": float(sum(r["full_table_bytes"] for r in log)),
                **_download_shares(log),
                "tables_checked": self.keeper.checked if self.archive is not None else 0,
                "upload_bytes": float(sum(r["upload_bytes"] for r in log)),
                "messages": int(messages),
                "stored_events_per_device": float(np.mean(
                    [r["stored_events_per_device"] for r in log])) if log else 0.0,
                "stored_bytes_per_device": 20.0 * float(np.mean(  # item, value, time
                    [r["stored_events_per_device"] for r in log])) if log else 0.0,
                "latency": {"rounds": 1.0 if all(r["replies"] == r["devices"] for r in log)
                            else float("nan"),
                            "mean_event_to_round_s": float(np.average(
                                [r["lag_s"] for r in log], weights=[r["events"] for r in log]))
                            if log else 0.0,
                            "round_wall_s": seconds / max(1, len(log))},
                "rejected": dict(self.strategy.rejected),
                **self._neighbours_summary()}

    def _neighbours_summary(self) -> dict:
        """The neighbours part's end state, when the run has it: its k, the ratings and
        devices its sums count, ratings past its catalogue limit, and the table's size."""
        server = self.strategy.neighbours
        if server is None:
            return {}
        table = server.table
        return {"neighbours": {
            "k": server.k, "history": server.history, "refresh_rounds": server.refresh,
            **{key.removeprefix("neighbour-"): value
               for key, value in server.summary().items()},
            "table_items": table.n_items,
            "table_bytes": float(table.ids.nbytes + table.sims.nbytes),
            "neighbours_per_item": float((table.ids >= 0).sum(axis=1).mean())
            if table.n_items else 0.0}}


def _download_shares(log: list[dict]) -> dict[str, float]:
    """Bytes sent against a whole table to every message, overall and past each device's
    first contact (which gets the whole table either way)."""
    down = sum(r["download_bytes"] for r in log)
    full = sum(r["full_table_bytes"] for r in log)
    first = sum(r["first_contact_bytes"] for r in log)
    return {"download_share_of_full": float(down / max(1.0, full)),
            "first_contact_bytes": float(first),
            "download_share_of_full_after_first_contact": float(
                (down - first) / max(1.0, full - first))}
