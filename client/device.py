"""One shopper's device, without Flower: its events, its private user vector, local training.

:class:`Device` trains the user's half of the model (``p_u``, ``b_u``) on the device's own
events against the server's item rows, and returns an :class:`~fedrec.common.schema.ItemUpdate`
for the rows it touched: the pseudo-gradient ``row_before − row_after`` of its local copy.
The user vector never leaves the object except through :meth:`Device.state` (to persist it
on the device). The Flower ClientApp and the edge client only wrap this class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedrec.client import decoy
from fedrec.common.losses import (
    Regularization,
    bce_grads_one_user,
    mse_grads_one_user,
    mse_user_grads,
    negative_weights,
)
from fedrec.common.metrics import top_k
from fedrec.common.optim import sum_rows
from fedrec.common.params import known_ids
from fedrec.common.ranking import ranked
from fedrec.common.schema import ItemUpdate, TrainConfig
from fedrec.common.segments import Segments


@dataclass
class UserState:
    """The device's private half of the model."""

    factors: np.ndarray  # (k,) float32
    bias: float = 0.0


class Device:
    """A device holding one user's events: dense item ids and their values (ratings, or 1 for
    implicit events), kept sorted by item."""

    def __init__(self, items: np.ndarray, values: np.ndarray | None = None,
                 seed: int = 0, state: UserState | None = None) -> None:
        items = np.asarray(items, dtype=np.int64)
        values = (np.ones(len(items), np.float32) if values is None
                  else np.asarray(values, dtype=np.float32))
        if len(values) != len(items):
            raise ValueError("items and values must have the same length")
        if len(items) > 1 and not (items[1:] >= items[:-1]).all():
            order = np.argsort(items, kind="stable")
            items, values = items[order], values[order]
        self.items, self.values = items, values  # sorted by item
        self._distinct = len(items) < 2 or bool((items[1:] != items[:-1]).all())
        self.positives = items if self._distinct else np.unique(items)
        self._seed, self._rng = seed, None
        self.user = state
        self.last_decoys: np.ndarray | None = None  # decoy mode: which reply rows are decoys

    @property
    def rng(self) -> np.random.Generator:
        """The device's random stream, made on first use (making one costs ~20 µs, a
        noticeable share of a simulated device's round)."""
        if self._rng is None:
            self._rng = np.random.default_rng(self._seed)
        return self._rng

    # ---- training --------------------------------------------------------------------
    def train(self, factors: np.ndarray, bias: np.ndarray, mean: float,
              config: TrainConfig, reply_rows: int = 0, named: np.ndarray | None = None,
              rating_range: tuple[float, float] = (-np.inf, np.inf),
              pool: np.ndarray | None = None) -> tuple[ItemUpdate, dict[str, float]]:
        """Train locally against the item table (``factors``, ``bias``, global ``mean``).

        Returns the sparse item update and training metrics. The item table is read, never
        written. ``pool``: the round's public negative pool (sorted item ids,
        :func:`~fedrec.common.negatives.negative_pool`); implicit negatives are drawn from
        it rather than from the whole catalogue. With ``reply_rows`` (the ``decoy`` mode,
        :mod:`fedrec.client.decoy`), the update is padded with decoy rows, or subsampled,
        to exactly that many rows; :attr:`last_decoys` then marks the decoys (kept on the
        device, never sent).
        """
        n_items, k = factors.shape
        known_ids("item", self.positives, n_items)  # (an app filters events past its table)
        self._ensure_user(k, config)
        reg = Regularization(config.reg, config.reg_bias)
        ex = self._examples(n_items, config, pool, one_draw=bool(reply_rows))
        q0 = factors[ex.touched].astype(np.float32)
        b0 = bias[ex.touched].astype(np.float32)
        q, b = q0.copy(), b0.copy()
        p = self.user.factors.astype(np.float32, copy=True)
        bu = float(self.user.bias)
        if config.user_steps and len(ex.rows[0]):
            # Fit the private half first, items held fixed (cheap: no item rows move), so the
            # item update is computed against a user vector that fits the current items.
            li = ex.rows[0]
            p, bu = _fit_user(p, bu, q[li], b[li], ex.targets[0], mean, ex.explicit, reg,
                              config)
        p, bu, loss, epoch_users = self._epochs(ex, p, bu, q, b, mean, reg, config,
                                                keep_users=bool(reply_rows))
        self.user = UserState(p.astype(np.float32), float(bu))
        update = ItemUpdate(ids=ex.touched.astype(np.int64), rows=q0 - q, bias=b0 - b,
                            counts=ex.counts())
        if reply_rows:
            trace = self._trace(epoch_users, ex.rows, ex.touched, q0, b0, mean, ex.explicit,
                                reg, config, rating_range)
            update, self.last_decoys = decoy.pad(update, reply_rows, factors, bias, trace,
                                                 self.rng, named)
        return update, {"train-loss": loss / max(len(ex.rows[0]), 1),
                        "num-examples": float(len(self.items))}

    # ---- the steps of a round's training ----------------------------------------------
    def _examples(self, n_items: int, config: TrainConfig, pool: np.ndarray | None,
                  one_draw: bool) -> _Examples:
        """The rows this round touches, and each epoch's examples as local row indices
        with their targets: the ratings, or the positives and each epoch's negatives
        (``one_draw``: one draw for the whole round, the decoy mode's)."""
        epochs = config.local_epochs
        if config.explicit:
            touched = self.positives
            local = (np.arange(len(touched)) if self._distinct
                     else np.searchsorted(touched, self.items))
            return _Examples(True, touched, [local] * epochs, [self.values] * epochs,
                             distinct=self._distinct)
        pos = self.positives
        per = len(pos) * config.negatives
        # Each epoch's negatives are distinct (a draw repeated is dropped), so no row
        # appears twice within an epoch and rows update without a per-batch reduction.
        negs = [np.unique(self._negatives(pos, n_items, per, pool)) for _ in range(epochs)]
        if one_draw:
            # decoy mode: one draw of negatives for the round, visited every epoch like
            # the positives, so every row of a reply has the same count (1) and decoys,
            # also visited every epoch, keep a zero-mean data gradient.
            negs = [negs[0]] * epochs
        touched = np.union1d(pos, np.concatenate(negs)) if negs else pos
        lp = np.searchsorted(touched, pos)
        return _Examples(False, touched,
                         [np.concatenate([lp, np.searchsorted(touched, n)]) for n in negs],
                         [np.r_[np.ones(len(pos), np.float32), np.zeros(len(n), np.float32)]
                          for n in negs], distinct=True)

    def _epochs(self, ex: _Examples, p: np.ndarray, bu: float, q: np.ndarray,
                b: np.ndarray, mean: float, reg: Regularization, config: TrainConfig,
                keep_users: bool) -> tuple[np.ndarray, float, float, list]:
        """The local epochs: the user vector and the local item rows ``q``, ``b`` (in
        place) stepped batch by batch. Returns the user vector, the last epoch's summed
        loss and (``keep_users``) the user vector at each epoch's start."""
        lr, explicit = config.lr, ex.explicit
        whole = explicit and ex.distinct  # epoch rows are 0..n-1 in row order
        loss = 0.0
        epoch_users = []  # (p_u, b_u) at each epoch's start: decoys are stepped with them
        for epoch, (rows_e, target_e) in enumerate(zip(ex.rows, ex.targets, strict=True)):
            last = epoch == config.local_epochs - 1  # the reported loss is the last epoch's
            if keep_users:
                epoch_users.append((p.astype(np.float64), float(bu)))
            n = len(rows_e)
            order = self.rng.permutation(n) if config.optimizer == "sgd" else None
            size = {"gd": max(n, 1), "sgd": config.batch_size, "online": 1}[config.optimizer]
            if not ex.distinct:
                p, bu, part = _summed_batches(rows_e, target_e, order, size, p, bu, q, b,
                                              mean, reg, lr, last)
                loss += part
                continue
            # Each row appears once per epoch, so the epoch's rows are gathered once in
            # visiting order, batches update contiguous views of them, and they are
            # written back once: no per-batch fancy indexing.
            in_place = whole and order is None
            idx = rows_e if order is None else rows_e[order]
            y_e = target_e if order is None else target_e[order]
            q_e, b_e = (q, b) if in_place else (q[idx], b[idx])
            for i in range(0, n, size):
                qb, bb, y = q_e[i:i + size], b_e[i:i + size], y_e[i:i + size]
                if explicit:
                    g = mse_grads_one_user(mean, p, bu, qb, bb, y, reg, with_loss=last)
                    bu = bu - lr * g.user_bias
                else:
                    g = bce_grads_one_user(p, qb, bb, y, reg, with_loss=last,
                                           negative_weight=config.negative_weight)
                p = p - lr * g.user_factors
                qb -= lr * g.item_factors
                bb -= lr * g.item_bias
                if last:
                    loss += g.loss
            if not in_place:
                q[idx], b[idx] = q_e, b_e
        return p, bu, loss, epoch_users

    def _trace(self, epoch_users: list, epoch_rows: list[np.ndarray], touched: np.ndarray,
               q0: np.ndarray, b0: np.ndarray, mean: float, explicit: bool,
               reg: Regularization, config: TrainConfig,
               rating_range: tuple[float, float]) -> decoy.RoundTrace:
        """What this round's training knew, for :func:`fedrec.client.decoy.pad`."""
        residuals = np.empty(0)
        p0, bu0 = epoch_users[0]
        if explicit:
            local = np.searchsorted(touched, self.items)
            residuals = self.values - (mean + bu0 + b0[local] + q0[local] @ p0)
        whole = bool(explicit and np.all(self.values == np.round(self.values)))
        return decoy.RoundTrace(explicit, config.lr, reg, mean, epoch_users,
                                residuals.astype(np.float64), whole,
                                self.positives, rating_range, config.negative_weight)

    def refit_user(self, factors: np.ndarray, bias: np.ndarray, mean: float,
                   config: TrainConfig) -> None:
        """Fit the user vector alone to the current item table (no item update; nothing is
        sent). A device does this when new item rows arrive, before it recommends."""
        k = factors.shape[1]
        self._ensure_user(k, config)
        if not config.user_steps or not len(self.items):
            return
        explicit = config.explicit
        reg = Regularization(config.reg, config.reg_bias)
        if explicit:
            items, target = self.items, self.values
        else:
            pos = self.positives
            negs = self._negatives(pos, len(factors), len(pos) * config.negatives)
            items = np.concatenate([pos, negs])
            target = np.r_[np.ones(len(pos)), np.zeros(len(negs))].astype(np.float32)
        p, bu = _fit_user(self.user.factors.astype(np.float32), float(self.user.bias),
                          factors[items], bias[items], target, mean, explicit, reg, config)
        self.user = UserState(p.astype(np.float32), float(bu))

    def _ensure_user(self, k: int, config: TrainConfig) -> None:
        if self.user is None or self.user.factors.shape != (k,):
            self.user = UserState(
                self.rng.normal(0.0, config.init_std, size=k).astype(np.float32), 0.0)

    def _negatives(self, positives: np.ndarray, n_items: int, n: int,
                   pool: np.ndarray | None = None) -> np.ndarray:
        """Uniform draws among the items this device has not interacted with (of
        ``pool``, when given)."""
        if pool is not None:
            candidates = np.setdiff1d(pool, positives, assume_unique=True)
            if not len(candidates):
                return np.empty(0, dtype=np.int64)
            return candidates[self.rng.integers(0, len(candidates), size=n)].astype(np.int64)
        if len(positives) >= n_items:
            return np.empty(0, dtype=np.int64)
        draws = self.rng.integers(0, n_items - len(positives), size=n)
        # Map a draw over the non-positive items onto the item index (positives sorted).
        shift = np.searchsorted(positives - np.arange(len(positives)), draws, side="right")
        return draws + shift

    # ---- evaluation --------------------------------------------------------------------
    def predict(self, factors: np.ndarray, bias: np.ndarray, mean: float,
                items: np.ndarray, rating_range: tuple[float, float] = (-np.inf, np.inf)
                ) -> np.ndarray:
        """Predicted ratings of ``items`` for this user."""
        if self.user is None:
            return np.full(len(items), mean, dtype=np.float64)
        pred = mean + self.user.bias + bias[items] + factors[items] @ self.user.factors
        return np.clip(pred, *rating_range)

    def evaluate_ratings(self, factors: np.ndarray, bias: np.ndarray, mean: float,
                         items: np.ndarray, values: np.ndarray,
                         rating_range: tuple[float, float] = (-np.inf, np.inf)
                         ) -> dict[str, float]:
        """Sums a server can aggregate into RMSE and MAE over held-out ratings."""
        err = self.predict(factors, bias, mean, items, rating_range) - values
        return {"sq-err": float((err ** 2).sum()), "abs-err": float(np.abs(err).sum()),
                "num-examples": float(len(items))}

    def evaluate_ranking(self, factors: np.ndarray, bias: np.ndarray, test_items: np.ndarray,
                         k: int = 10, segments: Segments | None = None,
                         head: np.ndarray | None = None, bonus: float = 0.0,
                         similarity: float = 0.0) -> dict[str, float]:
        """Full-ranking metrics over every item this device has not trained on
        (:func:`rank_metrics` of :meth:`ranking_scores`)."""
        return rank_metrics(self.ranking_scores(factors, bias, head, bonus, similarity),
                            self.items, test_items, k, segments)

    def ranking_scores(self, factors: np.ndarray, bias: np.ndarray,
                       head: np.ndarray | None = None, bonus: float = 0.0,
                       similarity: float = 0.0) -> np.ndarray:
        """What this device ranks the catalogue by: the model's scores, with the
        ``similarity`` of each item to this device's items and the tail ``bonus`` against
        ``head``, as :func:`~fedrec.common.ranking.ranked` makes them (float64)."""
        p = self.user.factors if self.user is not None else np.zeros(factors.shape[1])
        return ranked(factors @ p + bias, factors, self.positives, similarity, head, bonus)


def rank_metrics(scores: np.ndarray, trained: np.ndarray, test_items: np.ndarray,
                 k: int = 10, segments: Segments | None = None) -> dict[str, float]:
    """One device's full-ranking metrics from its ``scores`` over the catalogue, its
    ``trained`` items left out of the ranking. With ``segments``
    (:mod:`fedrec.common.segments`, from the evaluation round's config), also the device's
    segment by its count of training events, and how many of its recommended places
    (``recs``), hits and held-out items are tail items."""
    test_items = np.unique(test_items)
    if not len(test_items):
        return {"num-users": 0.0}
    scores = np.array(scores, dtype=np.float64, copy=True)
    scores[trained] = -np.inf
    top = top_k(scores[None, :], k)[0]
    hits = np.isin(top, test_items)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = discounts[: min(len(test_items), k)].sum()
    n_hits = float(hits.sum())
    out = {"num-users": 1.0, f"hr@{k}": float(n_hits > 0),
           f"ndcg@{k}": float((hits * discounts[: len(top)]).sum() / ideal),
           f"recall@{k}": n_hits / len(test_items), f"precision@{k}": n_hits / k}
    if segments is not None:
        tail = segments.tail_mask(len(scores))
        placed = np.isfinite(scores[top])
        out.update({"segment": float(segments.segment(len(trained))),
                    "recs": float(placed.sum()),
                    "tail-recs": float((tail[top] & placed).sum()),
                    "tail-hits": float((tail[top] & hits).sum()),
                    "tail-test": float(tail[test_items[test_items < len(tail)]].sum())})
    return out


@dataclass(frozen=True)
class _Examples:
    """A round's examples: the rows it touches (``touched``, sorted item ids) and, per
    epoch, its examples as indices into them (``rows``) with their targets. ``distinct``:
    no row appears twice within an epoch (every implicit round; a rating device that
    rated each item once)."""

    explicit: bool
    touched: np.ndarray
    rows: list[np.ndarray]
    targets: list[np.ndarray]
    distinct: bool

    def counts(self) -> np.ndarray:
        """How many examples each touched row had, per epoch (the update's weights)."""
        if self.distinct and self.explicit:
            return np.ones(len(self.touched), dtype=np.float32)
        return (np.bincount(np.concatenate(self.rows), minlength=len(self.touched))
                .astype(np.float32) / len(self.rows))


def _summed_batches(rows_e: np.ndarray, target_e: np.ndarray, order: np.ndarray | None,
                    size: int, p: np.ndarray, bu: float, q: np.ndarray, b: np.ndarray,
                    mean: float, reg: Regularization, lr: float, last: bool
                    ) -> tuple[np.ndarray, float, float]:
    """One epoch of ratings where an item was rated more than once: each batch's rows
    summed before the step. Returns the user vector and the epoch's loss (when ``last``)."""
    order = np.arange(len(rows_e)) if order is None else order
    loss = 0.0
    for i in range(0, len(rows_e), size):
        li = rows_e[order[i:i + size]]
        y = target_e[order[i:i + size]]
        g = mse_grads_one_user(mean, p, bu, q[li], b[li], y, reg, with_loss=last)
        bu = bu - lr * g.user_bias
        p = p - lr * g.user_factors
        rows, gq = sum_rows(li, g.item_factors)
        q[rows] -= lr * gq
        rows, gb = sum_rows(li, g.item_bias)
        b[rows] -= lr * gb
        if last:
            loss += g.loss
    return p, bu, loss


def _fit_user(p: np.ndarray, bu: float, q: np.ndarray, b: np.ndarray, target: np.ndarray,
              mean: float, explicit: bool, reg: Regularization, config: TrainConfig
              ) -> tuple[np.ndarray, float]:
    """``config.user_steps`` full-batch steps on the user vector alone (mean gradient)."""
    step = config.user_lr / len(target)
    if explicit:
        for _ in range(config.user_steps):
            gp, gb = mse_user_grads(mean, p, bu, q, b, target, reg)
            bu = bu - step * gb
            p = p - step * gp
        return p, bu
    # BCE, the same steps as with bce_user_grads in fewer array operations (this loop is
    # most of a simulated device's work): tanh(s/2) − (2y − 1) = 2 (σ(s) − y), and the
    # regulariser's pull folded into one decay factor.
    signs = (2.0 * target - 1.0).astype(q.dtype)
    half_b = 0.5 * b
    decay = 1.0 - step * reg.factors * len(target)
    w = negative_weights(target, config.negative_weight)
    w = None if w is None else w.astype(q.dtype)
    for _ in range(config.user_steps):
        s = q @ (0.5 * p)
        s += half_b
        np.tanh(s, out=s)
        s -= signs
        if w is not None:
            s *= w
        p = decay * p - (0.5 * step) * (s @ q)
    return p, bu
