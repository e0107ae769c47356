"""The ``decoy`` privacy mode: every reply names the same number of rows.

A plain reply names exactly the rows a device trained (its items, and for implicit data its
sampled negatives), so the ids alone tell the server what the user touched and how active
they are. In ``decoy`` mode the device pads its reply to a fixed ``rows`` with rows for items
it did not touch, each computed as the update of a *virtual example* by the same SGD steps a
real row gets, so a decoy row has the form, size and count of a real one:

* implicit: the virtual label is drawn from the model's own belief, ``y ~ Bernoulli(σ(s))``
  with ``s = b_i + p_u·q_i``. Conditioned on the item, ``E[σ(s) − y] = 0``: the expected
  data gradient of a decoy is zero, so decoys add variance, not bias. In this mode a device
  draws its negatives once per round and visits every row, real or decoy, every epoch, so
  counts are all 1 and a label's number of steps does not depend on it. Decoy items are
  drawn so that their beliefs ``σ(s)`` follow the beliefs of the reply's real rows (below):
  where the model is calibrated on the device's rows, label 1 then comes with each belief
  as often for decoys as for real rows, and the two cannot be told apart. Which items are
  drawn does not change the zero mean, since the label is drawn given the item.
* explicit: the virtual rating is the prediction plus one of the user's own residuals with a
  random sign, rounded at random to a whole rating when the user's ratings are whole
  (``E[r_v] = r̂`` before clipping to the scale): again a zero-mean error of the user's size.

Decoy items are drawn, without replacement, among the items the device did not touch, so
that they look like the reply's real items in what the server knows of an item: how many
devices named it in the previous round (the server's ``named`` counts) and, for implicit
data, the model's belief for this user (joint histogram matching at the real rows'
quantiles). A light user's items are popular ones; its decoys are then popular too. A device with
more real rows than ``rows`` sends all its positives and a uniform random part of its
sampled negatives (a random ``rows`` of its positives if even those are too many); the
rest are simply not updated by it this round.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedrec.common.losses import (
    Regularization,
    bce_grads_one_user,
    mse_grads_one_user,
    sigmoid,
)
from fedrec.common.schema import ItemUpdate


@dataclass(frozen=True)
class RoundTrace:
    """What a device's local training knew, kept to compute decoys like real rows."""

    explicit: bool
    lr: float
    reg: Regularization
    mean: float
    epoch_users: list[tuple[np.ndarray, float]]  # (p_u, b_u) at the start of each epoch
    residuals: np.ndarray  # explicit: r − r̂ on the device's ratings at the start
    whole_ratings: bool  # explicit: every rating is a whole number
    positives: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    rating_range: tuple[float, float] = (-np.inf, np.inf)
    negative_weight: float = 1.0  # implicit: a negative's loss weight, as the real rows had


def pad(update: ItemUpdate, rows: int, factors: np.ndarray, bias: np.ndarray,
        trace: RoundTrace, rng: np.random.Generator,
        named: np.ndarray | None = None) -> tuple[ItemUpdate, np.ndarray]:
    """``update`` padded with decoys (or subsampled) to exactly ``rows`` rows (at most the
    catalogue). Returns the reply and, for audits only, which of its rows are decoys."""
    n_items = len(factors)
    rows = min(int(rows), n_items)
    if rows < 1:
        raise ValueError(f"decoy rows must be >= 1. Found {rows}.")
    real = len(update.ids)
    if real >= rows:
        keep = None
        if real > rows:  # positives first, then a random part of the negatives
            pos = np.isin(update.ids, trace.positives, assume_unique=True)
            first, rest = np.flatnonzero(pos), np.flatnonzero(~pos)
            if len(first) >= rows:
                keep = np.sort(rng.choice(first, size=rows, replace=False))
            else:
                keep = np.sort(np.r_[first, rng.choice(rest, size=rows - len(first),
                                                       replace=False)])
        if keep is not None:
            update = ItemUpdate(update.ids[keep], update.rows[keep], update.bias[keep],
                                update.counts[keep])
        return update, np.zeros(rows, dtype=bool)
    features = []  # what the server knows of an item, per item: decoys must match real rows
    if named is not None and len(named) == n_items:
        features.append(np.log1p(np.asarray(named, dtype=np.float64)))
    if not trace.explicit:  # the model's belief for this user
        p0 = trace.epoch_users[0][0]
        features.append(bias.astype(np.float64) + factors.astype(np.float64) @ p0)
    ids = _draw_items(update.ids, rows - real, n_items,
                      np.column_stack(features) if features else None, rng)
    rows_d, bias_d, counts_d = _virtual_rows(ids, factors, bias, trace, rng)
    all_ids = np.concatenate([update.ids, ids])
    order = np.argsort(all_ids, kind="stable")
    decoy = np.r_[np.zeros(real, bool), np.ones(len(ids), bool)][order]
    out = ItemUpdate(all_ids[order],
                     np.concatenate([update.rows, rows_d.astype(update.rows.dtype)])[order],
                     np.concatenate([update.bias, bias_d.astype(update.bias.dtype)])[order],
                     np.concatenate([update.counts, counts_d.astype(np.float32)])[order])
    return out, decoy


def _draw_items(touched: np.ndarray, n: int, n_items: int, features: np.ndarray | None,
                rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct untouched items whose ``features`` (one row per catalogue item) follow
    the joint histogram of the touched items' features (uniform without features)."""
    free = np.ones(n_items, dtype=bool)
    free[touched] = False
    candidates = np.flatnonzero(free)
    if features is None or not len(touched):
        return rng.choice(candidates, size=n, replace=False)
    weight = _histogram_ratio(features[candidates], features[touched])
    # A floor, so that a draw larger than the matched candidates still completes.
    weight = weight + 1e-9 * max(float(weight.max()), 1.0)
    return rng.choice(candidates, size=n, replace=False, p=weight / weight.sum())


def _histogram_ratio(values: np.ndarray, target: np.ndarray, bins: int = 20) -> np.ndarray:
    """Per candidate (row of ``values``), a weight under which the candidates' joint
    histogram matches ``target``'s. Each column is cut at the target's quantiles (fewer cuts
    with more columns, so joint bins stay populated); target mass in a bin without
    candidates moves to the nearest bin that has some."""
    values = values.reshape(len(values), -1)
    target = target.reshape(len(target), -1)
    per_dim = max(2, round(bins ** (1.0 / values.shape[1])))
    slot_v = np.zeros(len(values), dtype=np.int64)
    slot_t = np.zeros(len(target), dtype=np.int64)
    shape = []
    for j in range(values.shape[1]):
        edges = np.unique(np.quantile(target[:, j], np.linspace(0, 1, per_dim + 1)[1:-1]))
        shape.append(len(edges) + 1)
        slot_v = slot_v * shape[-1] + np.searchsorted(edges, values[:, j])
        slot_t = slot_t * shape[-1] + np.searchsorted(edges, target[:, j])
    nb = int(np.prod(shape))
    want = np.bincount(slot_t, minlength=nb).astype(np.float64)
    have = np.bincount(slot_v, minlength=nb).astype(np.float64)
    empty = have <= 0
    if empty.all():
        return np.ones(len(values))
    if (empty & (want > 0)).any():  # move wanted mass to the nearest bin with candidates
        grid = np.array(np.unravel_index(np.arange(nb), shape)).T
        full = np.flatnonzero(~empty)
        for i in np.flatnonzero(empty & (want > 0)):
            nearest = full[np.argmin(np.abs(grid[full] - grid[i]).sum(axis=1))]
            want[nearest] += want[i]
        want[empty] = 0.0
    ratio = np.divide(want, have, out=np.zeros(nb), where=~empty)
    return ratio[slot_v]


def _virtual_rows(ids: np.ndarray, factors: np.ndarray, bias: np.ndarray, trace: RoundTrace,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pseudo-gradients (``before − after``) of virtual examples on ``ids``, and their
    counts, by the SGD steps real rows take (one per epoch, with that epoch's user)."""
    q0 = factors[ids].astype(np.float64)
    b0 = bias[ids].astype(np.float64)
    q, b = q0.copy(), b0.copy()
    p0, bu0 = trace.epoch_users[0]
    if trace.explicit:
        target = _virtual_ratings(trace.mean + bu0 + b0 + q0 @ p0, trace, rng)
    else:
        # A label drawn so the weighted BCE step has zero mean: with a negative weighing w,
        # P(1) = σw / (1 − σ + σw) (σ itself when w = 1).
        s = sigmoid(b0 + q0 @ p0)
        w = trace.negative_weight
        target = (rng.random(len(ids)) < s * w / (1.0 - s + s * w)).astype(np.float64)
    for p, bu in trace.epoch_users:  # every decoy visited every epoch, like every real row
        if trace.explicit:
            g = mse_grads_one_user(trace.mean, p, bu, q, b, target, trace.reg)
        else:
            g = bce_grads_one_user(p, q, b, target, trace.reg,
                                   negative_weight=trace.negative_weight)
        q -= trace.lr * g.item_factors
        b -= trace.lr * g.item_bias
    return q0 - q, b0 - b, np.ones(len(ids))


def _virtual_ratings(predicted: np.ndarray, trace: RoundTrace,
                     rng: np.random.Generator) -> np.ndarray:
    """The prediction (kept on the scale) plus a random-signed residual of the user's,
    shortened where it would leave the scale so both signs stay on it, then rounded at
    random to a whole rating when the user's ratings are whole: the mean is the prediction
    (a clip would pull ratings near the ends of the scale inwards)."""
    low, high = trace.rating_range
    pred = np.clip(predicted, low, high)
    res = np.abs(trace.residuals)
    size = rng.choice(res, size=len(pred)) if len(res) else np.zeros(len(pred))
    size = np.minimum(size, np.minimum(high - pred, pred - low))
    value = pred + size * rng.choice((-1.0, 1.0), size=len(pred))
    if trace.whole_ratings:
        floor = np.floor(value)
        value = floor + (rng.random(len(value)) < value - floor)
    return np.clip(value, low, high)  # (only guards rounding at non-whole scale ends)
