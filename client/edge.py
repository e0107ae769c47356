"""The recommender an edge app embeds: record behaviour, get recommendations, on the device.

:class:`EdgeClient` needs no Flower. It keeps everything in the device's encrypted
:class:`~fedrec.client.store.DeviceStore`: the events, the private user vector, and the
item table the device last synced (with the items' categories when the shop has them).
Recording an event stores it and takes one online SGD step on the user vector at once, so
the next recommendation already reflects it; the item table only changes when the device
syncs (fedrec's ClientApp, run by a SuperNode over the same store, trains and syncs it).

::

    from fedrec.client.edge import EdgeClient
    from fedrec.client.store import DeviceStore

    with DeviceStore("device.db", passphrase="...", create=True) as store:
        app = EdgeClient(store)
        app.record(42, "view")
        app.record(42, "purchase")
        top = app.recommend(k=10, category=3)       # bought items left out by default
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from fedrec.client.store import DeviceStore
from fedrec.common.data.interactions import EventType
from fedrec.common.losses import online_bce_step, online_rating_step

# Names of the device's state entries in its store.
USER = "user"  # [p_u | b_u]
FACTORS, BIAS, META, CATEGORY = "item-factors", "item-bias", "item-meta", "item-category"


def table_state(factors: np.ndarray, bias: np.ndarray, mean: float = 0.0,
                categories: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """A synced item table as the store's state entries (to write in one transaction)."""
    state = {FACTORS: np.asarray(factors, dtype=np.float32),
             BIAS: np.asarray(bias, dtype=np.float32),
             META: np.array([mean], dtype=np.float64)}
    if categories is not None:
        state[CATEGORY] = np.asarray(categories, dtype=np.int64)
    return state


@dataclass(frozen=True)
class EdgeSettings:
    """The device's online step: ``kind`` of feedback it learns from, step size, L2, and
    sampled negatives per implicit event."""

    kind: str = "implicit"
    lr: float = 0.05
    reg: float = 0.01
    negatives: int = 4
    init_std: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("implicit", "explicit"):
            raise ValueError(f"kind must be implicit or explicit. Found {self.kind!r}.")
        if not self.lr > 0 or self.reg < 0 or self.negatives < 0:
            raise ValueError("lr must be > 0, reg and negatives >= 0")


class UnknownItemError(ValueError):
    """An event for an item beyond the catalogue this device synced (listed since, or not
    the shop's): nothing is stored."""


@dataclass(frozen=True)
class Recommendation:
    items: np.ndarray  # item ids, best first
    scores: np.ndarray  # the model's score of each


class EdgeClient:
    """One shopper's recommender over its encrypted store (see the module docs)."""

    def __init__(self, store: DeviceStore, settings: EdgeSettings | None = None) -> None:
        self.store, self.settings = store, settings or EdgeSettings()
        self._rng = np.random.default_rng(self.settings.seed)
        self.factors = self.bias = self.categories = None
        self.mean = 0.0
        self.reload_table()
        vector = store.get(USER)
        self.user = None if vector is None else vector.astype(np.float32)
        events = store.events()
        self._touched: dict[int, set[int]] = {int(e): set() for e in EventType}
        for item, event in zip(events["item"], events["event"], strict=True):
            self._touched[int(event)].add(int(item))
        self._seen = set().union(*self._touched.values())  # every item the user touched

    # ---- the item table ------------------------------------------------------------------
    def reload_table(self) -> None:
        """Read the item table the device last synced from the store (None before any)."""
        self.factors, self.bias = self.store.get(FACTORS), self.store.get(BIAS)
        meta = self.store.get(META)
        self.mean = float(meta[0]) if meta is not None else 0.0
        self.categories = self.store.get(CATEGORY)

    def set_table(self, factors: np.ndarray, bias: np.ndarray, mean: float = 0.0,
                  categories: np.ndarray | None = None) -> None:
        """Store a new item table (what a sync delivers) and use it from now on."""
        factors = np.asarray(factors, dtype=np.float32)
        bias = np.asarray(bias, dtype=np.float32)
        if factors.ndim != 2 or bias.shape != (len(factors),):
            raise ValueError(f"factors must be (n, k) and bias (n,). Found {factors.shape}, "
                             f"{bias.shape}.")
        if categories is not None and np.shape(categories) != (len(factors),):
            raise ValueError(f"categories must have one entry per item ({len(factors)}). "
                             f"Found {np.shape(categories)}.")
        self.store.put_many(table_state(factors, bias, mean, categories))
        self.reload_table()

    @property
    def n_items(self) -> int:
        return 0 if self.factors is None else len(self.factors)

    # ---- behaviour -------------------------------------------------------------------------
    def record(self, item: int, event: EventType | str = EventType.VIEW,
               value: float | None = None, timestamp: int | None = None) -> None:
        """Store one event and take one online step on the user vector (when the device
        has an item table). A rating needs its ``value``; other events count as 1."""
        kind = EventType.parse(event) if isinstance(event, str) else EventType(event)
        item = int(item)
        if item < 0 or (self.n_items and item >= self.n_items):
            raise UnknownItemError(f"item {item} is not in the catalogue this device synced "
                                   f"(0..{self.n_items - 1}); nothing was stored")
        if kind == EventType.RATING and (value is None or not np.isfinite(value)):
            raise ValueError("a rating needs a finite value")
        value = 1.0 if value is None else float(value)
        stamp = int(time.time()) if timestamp is None else int(timestamp)
        before = self.user
        if self.factors is not None:
            self._step(item, kind, value)
        try:  # the event and the user vector it moved, in one transaction
            self.store.append(np.array([item]), np.array([int(kind)]),
                              np.array([value]), np.array([stamp]),
                              None if self.user is None else {USER: self.user})
        except BaseException:
            self.user = before  # nothing stored: the step is undone too
            raise
        self._touched[int(kind)].add(item)
        self._seen.add(item)

    def _ensure_user(self) -> None:
        k = self.factors.shape[1]
        if self.user is None or len(self.user) != k + 1:
            init = self._rng.normal(0.0, self.settings.init_std, k).astype(np.float32)
            self.user = np.append(init, np.float32(0.0))

    def _step(self, item: int, kind: EventType, value: float) -> None:
        """One online SGD step on ``[p_u | b_u]`` only; item rows stay as synced."""
        self._ensure_user()
        s = self.settings
        p, bu = self.user[:-1].astype(np.float64), float(self.user[-1])
        if s.kind == "explicit":
            if kind != EventType.RATING:
                return  # an explicit model learns from ratings only
            q, b = self.factors[item].astype(np.float64), float(self.bias[item])
            err = self.mean + bu + b + q @ p - value
            p, bu, _, _ = online_rating_step(p, bu, q, b, err, s.lr, s.reg, s.reg)
        else:
            rows = np.r_[item, self._negatives(item)]
            labels = np.r_[1.0, np.zeros(len(rows) - 1)]
            p, _, _ = online_bce_step(p, self.factors[rows].astype(np.float64),
                                      self.bias[rows].astype(np.float64), labels, s.lr,
                                      s.reg, 0.0)
        self.user = np.append(p, bu).astype(np.float32)

    def _negatives(self, item: int) -> np.ndarray:
        """Sampled items the user has not interacted with."""
        draws = self._rng.integers(0, self.n_items, size=2 * self.settings.negatives + 4)
        return np.array([d for d in dict.fromkeys(draws.tolist())
                         if d != item and d not in self._seen]
                        [: self.settings.negatives], dtype=np.int64)

    # ---- recommendations -------------------------------------------------------------------
    def recommend(self, k: int = 10,
                  exclude: Iterable[EventType | str] = (EventType.PURCHASE,),
                  category: int | None = None) -> Recommendation:
        """The ``k`` best items for this user by the current model: items the user has an
        ``exclude`` event for are left out (bought items by default), and with
        ``category`` only that category's items are ranked."""
        if self.factors is None:
            return Recommendation(np.empty(0, np.int64), np.empty(0))
        self._ensure_user()
        scores = self.factors @ self.user[:-1] + self.bias
        blocked = set()
        for kind in exclude:
            kind = EventType.parse(kind) if isinstance(kind, str) else EventType(kind)
            blocked |= self._touched[int(kind)]
        allowed = np.ones(self.n_items, dtype=bool)
        # (events stored before the first sync may name items beyond this table)
        blocked = np.fromiter(blocked, dtype=np.int64, count=len(blocked))
        allowed[blocked[blocked < self.n_items]] = False
        if category is not None:
            if self.categories is None:
                raise ValueError("this device's table has no item categories")
            allowed &= self.categories == category
        candidates = np.flatnonzero(allowed)
        k = min(int(k), len(candidates))
        if k <= 0:
            return Recommendation(np.empty(0, np.int64), np.empty(0))
        cand_scores = scores[candidates]
        top = np.argpartition(-cand_scores, k - 1)[:k]
        top = top[np.argsort(-cand_scores[top], kind="stable")]
        return Recommendation(candidates[top], cand_scores[top].astype(np.float64))
