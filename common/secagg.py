"""The dense vectors a device hands to secure aggregation, and what their sums tell the
server.

SecAgg+ (Flower's ``SecAggPlusWorkflow`` and ``secaggplus_mod``) sums vectors of one shape
from every device of a round and reveals only the sum. Two kinds of vector:

* **training** (:func:`densify`): a sparse update densified over the round's public
  :class:`Block` of rows (the whole catalogue, or a rotating block of it that the server
  chooses from the round number alone, so that bytes grow with the block and not the
  catalogue): the weighted rows and biases (zero where the device has no row), the weights
  and a 0/1 touched mask. From the sum the server recovers exactly what the plain fold
  would compute for the block's items: per-item weighted means (``Σ w·row / Σ w``) and how
  many devices touched each item. A device keeps its updates to rows outside the block
  until their block comes up (:mod:`fedrec.client.held`).
* **the mean query** (:func:`mean_vector`): whether the device has ratings and where its
  mean rating lies on the scale (``[rated, rated × (mean − low) / (high − low)]``); one sum
  per bucket of devices gives that bucket's mean of users' means.

Values lie within SecAgg+'s clipping range when the device is honest. A malicious device
need not clip, nor even quantise: it can add any integers to the masked sum. What the
server can check is the sum itself against what the round's devices could honestly
produce (:func:`read_sum`, :func:`read_mean_sum`): touched counts are whole numbers up to
the number of devices, a weight is at most the count of devices behind it (exactly the
count under ``uniform`` and ``sum`` weighting, where every honest device weighs a row 1,
so no device can shrink or swell the divisor), a weighted row is at most that weight
times the row norm bound. Items whose sums fail are refused and
counted; what passes, one device can still have moved within those bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedrec.common.schema import ItemUpdate
from fedrec.common.weighting import check_weighting, weights


@dataclass(frozen=True)
class DenseSum:
    """What the server reads from the sum of a round's dense vectors."""

    ids: np.ndarray  # items some device touched, whose sums passed every check
    rows: np.ndarray  # their weighted mean update (``sum`` weighting: the sum)
    bias: np.ndarray
    weight: np.ndarray  # total weight behind each row
    devices: np.ndarray  # how many devices touched each row
    refused: dict[str, int]  # items whose sums no honest round produces, by check


TOUCHED_TOLERANCE = 0.1  # a touched count this far from a whole number was not summed 0/1s


@dataclass(frozen=True)
class Block:
    """A round's public row set: ``size`` consecutive rows of an ``n_items`` catalogue from
    ``start``, wrapping past the end. It depends on nothing but the round's number
    (:meth:`of_round`), so choosing it tells nobody anything about any device."""

    start: int
    size: int
    n_items: int

    def __post_init__(self) -> None:
        if not (0 < self.size <= self.n_items and 0 <= self.start < self.n_items):
            raise ValueError(f"a block of {self.size} rows from row {self.start} does not fit "
                             f"a catalogue of {self.n_items}")

    @classmethod
    def of_round(cls, server_round: int, size: int, n_items: int) -> Block:
        """Round ``server_round``'s block: the catalogue cut into blocks of ``size`` rows,
        taken in turn (``size`` 0, or the catalogue's size or more: the whole catalogue)."""
        if size <= 0 or size >= n_items:
            return cls(0, n_items, n_items)
        return cls(((server_round - 1) * size) % n_items, size, n_items)

    @property
    def whole(self) -> bool:
        return self.size == self.n_items

    @property
    def ids(self) -> np.ndarray:
        """The block's rows, in the order its vectors hold them."""
        return (self.start + np.arange(self.size, dtype=np.int64)) % self.n_items

    def position(self, ids: np.ndarray) -> np.ndarray:
        """Where each row of ``ids`` sits in the block's vectors (``size`` or more: not in
        the block)."""
        return (np.asarray(ids, dtype=np.int64) - self.start) % self.n_items

    def contains(self, ids: np.ndarray) -> np.ndarray:
        return self.position(ids) < self.size


def densify(update: ItemUpdate, n_items: int, weighting: str = "uniform",
            cap: float = 10.0, block: Block | None = None) -> list[np.ndarray]:
    """The device's training vector over ``block`` (None: the whole catalogue):
    ``[w·rows (b×k), w·bias (b), w (b), touched (b)]``; rows outside the block are left
    out (the caller keeps them)."""
    check_weighting(weighting)
    block = Block(0, n_items, n_items) if block is None else block
    if block.n_items != n_items:
        raise ValueError(f"the block is of a catalogue of {block.n_items}, not {n_items}")
    w = weights(update, weighting, cap)
    if weighting == "capped":
        w = w / cap
    k = update.rows.shape[1] if update.rows.ndim == 2 else 0
    b = block.size
    rows = np.zeros((b, k), dtype=np.float32)
    bias = np.zeros(b, dtype=np.float32)
    weight = np.zeros(b, dtype=np.float32)
    touched = np.zeros(b, dtype=np.float32)
    pos = block.position(update.ids)
    inside = pos < b
    at, w = pos[inside], w[inside]
    rows[at] = update.rows[inside] * w[:, None]
    bias[at] = update.bias[inside] * w
    weight[at] = w
    touched[at] = 1.0
    return [rows, bias, weight, touched]


def read_sum(arrays: list[np.ndarray], weighting: str = "uniform", devices: int | None = None,
             max_norm: float = np.inf) -> DenseSum:
    """The round's update from the element-wise *sum* of ``devices`` devices' :func:`densify`,
    each item's sums checked: its touched count a whole number in ``[0, devices]``, its
    weight within ``[0, count]``, its weighted row (with its bias) at most ``max_norm``
    times its weight."""
    if len(arrays) != 4:
        raise ValueError(f"a secure training sum has 4 arrays; found {len(arrays)}")
    rows, bias, weight, touched = (np.asarray(a, dtype=np.float64) for a in arrays)
    n = len(touched)
    if rows.shape != (n, rows.shape[1] if rows.ndim == 2 else -1) or bias.shape != (n,) \
            or weight.shape != (n,):
        raise ValueError("a secure training sum's arrays disagree in size")
    limit = np.inf if devices is None else devices + TOUCHED_TOLERANCE
    count = np.rint(touched)
    finite = (np.isfinite(rows).all(axis=1) & np.isfinite(bias) & np.isfinite(weight)
              & np.isfinite(touched))
    named = finite & (touched > 0.5)
    checks = {
        "touched": named & ((np.abs(touched - count) > TOUCHED_TOLERANCE) | (touched > limit)),
        "weight": named & ((weight < -TOUCHED_TOLERANCE) | (weight > count + TOUCHED_TOLERANCE)),
    }
    if weighting in ("uniform", "sum"):
        # Every honest device weighs a row it names exactly 1, so the weights sum to the
        # count: a device claiming less (to shrink the divisor) or more is caught here.
        checks["weight"] |= named & ~checks["touched"] & (
            np.abs(weight - count) > TOUCHED_TOLERANCE)
    norm = np.sqrt(np.einsum("ij,ij->i", rows, rows) + bias * bias)
    checks["norm"] = named & ~checks["weight"] & (
        norm > max_norm * np.maximum(weight, 0) * (1 + 1e-3) + 1e-3)
    refused = {name: int(bad.sum()) for name, bad in checks.items() if bad.any()}
    if (~finite & (touched != 0)).any():
        refused["nonfinite"] = int((~finite).sum())
    ok = named & ~np.logical_or.reduce(list(checks.values()))
    ids = np.flatnonzero(ok & (weight > 0))
    w = weight[ids]
    if weighting == "sum":
        out_rows, out_bias = rows[ids], bias[ids]
    else:
        out_rows, out_bias = rows[ids] / w[:, None], bias[ids] / w
    return DenseSum(ids, out_rows, out_bias, w, count[ids], refused)


def mean_vector(ratings: np.ndarray, rating_range: tuple[float, float]) -> list[np.ndarray]:
    """The device's answer to the mean query: ``[rated, rated × (mean − low) / width]``, two
    values in [0, 1] (a device without ratings sends zeros)."""
    low, high = rating_range
    if not len(ratings):
        return [np.zeros(2, np.float32)]
    width = high - low
    where = (float(np.mean(ratings)) - low) / width if width > 0 else 0.5
    return [np.array([1.0, min(max(where, 0.0), 1.0)], np.float32)]


@dataclass(frozen=True)
class BucketMean:
    """One bucket's mean of users' means, from its secure sum."""

    devices: int
    rated: float  # how many of them have ratings (the sum's first value, whole)
    mean: float


def read_mean_sum(arrays: list[np.ndarray], devices: int,
                  rating_range: tuple[float, float]) -> BucketMean:
    """A bucket's mean from the sum of ``devices`` devices' :func:`mean_vector`; raises
    ValueError when no honest bucket produces that sum (the rated count not a whole number
    in ``[0, devices]``, the position sum outside ``[0, rated]``)."""
    if len(arrays) != 1 or np.shape(arrays[0]) != (2,):
        raise ValueError("a mean-query sum is one array of 2 values")
    rated, where = (float(x) for x in np.asarray(arrays[0], dtype=np.float64))
    if not (np.isfinite(rated) and np.isfinite(where)):
        raise ValueError("the mean-query sum is not finite")
    count = round(rated)
    if abs(rated - count) > TOUCHED_TOLERANCE or not 0 <= count <= devices:
        raise ValueError(f"{rated:.4g} rated devices among {devices}: not a whole number "
                         "in range")
    if not -TOUCHED_TOLERANCE <= where <= count + TOUCHED_TOLERANCE:
        raise ValueError(f"position sum {where:.4g} outside [0, {count}]")
    low, high = rating_range
    mean = low + (high - low) * min(max(where / count, 0.0), 1.0) if count else float("nan")
    return BucketMean(devices, float(count), float(mean))
