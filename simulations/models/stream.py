"""The centralized models a stream is replayed through, beside the federated one.

Each walks the timeline event by event, scoring the event (``prequential``) before it may
learn from it, and sums its scores per tick:

* ``centralized-incremental``: the same biased MF learned online, one SGD step per event on
  both the user and the item rows, with no federation and no round lag (the cost of
  federation is the gap to it);
* ``periodic-retrain``: MF retrained from scratch on everything so far at fixed points of
  the stream (at a high cost); between retrains its item side is frozen;
* ``static``: MF trained once on the first part of the stream, never updated (the value of
  incrementality is the gap to it); ``static-foldin``: the same, but users are folded in;

(folding in: one SGD step on the user's vector per event, items fixed, as a deployed batch
model serves users it was not trained on; ``periodic-retrain`` folds users in between fits);
* ``recent-popularity`` (implicit): items ranked by their count in a sliding window of recent
  events; ``online-bias`` (explicit): ``μ + b_u + b_i`` learned online.

Users and items the model does not know yet are scored from what it does know (the mean,
the item's bias, a zero user vector), never from the event itself.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import numpy as np

from fedrec.common.first_moves import FirstMoves
from fedrec.common.losses import negative_weights, online_bce_step, online_rating_step
from fedrec.common.metrics import (
    add_rank_score,
    add_rating_score,
    add_top_share,
    prequential_sums,
    rank_among,
)
from fedrec.common.mf import MatrixFactorization, MFConfig
from fedrec.common.neighbours import NeighbourStats, NeighbourTable, residual
from fedrec.common.optim import COUNT, DEFAULT_HALVING, make_step_rule
from fedrec.common.segments import Segments
from fedrec.common.stream import Tick, Timeline
from fedrec.simulations.engines.prequential import K, Sums

Progress = Callable[[int], None]  # called with the number of events processed


class _Replay:
    """Shared walk over the timeline: per event, ``score`` then ``learn``."""

    def __init__(self, timeline: Timeline, ticks: list[Tick], explicit: bool,
                 rating_range: tuple[float, float], new_days: float) -> None:
        self.t, self.ticks, self.explicit = timeline, ticks, explicit
        self.low, self.high = rating_range
        self.new_days = new_days
        self.seen = (None if explicit
                     else np.zeros((timeline.n_users, timeline.n_items), dtype=bool))
        # The instrument every model of the bench is measured with (common.segments): users
        # by their events in the stream, items by theirs.
        segments = Segments.of(timeline.data)
        self.group = segments.groups(np.bincount(timeline.data.user,
                                                 minlength=timeline.n_users))
        self.tail = segments.tail_mask(timeline.n_items)

    def run(self, score: Callable[[int, int, int], object], learn: Callable[[int], None],
            progress: Progress | None = None, before_tick: Callable[[Tick], None] | None = None
            ) -> Sums:
        d = self.t.data
        sums = Sums(len(self.ticks))
        listed = self.t.item_listed
        for tick in self.ticks:
            if before_tick is not None:
                before_tick(tick)
            acc = prequential_sums()
            for e in range(tick.start, tick.stop):
                u, i = int(d.user[e]), int(d.item[e])
                new = (d.timestamp[e] - listed[i]) < self.new_days * 86_400
                n_listed = self.t.listed_by(int(d.timestamp[e]))
                group, tail = self.group[u], bool(self.tail[i])
                if self.explicit:
                    pred = min(max(float(score(u, i, n_listed)), self.low), self.high)
                    add_rating_score(acc, pred - float(d.value[e]), new, group, tail)
                elif not self.seen[u, i]:
                    scores = np.asarray(score(u, i, n_listed), dtype=np.float64).copy()
                    add_rank_score(acc, rank_among(scores, i, self.seen[u, :len(scores)]),
                                   new, K, group, tail)
                    add_top_share(acc, scores, self.tail[:len(scores)], K)
                if self.seen is not None:
                    self.seen[u, i] = True
                learn(e)
            sums.add(tick.index, acc)
            if progress is not None:
                progress(tick.stop)
        return sums


def _known(u: int, i: int, n_users: int, n_items: int) -> None:
    """A per-event check (two comparisons): ValueError naming the user or item a model
    sized to the timeline does not have."""
    if not 0 <= u < n_users:
        raise ValueError(f"user {u} is unknown: the model has {n_users} users")
    if not 0 <= i < n_items:
        raise ValueError(f"item {i} is unknown: the model has {n_items} items")


class OnlineMF:
    """Biased MF with one SGD step per event on the user's and the item's rows (BCE with
    sampled negatives for implicit data); tables sized to the timeline's users and items
    (an item is scored and trained once listed: ``n_listed``); an id outside them is
    refused by name."""

    def __init__(self, n_users: int, n_items: int, n_factors: int, explicit: bool,
                 lr: float, reg: float, reg_bias: float, negatives: int = 4,
                 init_std: float = 0.1, seed: int = 0, bias_lr: float | None = None,
                 negative_weight: float = 1.0, item_rule: str = "sgd",
                 item_rule_lr: float = 1.0, bias_rule: str | None = None,
                 bias_rule_lr: float | None = None, halving: float = DEFAULT_HALVING,
                 neighbours: int = 0, neighbour_history: int = 200) -> None:
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.p = rng.normal(0, init_std, (n_users, n_factors))
        self.q = rng.normal(0, init_std, (n_items, n_factors))
        self.bu, self.bi = np.zeros(n_users), np.zeros(n_items)
        self.explicit, self.lr, self.reg, self.reg_bias = explicit, lr, reg, reg_bias
        self.bias_lr = lr if bias_lr is None else bias_lr
        self.negatives, self.negative_weight = negatives, negative_weight
        self.total, self.count = 0.0, 0
        # The item side's step rules (factors, biases; the biases' None: the factors'), as
        # the federated server applies them to a round's summed moves (common.optim): here
        # each event's move is its own round. SGD at 1 is the plain online step.
        bias_rule = item_rule if bias_rule is None else bias_rule
        bias_rule_lr = item_rule_lr if bias_rule_lr is None else bias_rule_lr
        self._rules = None
        if (item_rule, item_rule_lr, bias_rule, bias_rule_lr) != ("sgd", 1.0, "sgd", 1.0):
            self._rules = (make_step_rule(item_rule, item_rule_lr, self.q.shape, halving),
                           make_step_rule(bias_rule, bias_rule_lr, self.bi.shape, halving))
        # As the server counts for the Count rule: each user once per row.
        self._moved = FirstMoves() if COUNT in (item_rule, bias_rule) else None
        # The neighbours part (ratings; common.neighbours), as the federated run has it:
        # each user's residuals, the sums over users, the table (:meth:`refresh`).
        self.k, self.history = neighbours, neighbour_history
        if neighbours:
            if not explicit:
                raise ValueError("neighbours is a part of the ratings model")
            self.stats = NeighbourStats(n_items)
            self.table = NeighbourTable.empty(neighbours)
            self.residual = np.zeros((n_users, n_items))
            self.rated = np.zeros((n_users, n_items))
            self.order: list[list[int]] = [[] for _ in range(n_users)]  # rated, in order

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def score(self, u: int, i: int, n_listed: int) -> float | np.ndarray:
        _known(u, i, len(self.bu), len(self.bi))
        if self.explicit:
            pred = self.mean + self.bu[u] + self.bi[i] + self.p[u] @ self.q[i]
            if self.k:
                pred += self.table.term(i, self.residual[u], self.rated[u])
            return pred
        return self.q[:n_listed] @ self.p[u] + self.bi[:n_listed]

    def refresh(self) -> None:
        """The neighbours table made anew from the sums (as the server does every few
        rounds)."""
        if self.k:
            self.table = self.stats.table(self.k)

    def _residual(self, u: int, i: int, value: float, width: float) -> None:
        """The neighbours part's record of user ``u``'s rating of ``i`` (against the
        baseline before learning it, within ``±width``); a first rating of ``i`` adds the
        user's pairs to the sums, as a device's reply does."""
        e = residual(value, self.mean + self.bu[u] + self.bi[i], width)
        if not self.rated[u, i]:
            order = self.order[u]
            old = np.array(order[-self.history:], dtype=np.int64)
            self.stats.add(old, self.residual[u, old], np.array([i]), np.array([e]),
                           self.history)
            order.append(i)
        self.residual[u, i], self.rated[u, i] = e, 1.0

    def learn(self, u: int, i: int, value: float, n_listed: int,
              width: float = np.inf) -> None:
        _known(u, i, len(self.bu), len(self.bi))
        p, lr = self.p[u].copy(), self.lr
        if self.explicit:
            if self.k:
                self._residual(u, i, value, width)
            self.total += value
            self.count += 1
            err = self.mean + self.bu[u] + self.bi[i] + p @ self.q[i] - value
            self.p[u], self.bu[u], q, b = online_rating_step(
                p, self.bu[u], self.q[i].copy(), self.bi[i], err, lr, self.reg,
                self.reg_bias, self.bias_lr)
            if self._rules is None:  # (the plain step, per rating: no arrays made)
                self.q[i], self.bi[i] = q, b
            else:
                self._move(u, np.array([i]), np.atleast_2d(q), np.atleast_1d(b))
            return
        rows = np.concatenate([[i], self.rng.integers(0, n_listed, self.negatives)])
        rows = np.unique(rows) if len(np.unique(rows)) != len(rows) else rows
        label = (rows == i).astype(np.float64)
        self.p[u], q, b = online_bce_step(
            p, self.q[rows], self.bi[rows], label, lr, self.reg, self.reg_bias, self.bias_lr,
            self.negative_weight)
        self._move(u, rows, q, b)

    def _move(self, u: int, rows: np.ndarray, q: np.ndarray, b: np.ndarray) -> None:
        """Move item ``rows`` (unique) to the step's ``q, b``, through the item rule (user
        ``u``'s move: for Count, counted on the rows ``u`` has not moved before)."""
        if self._rules is None:
            self.q[rows], self.bi[rows] = q, b
            return
        counts = None
        if self._moved is not None:
            order = np.argsort(rows)  # (rows are unique; the record takes them sorted)
            first = np.empty(len(rows), dtype=bool)
            first[order] = self._moved.new(u, rows[order])
            counts = first.astype(np.float64)
        self._rules[0].step(self.q, rows, self.q[rows] - q, counts)
        self._rules[1].step(self.bi, rows, self.bi[rows] - b, counts)


class OnlineBias:
    """``μ + b_u + b_i`` learned online: river's ``reco.Baseline`` with its documented
    ML-100K setting, ``SGD(0.025)`` on the squared loss (gradient ``2·err``, so 0.05 here)."""

    def __init__(self, n_users: int, n_items: int, lr: float = 0.05, reg: float = 0.0
                 ) -> None:
        self.bu, self.bi = np.zeros(n_users), np.zeros(n_items)
        self.lr, self.reg = lr, reg
        self.total, self.count = 0.0, 0

    def score(self, u: int, i: int, n_listed: int) -> float:
        _known(u, i, len(self.bu), len(self.bi))
        mean = self.total / self.count if self.count else 0.0
        return mean + self.bu[u] + self.bi[i]

    def learn(self, u: int, i: int, value: float) -> None:
        err = self.score(u, i, 0) - value
        self.total += value
        self.count += 1
        self.bu[u] -= self.lr * (err + self.reg * self.bu[u])
        self.bi[i] -= self.lr * (err + self.reg * self.bi[i])


def centralized_incremental(timeline: Timeline, ticks: list[Tick], explicit: bool,
                            rating_range: tuple[float, float], new_days: float,
                            config: dict, progress: Progress | None = None,
                            neighbour_refresh: int = 1) -> Sums:
    """Online MF over the stream (``config``: :class:`OnlineMF`'s settings), its
    neighbours table (when it has the part) refreshed every ``neighbour_refresh`` ticks."""
    model = OnlineMF(timeline.n_users, timeline.n_items, explicit=explicit, **config)
    d = timeline.data
    width = rating_range[1] - rating_range[0]
    replay = _Replay(timeline, ticks, explicit, rating_range, new_days)

    def before_tick(tick: Tick) -> None:  # the server's refresh after every refresh-th round
        if tick.index and tick.index % neighbour_refresh == 0:
            model.refresh()

    return replay.run(model.score, lambda e: model.learn(
        int(d.user[e]), int(d.item[e]), float(d.value[e]),
        timeline.listed_by(int(d.timestamp[e])), width), progress, before_tick)


def online_bias(timeline: Timeline, ticks: list[Tick], rating_range: tuple[float, float],
                new_days: float, progress: Progress | None = None) -> Sums:
    model = OnlineBias(timeline.n_users, timeline.n_items)
    d = timeline.data
    replay = _Replay(timeline, ticks, True, rating_range, new_days)
    return replay.run(model.score, lambda e: model.learn(int(d.user[e]), int(d.item[e]),
                                                         float(d.value[e])), progress)


def recent_popularity(timeline: Timeline, ticks: list[Tick], new_days: float, window: int,
                      progress: Progress | None = None) -> Sums:
    """Items ranked by their count among the last ``window`` events."""
    counts = np.zeros(timeline.n_items)
    recent: deque[int] = deque()
    d = timeline.data

    def score(u: int, i: int, n_listed: int) -> np.ndarray:
        return counts[:n_listed]

    def learn(e: int) -> None:
        item = int(d.item[e])
        counts[item] += 1
        recent.append(item)
        if len(recent) > window:
            counts[recent.popleft()] -= 1

    replay = _Replay(timeline, ticks, False, (-np.inf, np.inf), new_days)
    return replay.run(score, learn, progress)


class _Frozen:
    """A batch-trained MF whose item side stays as fitted until the next fit. Users are
    folded in online (one SGD step on the user's vector per event, items fixed), as a
    device does and as a deployed batch model serves users it has not been trained on."""

    def __init__(self, n_users: int, n_factors: int, explicit: bool, fold_lr: float,
                 negatives: int, seed: int = 0, negative_weight: float = 1.0) -> None:
        self.model: MatrixFactorization | None = None
        self.n_items = 0
        self.explicit, self.fold_lr, self.negatives = explicit, fold_lr, negatives
        self.negative_weight = negative_weight
        self.p = np.zeros((n_users, n_factors))
        self.bu = np.zeros(n_users)
        self.rng = np.random.default_rng(seed)
        self.total = self.count = 0.0  # before the first fit: the mean rating so far

    def fit(self, config: MFConfig, user: np.ndarray, item: np.ndarray, value: np.ndarray
            ) -> None:
        n_users, self.n_items = int(user.max()) + 1, int(item.max()) + 1
        self.model = MatrixFactorization(config).fit(
            user, item, value if self.explicit else None, n_users=n_users,
            n_items=self.n_items)
        self.p[:n_users] = self.model.users.factors
        self.bu[:n_users] = self.model.users.bias

    def _item(self, i: int) -> tuple[np.ndarray, float]:
        m = self.model
        if m is None or i >= self.n_items:
            return np.zeros(self.p.shape[1]), 0.0
        return m.items.factors[i].astype(np.float64), float(m.items.bias[i])

    def _mean(self) -> float:
        if self.model is not None:
            return float(self.model.items.mean)
        return self.total / self.count if self.count else 0.0

    def score(self, u: int, i: int, n_listed: int) -> float | np.ndarray:
        if self.explicit:
            q, b = self._item(i)
            return self._mean() + self.bu[u] + b + q @ self.p[u]
        scores = np.zeros(n_listed)
        if self.model is not None:
            k = min(n_listed, self.n_items)
            scores[:k] = self.model.items.factors[:k] @ self.p[u] + self.model.items.bias[:k]
        return scores

    def learn(self, u: int, i: int, value: float, n_listed: int) -> None:
        self.total += value
        self.count += 1
        if self.model is None or not self.fold_lr:
            return
        lr, p = self.fold_lr, self.p[u]
        if self.explicit:
            q, b = self._item(i)
            err = self._mean() + self.bu[u] + b + q @ p - value
            self.p[u] = p - lr * err * q
            self.bu[u] -= lr * err
            return
        rows = np.concatenate([[i], self.rng.integers(0, n_listed, self.negatives)])
        rows = rows[rows < self.n_items]
        if not len(rows):
            return
        q = self.model.items.factors[rows].astype(np.float64)
        s = q @ p + self.model.items.bias[rows]
        label = (rows == i).astype(np.float64)
        ds = 0.5 * np.tanh(0.5 * s) + 0.5 - label
        w = negative_weights(label, self.negative_weight)
        self.p[u] = p - lr * ((ds if w is None else ds * w) @ q)


def frozen_replay(timeline: Timeline, ticks: list[Tick], explicit: bool,
                  rating_range: tuple[float, float], new_days: float, config: MFConfig,
                  fit_at: list[int], fold_lr: float, negatives: int,
                  progress: Progress | None = None, negative_weight: float = 1.0
                  ) -> tuple[Sums, float]:
    """MF fitted from scratch on every event before each position in ``fit_at`` (once, for
    the static model; periodically, for the retrained one), users folded in between.
    Returns the sums and the seconds spent fitting."""
    frozen = _Frozen(timeline.n_users, config.n_factors, explicit, fold_lr, negatives,
                     config.seed, negative_weight)
    d = timeline.data
    pending = sorted(set(fit_at))
    fit_s = [0.0]

    def before_tick(tick: Tick) -> None:
        while pending and pending[0] <= tick.start:
            stop = pending.pop(0)
            if stop:
                start = time.perf_counter()
                frozen.fit(config, d.user[:stop], d.item[:stop], d.value[:stop])
                fit_s[0] += time.perf_counter() - start

    replay = _Replay(timeline, ticks, explicit, rating_range, new_days)
    sums = replay.run(frozen.score, lambda e: frozen.learn(
        int(d.user[e]), int(d.item[e]), float(d.value[e]),
        timeline.listed_by(int(d.timestamp[e]))), progress, before_tick)
    return sums, fit_s[0]
