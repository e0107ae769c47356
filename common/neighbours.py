"""Item neighbours on rating residuals: the ``neighbours`` part of a ratings stream's model.

Matrix factorisation with biases predicts ``μ + b_u + b_i + p_u · q_i``. The neighbours
part adds what the user's own earlier ratings of items like ``i`` say about how far the
user departs from that baseline on ``i``:

    r̂_ui = μ + b_u + b_i + p_u · q_i + WEIGHT · Σ_j s_ij e_uj / (Σ_j |s_ij| + LAMBDA),

over the items ``j`` the user rated that are among ``i``'s ``k`` neighbours. ``e_uj`` is the
user's *residual* on ``j``: its rating minus the baseline ``μ + b_u + b_j`` when it rated
``j`` (kept on the device). ``s_ij`` is the shrunk correlation of residuals over the users
who rated both,

    s_ij = Sxy_ij / sqrt(Sxx_ij Sxx_ji) · n_ij / (n_ij + SHRINK),  0 when n_ij < MIN_COMMON,

with ``n_ij`` the users who rated both, ``Sxy_ij = Σ e_ui e_uj`` and ``Sxx_ij = Σ e_ui²`` over
them; ``i``'s neighbours are the ``k`` items of largest ``|s_ij|``. The factors and biases
learn as before (the neighbours part is fitted to what they leave, not with them).

The three sums are sums over users, so a federation gets them exactly: each device sends,
with its round's update, the items it rated since its last reply and its residual on each;
the server pairs each with the device's earlier ratings it holds (the latest ``history``)
and adds the products. Devices are sent the top-``k`` table (ids and similarities), which
the server refreshes every few rounds.

What the server learns, in plain mode: which items each device rated and its residual on
each: no more than the plain mode's updates already tell it (a rating's bias move is the
device's step times its residual on the item). The part is refused in every other mode.

What one device can move: it enters a pair once (an item is counted once per device), with
residuals bounded by the rating scale's width, so its share of ``n_ij`` is at most 1 and of
a similarity at most about ``1 / (MIN_COMMON + SHRINK)`` of the bound; it names at most the
new ratings it claims in the round.

The statistics are dense (three ``n × n`` float64 arrays), so the part is for catalogues of
up to :data:`MAX_ITEMS` items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedrec.common.schema import InvalidReplyError

RECORD = "neighbours"  # a train reply's array record {items, residuals}; a message's table
REPLY_KEYS = ("items", "residuals")  # exactly these, in a reply's record
MODES = ("plain",)  # the privacy modes the part runs in (it sends residuals in the clear)
MAX_ITEMS = 2_000  # 3 dense n × n float64 sums: 96 MB at 2,000 items (and int16 ids)
MAX_K = 200
# Chosen on ML-100K's warm-up prefix (simulations/models/presets.py says how).
SHRINK, MIN_COMMON, WEIGHT, LAMBDA = 50.0, 3, 1.0, 3.0
EPS = 1e-9
# Residuals are kept in steps of 2**-12 of a rating: every product and square in the sums is
# then a whole number of 2**-24 steps, and so is every sum (exactly, in float64, below 2**53
# steps: some 30 million co-raters of one pair), whatever order devices' ratings are added
# in: the engine's reply order (Ray's is not the in-process engine's), a restart, a batch.
STEP = 2.0 ** -12


def quantised(residuals: np.ndarray) -> np.ndarray:
    """Residuals (float64) in steps of :data:`STEP`."""
    return np.round(np.asarray(residuals, dtype=np.float64) / STEP) * STEP


def residual(value: float, base: float, width: float) -> float:
    """One rating's residual against its baseline, as a device keeps and sends it: within
    ``±width`` (the scale's: what the server accepts) and :func:`quantised` (Python's
    ``round`` halves to even, as numpy's does: the same steps, without an array an
    event)."""
    return round(min(max(value - base, -width), width) / STEP) * STEP


def fits(n_items: int) -> bool:
    """Whether a catalogue of ``n_items`` is within the dense sums' :data:`MAX_ITEMS`."""
    return n_items <= MAX_ITEMS


def check_catalogue(n_items: int, name: str) -> None:
    """ValueError naming ``name`` and the fix when its catalogue is past :data:`MAX_ITEMS`."""
    if not fits(n_items):
        raise ValueError(f"neighbours keeps dense statistics for up to {MAX_ITEMS:,} items; "
                         f"{name} has {n_items:,} (set neighbours=0)")


def check_k(k: int) -> None:
    """``neighbours`` (k): 0 (off) or 1..MAX_K. ValueError naming it otherwise."""
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= MAX_K:
        raise ValueError(f"neighbours must be 0 (off) or 1 to {MAX_K}. Found {k!r}.")


def check_contribution(items: object, residuals: object, counted: np.ndarray,
                       n_items: int, width: float, claimed: float) -> np.ndarray:
    """A device's ratings since its last reply, as its reply's ``neighbours`` record has
    them, returned as float64 residuals. Refused by field (:class:`InvalidReplyError`)
    unless ``items`` is an int64 vector of distinct ids in the catalogue, none ``counted``
    for this device before (sorted), no more than the ``claimed`` ratings of its round,
    and ``residuals`` one finite float per item within ``±width`` (the rating scale's).
    The residuals are returned :func:`quantised`."""
    if not isinstance(items, np.ndarray) or items.dtype != np.int64 or items.ndim != 1:
        raise InvalidReplyError("neighbours.items", "expected a 1-d int64 array")
    if not isinstance(residuals, np.ndarray) or residuals.dtype.kind != "f" or \
            residuals.shape != items.shape:
        raise InvalidReplyError("neighbours.residuals", "expected one float per item")
    if len(items) and (items.min() < 0 or items.max() >= n_items):
        raise InvalidReplyError("neighbours.items", f"ids outside [0, {n_items})")
    if len(np.unique(items)) != len(items):
        raise InvalidReplyError("neighbours.items", "repeated ids")
    if len(items) > claimed:
        raise InvalidReplyError("neighbours.items", f"{len(items)} items for the "
                                f"{claimed:g} ratings the reply claims")
    if len(counted) and len(items):
        at = np.minimum(np.searchsorted(counted, items), len(counted) - 1)
        if (counted[at] == items).any():
            raise InvalidReplyError("neighbours.items", "names items this device has "
                                    "counted already")
    res = residuals.astype(np.float64)
    if not np.isfinite(res).all() or (np.abs(res) > width).any():
        raise InvalidReplyError("neighbours.residuals", f"values must be finite and within "
                                f"±{width:g}")
    return quantised(res)


@dataclass
class NeighbourTable:
    """What devices are sent: each item's ``k`` neighbours (``ids``, -1 where it has fewer)
    and their similarities, rows for the items listed when it was made. int16 ids and
    float16 similarities (3 significant digits): 4 bytes a neighbour."""

    ids: np.ndarray  # int16 (n, k)
    sims: np.ndarray  # float16 (n, k)

    @classmethod
    def empty(cls, k: int) -> NeighbourTable:
        return cls(np.full((0, k), -1, np.int16), np.zeros((0, k), np.float16))

    @property
    def n_items(self) -> int:
        return len(self.ids)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"ids": self.ids, "sims": self.sims}

    @classmethod
    def from_arrays(cls, arrays: dict, n_items: int) -> NeighbourTable:
        """A table a device was sent, checked: ValueError naming the field."""
        ids, sims = arrays.get("ids"), arrays.get("sims")
        if not isinstance(ids, np.ndarray) or ids.dtype != np.int16 or ids.ndim != 2:
            raise ValueError("neighbours.ids: expected a 2-d int16 array")
        if not isinstance(sims, np.ndarray) or sims.dtype != np.float16 or \
                sims.shape != ids.shape:
            raise ValueError("neighbours.sims: expected float16 of the ids' shape")
        if len(ids) > n_items or ids.shape[1] > MAX_K:
            raise ValueError(f"neighbours.ids: {ids.shape} for {n_items} items, at most "
                             f"{MAX_K} neighbours")
        if len(ids) and (ids.min() < -1 or ids.max() >= len(ids)):
            raise ValueError("neighbours.ids: ids outside the table")
        if not np.isfinite(sims).all() or (np.abs(sims) > 1).any():
            raise ValueError("neighbours.sims: values must be finite, within ±1")
        return cls(ids, sims)

    def term(self, item: int, residual: np.ndarray, rated: np.ndarray) -> float:
        """The neighbours part of the prediction for ``item`` (the module's formula), given
        the user's residuals and which items it rated (both over the catalogue)."""
        if item >= len(self.ids):
            return 0.0
        ids = self.ids[item]
        ids = ids[ids >= 0]
        if not len(ids):
            return 0.0
        s = self.sims[item, :len(ids)].astype(np.float64) * rated[ids]
        return WEIGHT * float(s @ residual[ids]) / (float(np.abs(s).sum()) + LAMBDA)


class NeighbourStats:
    """The three sums over users (``n``, ``Sxy``, ``Sxx``), grown as the catalogue grows
    (into room doubled ahead, up to :data:`MAX_ITEMS`, so a catalogue that grows by a few
    items a round does not copy the sums every round)."""

    def __init__(self, n_items: int = 0) -> None:
        self._size = 0
        self._sums = np.zeros((3, 0, 0))
        self.grow(n_items)

    @property
    def n_items(self) -> int:
        return self._size

    @property
    def n(self) -> np.ndarray:
        return self._sums[0, :self._size, :self._size]

    @property
    def sxy(self) -> np.ndarray:
        return self._sums[1, :self._size, :self._size]

    @property
    def sxx(self) -> np.ndarray:
        return self._sums[2, :self._size, :self._size]

    def grow(self, n_items: int) -> None:
        """Room for ``n_items`` (at most :data:`MAX_ITEMS`: ValueError beyond)."""
        if n_items > MAX_ITEMS:
            raise ValueError(f"the neighbours part keeps dense statistics for up to "
                             f"{MAX_ITEMS:,} items. Found {n_items:,}.")
        if n_items <= self._size:
            return
        room = self._sums.shape[1]
        if n_items > room:
            room = min(MAX_ITEMS, max(n_items, 2 * room))
            sums = np.zeros((3, room, room))
            sums[:, :self._size, :self._size] = self._sums[:, :self._size, :self._size]
            self._sums = sums
        self._size = n_items

    def add(self, old: np.ndarray, old_res: np.ndarray, new: np.ndarray,
            new_res: np.ndarray, history: int) -> None:
        """One user's new ratings (``new``, in time order, with their residuals), each
        paired with the ratings before it: the user's ``old`` ones (time order) and the
        new ones before it, the latest ``history`` of them. Items are distinct."""
        if not len(new):
            return
        items = np.concatenate([old, new]).astype(np.int64)
        res = np.concatenate([old_res, new_res]).astype(np.float64)
        at = len(old) + np.arange(len(new))  # each new rating's place
        back = 1 + np.arange(min(history, len(items) - 1))
        prev = at[:, None] - back[None, :]  # the ratings before each, latest first
        ok = prev >= 0
        i = np.repeat(items[at], ok.sum(axis=1))
        ei = np.repeat(res[at], ok.sum(axis=1))
        j, ej = items[prev[ok]], res[prev[ok]]
        # (each pair once in a user's ratings: plain fancy-index adds are exact)
        self.n[i, j] += 1.0
        self.n[j, i] += 1.0
        self.sxy[i, j] += ei * ej
        self.sxy[j, i] += ei * ej
        self.sxx[i, j] += ei * ei
        self.sxx[j, i] += ej * ej

    def similarities(self) -> np.ndarray:
        """``s`` over the catalogue (the module's formula; zero diagonal)."""
        n = self.n
        s = self.sxx * self.sxx.T  # (in place from here: the catalogue squared, 4 times)
        s += EPS
        np.sqrt(s, out=s)
        np.divide(self.sxy, s, out=s)
        s *= n / (n + SHRINK)
        s[n < MIN_COMMON] = 0.0
        np.fill_diagonal(s, 0.0)
        return s

    def table(self, k: int) -> NeighbourTable:
        """Each item's ``k`` neighbours by ``|s|`` (fewer where fewer are non-zero)."""
        m = self.n_items
        if not m:
            return NeighbourTable.empty(k)
        s = self.similarities()
        kk = min(k, m)
        top = np.argpartition(-np.abs(s), kk - 1, axis=1)[:, :kk]
        sims = np.take_along_axis(s, top, axis=1)
        ids = np.where(sims != 0.0, top, -1).astype(np.int16)
        if kk < k:
            ids = np.pad(ids, ((0, 0), (0, k - kk)), constant_values=-1)
            sims = np.pad(sims, ((0, 0), (0, k - kk)))
        return NeighbourTable(ids, np.where(ids >= 0, sims, 0.0).astype(np.float16))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"n": self.n.copy(), "sxy": self.sxy.copy(), "sxx": self.sxx.copy()}

    @classmethod
    def from_arrays(cls, arrays: dict, n_items: int) -> NeighbourStats:
        """Sums from a checkpoint, checked: ValueError naming the field."""
        got = {}
        for name in ("n", "sxy", "sxx"):
            a = arrays.get(name)
            if not isinstance(a, np.ndarray) or a.dtype != np.float64 or a.ndim != 2 or \
                    a.shape[0] != a.shape[1] or a.shape[0] > min(n_items, MAX_ITEMS):
                raise ValueError(f"neighbours.{name}: expected a square float64 array of "
                                 f"at most {min(n_items, MAX_ITEMS)} rows")
            if not np.isfinite(a).all():
                raise ValueError(f"neighbours.{name}: values must be finite")
            got[name] = a
        if not got["n"].shape == got["sxy"].shape == got["sxx"].shape:
            raise ValueError("neighbours: n, sxy and sxx must have one shape")
        out = cls()
        out._sums = np.stack([got["n"], got["sxy"], got["sxx"]])
        out._size = len(got["n"])
        if (out.n < 0).any() or (out.sxx < 0).any() or not np.array_equal(out.n, out.n.T) \
                or not np.array_equal(out.sxy, out.sxy.T) or \
                (np.round(out.n) != out.n).any():
            raise ValueError("neighbours: n must be symmetric whole counts, sxy symmetric, "
                             "sxx non-negative")
        return out
