"""A device whose events arrive over time: prequential scoring, online user steps, and the
two training modes of the brief.

When the device learns of new events (its app recorded them; in simulation, the server's
clock reveals them: every event before position ``until`` of the timeline, so events with
equal timestamps split exactly where the ticks split them), it takes them in time order
and, for each, first *scores* it with what it knows at that moment (its user vector, its
copy of the item rows), then takes one online SGD step on its private user vector and on
its copy of the item rows. The next reply uploads how the item rows moved: those online
steps and, by mode,

* ``incremental``: replays of older events sampled from a bounded buffer of the device's
  most recent events (``replay`` of them per new event), which it keeps;
* ``recursive``: nothing more (or more passes over the new events only), after which the
  device forgets them.

Scores are reported as sums a server can pool (never per event): squared and absolute
error for ratings; for implicit events, hits and NDCG@10 of the event's item ranked among
all listed items the user has not interacted with before (first interactions only).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from fedrec.client.device import Device, UserState
from fedrec.common.losses import online_bce_step, online_rating_step
from fedrec.common.metrics import (
    add_rank_score,
    add_rating_score,
    add_top_share,
    prequential_sums,
    rank_among,
)
from fedrec.common.neighbours import NeighbourTable
from fedrec.common.neighbours import residual as residual_of
from fedrec.common.params import known_ids
from fedrec.common.schema import ItemUpdate, TrainConfig
from fedrec.common.segments import Segments

MODES = ("incremental", "recursive")
K = 10


@dataclass
class Cursor:
    """How far the device has got in its own timeline."""

    seen: int = 0  # events scored and learned by the user vector
    trained: int = 0  # events the item side has been trained on (recursive mode)


class WorkingTable:
    """A device's working copy of the item side for one message: the synced table, read
    only, and in float64 the rows (and biases, and example counts) this message has moved.

    It stands for the whole table copied to float64 and back, which cost most of a
    replay's time on a large catalogue (a 100,000-row table is 25 MB a message) while a
    message moves a few dozen rows. What it computes is what the copy gave: a row starts
    from the synced float32 value; Device.train is handed the rows it asks for in float32
    (:meth:`float32`)."""

    def __init__(self, factors: np.ndarray, bias: np.ndarray) -> None:
        self.factors, self.base_bias = factors, bias
        self.shape = factors.shape
        self._slot = np.full(len(factors), -1, dtype=np.int64)
        self.ids = np.empty(0, dtype=np.int64)
        self.q = np.empty((0, factors.shape[1]), dtype=np.float64)
        self.b = np.empty(0, dtype=np.float64)
        self.counts = np.empty(0, dtype=np.float64)

    def slots(self, items: np.ndarray) -> np.ndarray:
        """Where each of ``items`` is kept (taken from the synced table the first time)."""
        items = np.asarray(items, dtype=np.int64)
        at = self._slot[items]
        if (at < 0).any():
            new = np.unique(items[at < 0])
            self._slot[new] = len(self.ids) + np.arange(len(new))
            self.ids = np.concatenate([self.ids, new])
            self.q = np.concatenate([self.q, self.factors[new].astype(np.float64)])
            self.b = np.concatenate([self.b, self.base_bias[new].astype(np.float64)])
            self.counts = np.concatenate([self.counts, np.zeros(len(new))])
            at = self._slot[items]
        return at

    def scores(self, p: np.ndarray) -> np.ndarray:
        """Every item's score ``q_i · p + b_i`` as the device's rows stand now."""
        out = (self.factors @ p.astype(self.factors.dtype)).astype(np.float64)
        out += self.base_bias
        if len(self.ids):
            out[self.ids] = self.q @ p + self.b
        return out

    def float32(self) -> _Float32View:
        return _Float32View(self)

    def moved(self) -> np.ndarray:
        """The rows this message trained on (sorted)."""
        return np.sort(self.ids[self.counts > 0])


class _Float32View:
    """The working table as Device.train reads it: its shape, and rows by index, in float32
    (what ``table.astype(np.float32)[ids]`` gave)."""

    def __init__(self, table: WorkingTable, bias: bool = False) -> None:
        self.table, self.is_bias = table, bias
        self.shape = table.base_bias.shape if bias else table.shape

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def bias(self) -> _Float32View:
        return _Float32View(self.table, bias=True)

    def __getitem__(self, items: np.ndarray) -> np.ndarray:
        t = self.table
        items = np.asarray(items, dtype=np.int64)
        out = (t.base_bias if self.is_bias else t.factors)[items].astype(np.float32)
        at = t._slot[items]
        mine = at >= 0
        if mine.any():
            out[mine] = (t.b if self.is_bias else t.q)[at[mine]]
        return out


class StreamDevice:
    """One user's timeline (items, values and times in time order) and the device's state."""

    def __init__(self, items: np.ndarray, values: np.ndarray, times: np.ndarray,
                 positions: np.ndarray | None = None, state: UserState | None = None,
                 cursor: Cursor | None = None, seed: int = 0,
                 residuals: np.ndarray | None = None) -> None:
        self.items = np.asarray(items, dtype=np.int64)
        self.values = np.asarray(values, dtype=np.float32)
        self.times = np.asarray(times, dtype=np.int64)
        self.positions = (np.arange(len(self.items)) if positions is None
                          else np.asarray(positions, dtype=np.int64))
        if not (len(self.items) == len(self.values) == len(self.times)
                == len(self.positions)):
            raise ValueError("items, values, times and positions must have the same length")
        if len(self.times) > 1 and ((np.diff(self.times) < 0).any()
                                    or (np.diff(self.positions) <= 0).any()):
            raise ValueError("events must be in time order")
        self.user = state
        self.cursor = cursor or Cursor()
        self.rng = np.random.default_rng(seed)
        self._table: WorkingTable | None = None  # the item rows as this device moved them
        # The neighbours part (common.neighbours): the residual of each event seen, against
        # the baseline μ + b_u + b_i when it was scored (NaN: seen without the part; kept
        # up to date only by arrivals with the part), and the ratings of the last arrival
        # the device has not sent yet.
        self.residuals = np.full(self.cursor.seen, np.nan, dtype=np.float32)
        if residuals is not None:
            residuals = np.asarray(residuals, dtype=np.float32)
            if residuals.shape != (self.cursor.seen,):
                raise ValueError(f"residuals: {residuals.shape} for {self.cursor.seen} "
                                 f"events seen")
            self.residuals = residuals.copy()
        self._contribution = (np.empty(0, np.int64), np.empty(0, np.float32))

    def arrived(self, until: int) -> int:
        """How many of the device's events come before timeline position ``until``."""
        return int(np.searchsorted(self.positions, until, side="left"))

    # ---- arrival: score, then learn ---------------------------------------------------
    def arrive(self, until: int, factors: np.ndarray, bias: np.ndarray, mean: float,
               config: TrainConfig, listed: np.ndarray | None = None, new_days: float = 7.0,
               rating_range: tuple[float, float] = (-np.inf, np.inf),
               pool: np.ndarray | None = None, segments: Segments | None = None,
               neighbours: NeighbourTable | None = None) -> dict[str, float]:
        """Score, then learn, every event before position ``until`` not seen yet; returns
        the pooled score sums.

        Learning is one online SGD step per event on the user vector and on the device's
        copy of the item rows (for implicit events: the item and ``negatives`` sampled
        items); the item rows' changes are what the next reply uploads. ``listed`` (listing
        time per item) marks events on items younger than ``new_days`` days, whose scores
        are also summed apart (``new-*`` keys). ``pool``: the round's public negative pool
        (:func:`~fedrec.common.negatives.negative_pool`), the only items negatives are drawn
        from when given. ``segments`` (:mod:`fedrec.common.segments`, a bench's
        instrument): the scores are also summed for the device's user segment (by its
        events in the whole timeline) and for events on tail items. ``neighbours`` (ratings;
        the run has the neighbours part, :mod:`fedrec.common.neighbours`): its table adds
        the part to each prediction, and each event's residual is kept and, for an item
        the device has not rated before, sent with the next reply (:meth:`contribution`).
        """
        k = factors.shape[1]
        if self.user is None or self.user.factors.shape != (k,):
            self.user = UserState(
                self.rng.normal(0.0, config.init_std, size=k).astype(np.float32), 0.0)
        start, stop = self.cursor.seen, self.arrived(until)
        self._contribution = (np.empty(0, np.int64), np.empty(0, np.float32))
        if neighbours is not None:  # (kept only with the part: see :attr:`residuals`)
            self.residuals = np.concatenate([self.residuals[:start],
                                             np.full(stop - start, np.nan, np.float32)])
        # (events arrive only for listed items: one past the table is refused by name)
        known_ids("item", self.items[start:stop], len(factors))
        self._table = WorkingTable(factors, bias)  # the device's copy of the item side
        sums = prequential_sums()
        if stop > start:
            new = np.zeros(stop - start, dtype=bool)
            if listed is not None:
                age = self.times[start:stop] - listed[self.items[start:stop]]
                new = age < new_days * 86_400
            group, tail, tail_items = None, np.zeros(stop - start, dtype=bool), None
            if segments is not None:
                group = segments.group(len(self.items))
                tail_items = segments.tail_mask(len(factors))
                tail = tail_items[self.items[start:stop]]
            if config.explicit:
                self._arrive_ratings(start, stop, mean, config, new, rating_range, sums,
                                     group, tail, neighbours)
            else:
                self._arrive_implicit(start, stop, config, new, sums, pool, group, tail,
                                      tail_items)
            self.cursor.seen = stop
        return {f"pq-{key}": v for key, v in sums.items()}

    def _arrive_ratings(self, start: int, stop: int, mean: float, config: TrainConfig,
                        new: np.ndarray, rating_range: tuple[float, float], sums: dict,
                        group: str | None, tail: np.ndarray,
                        neighbours: NeighbourTable | None = None) -> None:
        p = self.user.factors.astype(np.float64)
        bu = float(self.user.bias)
        lr, reg, reg_b = config.lr, config.reg, config.reg_bias
        low, high = rating_range
        w = self._table
        at = w.slots(self.items[start:stop])
        q_all, b_all = w.q, w.b
        if neighbours is not None:  # the user's residuals over the catalogue, as known
            n_items = w.shape[0]
            residual, rated = np.zeros(n_items), np.zeros(n_items)
            kept = ~np.isnan(self.residuals[:start])
            residual[self.items[:start][kept]] = self.residuals[:start][kept]
            rated[self.items[:start][kept]] = 1.0
            first = rated[self.items[start:stop]] == 0  # items not rated (sent) before
            width = high - low
        for j in range(stop - start):  # per event: score, then one SGD step
            i, item = at[j], self.items[start + j]
            q = q_all[i]
            base = mean + bu + b_all[i]
            pred = base + q @ p  # what the factors and biases learn from
            shown = pred if neighbours is None else \
                pred + neighbours.term(item, residual, rated)
            value = self.values[start + j]
            add_rating_score(sums, min(max(shown, low), high) - value, new[j], group,
                             bool(tail[j]))
            if neighbours is not None:  # (within the scale's width, as the server checks)
                e = residual_of(value, base, width)
                self.residuals[start + j] = e
                residual[item], rated[item] = e, 1.0
            p, bu, q_all[i], b_all[i] = online_rating_step(
                p, bu, q, b_all[i], pred - value, lr, reg, reg_b)
            w.counts[i] += 1
        self.user = UserState(p.astype(np.float32), bu)
        if neighbours is not None:  # each item's first rating, once (a repeat stays here)
            items = self.items[start:stop]
            _, once = np.unique(items, return_index=True)
            mask = np.zeros(len(items), dtype=bool)
            mask[once] = True
            mask &= first
            self._contribution = (items[mask].astype(np.int64),
                                  self.residuals[start:stop][mask].astype(np.float32))

    def contribution(self) -> dict[str, np.ndarray]:
        """The neighbours part's share of the next reply: the items first rated in the last
        arrival (in time order) and the residual on each."""
        items, residuals = self._contribution
        return {"items": items, "residuals": residuals}

    def _arrive_implicit(self, start: int, stop: int, config: TrainConfig, new: np.ndarray,
                         sums: dict, pool: np.ndarray | None, group: str | None,
                         tail: np.ndarray, tail_items: np.ndarray | None = None) -> None:
        p = self.user.factors.astype(np.float64)
        lr, reg, reg_b = config.lr, config.reg, config.reg_bias
        w = self._table
        n_items = w.shape[0]
        seen = np.zeros(n_items, dtype=bool)
        seen[self.items[:start]] = True
        for j in range(stop - start):
            item = self.items[start + j]
            if not seen[item]:  # a first interaction: rank it among the unseen items
                scores = w.scores(p)
                add_rank_score(sums, rank_among(scores, item, seen), new[j], K, group,
                               bool(tail[j]))
                if tail_items is not None:  # the tail's share of the top K shown
                    add_top_share(sums, scores, tail_items, K)
                seen[item] = True
            # One BCE step: this positive and negatives drawn uniformly from the catalogue.
            # (Not only from items this user has not touched: that would concentrate the
            # negative pressure on what few users have seen yet — new listings — and bury
            # them; measured on ML-100K, first-week HR@10 of late listings 0.02 vs 0.085.)
            negs = (self.rng.integers(0, n_items, size=config.negatives) if pool is None
                    else pool[self.rng.integers(0, len(pool), size=config.negatives)])
            negs = np.unique(negs[negs != item])
            rows = w.slots(np.concatenate([[item], negs]))
            label = np.zeros(len(rows))
            label[0] = 1.0
            p, w.q[rows], w.b[rows] = online_bce_step(
                p, w.q[rows], w.b[rows], label, lr, reg, reg_b,
                negative_weight=config.negative_weight)
            w.counts[rows] += 1
        self.user = UserState(p.astype(np.float32), float(self.user.bias))

    # ---- the round's item-side training -------------------------------------------------
    def training_rows(self, mode: str, buffer: int, replay: float = 1.0) -> np.ndarray:
        """Positions of the events a round trains on beyond the arrival steps:
        ``incremental``: ``replay`` older events per new one (at least one), sampled from
        the buffer of the ``buffer`` most recent events; ``recursive``: the new events
        (used only when ``local_epochs`` > 1)."""
        new = np.arange(self.cursor.trained, self.cursor.seen)
        if mode == "recursive":
            return new
        if mode != "incremental":
            raise ValueError(f"mode must be one of {', '.join(MODES)}. Found {mode!r}.")
        old = np.arange(max(0, self.cursor.seen - buffer), self.cursor.trained)
        n = min(len(old), int(np.ceil(replay * max(len(new), 1))))
        return np.sort(self.rng.choice(old, n, replace=False)) if n else old[:0]

    def train(self, factors: np.ndarray, bias: np.ndarray, mean: float, config: TrainConfig,
              mode: str, buffer: int, replay: float = 1.0, pool: np.ndarray | None = None
              ) -> tuple[ItemUpdate, dict[str, float]]:
        """The round's update: the arrival steps' item changes, plus ``local_epochs`` passes
        over replayed buffer events (``incremental``) or ``local_epochs - 1`` more passes
        over the new events (``recursive``), all on the device's copy of the item rows."""
        if self._table is None:
            raise RuntimeError("call arrive() before train()")
        rows = self.training_rows(mode, buffer, replay)
        epochs = config.local_epochs if mode == "incremental" else config.local_epochs - 1
        metrics = {"train-loss": 0.0, "num-examples": float(len(rows))}
        w = self._table
        if epochs > 0 and len(rows):
            device = Device(self.items[rows], self.values[rows], state=self.user,
                            seed=int(self.rng.integers(2**31)))
            view = w.float32()
            update, metrics = device.train(view, view.bias, mean,
                                           replace(config, local_epochs=epochs), pool=pool)
            self.user = device.user
            at = w.slots(update.ids)
            w.q[at] -= update.rows
            w.b[at] -= update.bias
            w.counts[at] += update.counts
        ids = w.moved()
        at = w.slots(ids)
        update = ItemUpdate(ids.astype(np.int64),
                            (factors[ids] - w.q[at]).astype(np.float32),
                            (bias[ids] - w.b[at]).astype(np.float32),
                            w.counts[at].astype(np.float32))
        self.cursor.trained = self.cursor.seen
        self._table = None
        return update, {**metrics,
                        "stored-events": float(self.stored_events(mode, buffer, replay))}

    def stored_events(self, mode: str, buffer: int, replay: float = 1.0) -> int:
        """Events the device must keep for its mode after this round (an incremental
        device that replays nothing keeps none)."""
        if mode == "incremental":
            return min(self.cursor.seen, buffer) if replay > 0 else 0
        return self.cursor.seen - self.cursor.trained
