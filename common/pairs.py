"""Item pairs: the ``pairs`` model, item-to-item collaborative filtering from counts.

For a small shop (a few thousand events, a dozen a customer) factors do not beat counting
(README, *Against the simple baseline*); counting which items the same customers took
does. The model is one symmetric table ``C`` over the catalogue: ``C[i, j]`` is how many
devices hold both items ``i`` and ``j`` among their events, ``C[i, i]`` how many hold
``i``. It is a sum over devices, so a federation learns it exactly (the centralized model
on the same rows is the same table), and it is incremental by nature: a device that took
new items adds their pairs, and the sum is what a recount from scratch would give.

A device scores item ``j`` by its cosine similarity to the device's items,

    s_j = Σ_{i in items, i ≠ j} C[i, j] / sqrt(C[i, i] C[j, j]),

standardised over the catalogue, plus ``weight`` times the standardised log popularity
``log(1 + C[j, j])``: with so few events a customer, popularity carries much of the signal
and the pairs re-rank around it. ``weight`` is chosen among :data:`WEIGHTS` on the slice
every device holds out (its latest event), never on test events.

What a device contributes, and what bounds it: its distinct items (the latest ``cap`` of
them), each counted once, however often it took them. A device sends the items it has not
counted yet (``new``) and those that left its latest ``cap`` (``drop``); the server, which
keeps every device's counted items, adds the pairs among ``new`` and between ``new`` and
those it keeps, and takes a dropped item's pairs back out. A device's share of the table is
always the pairs of its current set. So one device's share of any entry of ``C``
is 0 or 1 at any time, and names at most ``cap`` items, whatever it sends (checked in
:func:`check_contribution`).

In plain mode the server learns each device's distinct items (as it learns the items a
matrix-factorisation update names) and keeps them to bound each device's share; the table
devices are sent is the sum over devices.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from fedrec.common.schema import InvalidReplyError

RECORD = "pairs"  # the query message's config record, and the count reply's array record
TABLE = "pairs-table"  # an evaluation message's array record: {counts}
COUNT, EVALUATE = "count", "evaluate"  # the two tasks a pairs message asks of a device
TASKS = (COUNT, EVALUATE)
INCLUDE = ("train", "all")  # a count: without the held-out slice, or every event
MAX_ITEMS = 2_000  # the table goes to every device: 2,000² float32 values are 16 MB
WEIGHTS = (0.5, 1.0, 2.0, 4.0, 8.0)  # popularity's weight, chosen on the held-out slice
EPS = 1e-9


def latest_distinct(items: np.ndarray, cap: int) -> np.ndarray:
    """The distinct items of a device's events in time order, the latest ``cap`` of them
    (an item's place is its latest event), sorted by id."""
    items = np.asarray(items, dtype=np.int64)
    if not len(items):
        return np.empty(0, np.int64)
    reversed_ = items[::-1]
    uniq, first = np.unique(reversed_, return_index=True)  # first seen from the end
    latest = uniq[np.argsort(first, kind="stable")][:cap]
    return np.sort(latest)


def digest(items: np.ndarray) -> int:
    """A short fingerprint of a sorted id set (56 bits of its SHA-256): what the server
    says it counted for a device, so the device knows whether its last reply arrived."""
    data = np.asarray(items, dtype="<i8").tobytes()
    return int.from_bytes(hashlib.sha256(data).digest()[:7], "big")


def _ids(name: str, ids: object, n_items: int) -> None:
    if not isinstance(ids, np.ndarray) or ids.dtype != np.int64 or ids.ndim != 1:
        raise InvalidReplyError(f"pairs.{name}", "expected a 1-d int64 array")
    if len(ids) and (ids.min() < 0 or ids.max() >= n_items):
        raise InvalidReplyError(f"pairs.{name}", f"ids outside [0, {n_items})")
    if len(np.unique(ids)) != len(ids):
        raise InvalidReplyError(f"pairs.{name}", "repeated ids")


def check_contribution(new: object, counted: np.ndarray, n_items: int, cap: int,
                       drop: object | None = None) -> None:
    """A device's reply to a count: the ``new`` item ids it has not counted, and the
    counted ones it ``drop``s (they left its latest ``cap``), where the server has
    ``counted`` (sorted) for it. Refused by field (:class:`InvalidReplyError`) unless both
    are int64 vectors of distinct ids in range, ``new`` names none counted already,
    ``drop`` only counted ones, and the device's items stay within ``cap``."""
    _ids("new", new, n_items)
    if drop is not None:
        _ids("drop", drop, n_items)
        if len(np.setdiff1d(drop, counted)):
            raise InvalidReplyError("pairs.drop", "names items this device has not counted")
    if len(np.intersect1d(new, counted)):
        raise InvalidReplyError("pairs.new", "names items this device has counted already")
    kept = len(counted) - (0 if drop is None else len(drop))
    if kept + len(new) > cap:
        raise InvalidReplyError("pairs.new", f"{kept} + {len(new)} items is over the cap "
                                f"of {cap} a device")


@dataclass
class PairCounts:
    """The table ``C`` (float64, exact for counts below 2**53)."""

    counts: np.ndarray

    @classmethod
    def empty(cls, n_items: int) -> PairCounts:
        if not 0 < n_items <= MAX_ITEMS:
            raise ValueError(f"the pairs model needs a catalogue of 1 to {MAX_ITEMS:,} "
                             f"items (the table goes to every device). Found {n_items:,}.")
        return cls(np.zeros((n_items, n_items), np.float64))

    @classmethod
    def of_sets(cls, sets: list[np.ndarray], n_items: int) -> PairCounts:
        """The table of devices' item sets, counted at once (the centralized model)."""
        out = cls.empty(n_items)
        for items in sets:
            out.add(np.asarray(items, np.int64), np.empty(0, np.int64))
        return out

    @property
    def n_items(self) -> int:
        return len(self.counts)

    def add(self, new: np.ndarray, old: np.ndarray) -> None:
        """One device's contribution (checked by :func:`check_contribution`): pairs among
        ``new``, and between ``new`` and ``old``, in both directions; ``new``'s own counts."""
        if not len(new):
            return
        self.counts[np.ix_(new, new)] += 1.0
        if len(old):
            self.counts[np.ix_(new, old)] += 1.0
            self.counts[np.ix_(old, new)] += 1.0

    def change(self, counted: np.ndarray, new: np.ndarray,
               drop: np.ndarray | None = None) -> np.ndarray:
        """One device's checked reply (:func:`check_contribution`) applied: the pairs of
        ``drop`` with the rest of ``counted`` taken out, those of ``new`` added, so the
        device's share becomes the pairs of its new set, which is returned (sorted)."""
        if drop is not None and len(drop):
            kept = np.setdiff1d(counted, drop).astype(np.int64)
            self.counts[np.ix_(drop, counted)] -= 1.0  # (drop × drop once, here)
            if len(kept):
                self.counts[np.ix_(kept, drop)] -= 1.0
            counted = kept
        self.add(new, counted)
        return np.union1d(counted, new).astype(np.int64)

    def remove(self, items: np.ndarray) -> None:
        """Take one device's whole counted set back out (its pairs, its own counts)."""
        if len(items):
            self.counts[np.ix_(items, items)] -= 1.0

    def table(self) -> np.ndarray:
        """What devices are sent: the counts as float32 (exact below 2**24 devices)."""
        return self.counts.astype(np.float32)


def check_table(table: object, n_items: int | None = None) -> np.ndarray:
    """A table a device was sent, as float64: square, finite, non-negative, symmetric.
    ValueError naming the field otherwise."""
    if not isinstance(table, np.ndarray) or table.ndim != 2 or \
            table.shape[0] != table.shape[1] or not table.shape[0]:
        raise ValueError("pairs.counts: expected a square, non-empty table")
    if table.shape[0] > MAX_ITEMS:
        raise ValueError(f"pairs.counts: {table.shape[0]:,} items, more than the "
                         f"{MAX_ITEMS:,} the model is for")
    if n_items is not None and table.shape[0] != n_items:
        raise ValueError(f"pairs.counts: {table.shape[0]} items where the catalogue has "
                         f"{n_items}")
    t = table.astype(np.float64)
    if not np.isfinite(t).all() or (t < 0).any() or not np.array_equal(t, t.T):
        raise ValueError("pairs.counts: values must be finite, non-negative and symmetric")
    return t


def _standardised(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=-1, keepdims=True)) / (x.std(axis=-1, keepdims=True) + EPS)


def popularity_prior(counts: np.ndarray) -> np.ndarray:
    """The standardised log popularity ``log(1 + C[j, j])`` over the catalogue."""
    return _standardised(np.log1p(np.diag(counts)))


def scores(counts: np.ndarray, items: np.ndarray, weight: float,
           prior: np.ndarray | None = None) -> np.ndarray:
    """One device's scores over the catalogue (the module's formula); ``items``: its
    distinct items. ``prior``: :func:`popularity_prior`, when the caller has it."""
    prior = popularity_prior(counts) if prior is None else prior
    norm = np.sqrt(np.maximum(np.diag(counts), 0.0)) + EPS
    items = np.asarray(items, dtype=np.int64)
    if len(items):
        rows = counts[items] / norm[items, None] / norm[None, :]
        rows[np.arange(len(items)), items] = 0.0  # an item is not its own neighbour
        sim = rows.sum(axis=0)
    else:
        sim = np.zeros(len(counts))
    return _standardised(sim) + weight * prior
