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
from pathlib import Path

import numpy as np

from fedrec.client.store import DeviceStore
from fedrec.common import pairs as pairs_model
from fedrec.common.catalogue import Catalogue, read_catalogue
from fedrec.common.data.interactions import EventType
from fedrec.common.losses import (
    Loss,
    check_negative_weight,
    for_feedback,
    online_bce_step,
    online_rating_step,
)
from fedrec.common.models import MF, MODELS, PAIRS
from fedrec.common.ranking import (
    HEAD_KEY,
    check_bonus,
    check_similarity,
    pack_head,
    ranked,
    unpack_head,
)

# Names of the device's state entries in its store.
USER = "user"  # [p_u | b_u]
FACTORS, BIAS, META, CATEGORY = "item-factors", "item-bias", "item-meta", "item-category"
# A shop's catalogue (fedrec.common.catalogue): each row's SKU (UTF-8 bytes) and category
# indices (-1 padded), the category names, the rows hidden now (not listed, or delisted).
SKU, CATEGORIES, CATEGORY_NAMES, HIDDEN = ("item-sku", "item-categories", "category-names",
                                           "item-hidden")
# How it ranks (fedrec.common.ranking): the head the server sent with the table (a bitmap;
# empty: none), the round's tail bonus ([bonus]) and similarity weight ([weight]).
HEAD, TAIL_BONUS, SIMILARITY = "item-head", "tail-bonus", "similarity"
# The model the device last synced (b"mf" or b"pairs"), and the pairs model's table and
# [weight, cap] (fedrec.common.pairs).
MODEL, PAIRS_COUNTS, PAIRS_META = "model", "pairs-counts", "pairs-meta"


def table_state(factors: np.ndarray, bias: np.ndarray, mean: float = 0.0,
                categories: np.ndarray | None = None,
                catalogue: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """A synced item table as the store's state entries (to write in one transaction);
    ``catalogue``: the shop's per-row and whole arrays, by entry name (:func:`catalogue_state`)."""
    state = {FACTORS: np.asarray(factors, dtype=np.float32),
             BIAS: np.asarray(bias, dtype=np.float32),
             META: np.array([mean], dtype=np.float64), MODEL: np.array([MF.name.encode()])}
    if categories is not None:
        state[CATEGORY] = np.asarray(categories, dtype=np.int64)
    state.update(catalogue or {})
    return state


def pairs_state(counts: np.ndarray, weight: float, cap: int) -> dict[str, np.ndarray]:
    """A pairs model's table (:mod:`fedrec.common.pairs`) as the store's state entries."""
    return {PAIRS_COUNTS: np.asarray(counts, dtype=np.float32),
            PAIRS_META: np.array([weight, cap], dtype=np.float64),
            MODEL: np.array([PAIRS.name.encode()])}


def catalogue_state(static: dict[str, np.ndarray], extras: dict[str, np.ndarray]
                    ) -> dict[str, np.ndarray]:
    """The store entries of a table message's catalogue arrays (those it has)."""
    out = {}
    for entry, source, name in ((SKU, static, "sku"), (CATEGORIES, static, "categories"),
                                (HEAD, extras, HEAD_KEY),
                                (CATEGORY_NAMES, extras, "category-names"),
                                (HIDDEN, extras, "hidden")):
        if name in source:
            out[entry] = np.asarray(source[name])
    return out


def shop_catalogue_state(catalogue: Catalogue, now: float | None = None
                         ) -> dict[str, np.ndarray]:
    """The store entries of the shop's own catalogue file, read on the device: the same
    SKU-to-row mapping the server uses (row i is the file's i-th item)."""
    hidden = np.flatnonzero(catalogue.hidden(time.time() if now is None else now))
    names = catalogue.category_names
    return {SKU: catalogue.sku_array(), CATEGORIES: catalogue.category_matrix(),
            CATEGORY_NAMES: np.array([n.encode() for n in names], dtype=bytes)
            if names else np.empty(0, dtype="S1"),
            HIDDEN: hidden.astype(np.int64)}


@dataclass(frozen=True)
class EdgeSettings:
    """The device's online step: ``kind`` of feedback it learns from, step size, L2, and
    sampled negatives per implicit event, each weighing ``negative_weight`` against the
    event (:func:`fedrec.common.losses.negative_weights`)."""

    kind: str = "implicit"
    lr: float = 0.05
    reg: float = 0.01
    negatives: int = 4
    init_std: float = 0.1
    seed: int = 0
    negative_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("implicit", "explicit"):
            raise ValueError(f"kind must be implicit or explicit. Found {self.kind!r}.")
        if not self.lr > 0 or self.reg < 0 or self.negatives < 0:
            raise ValueError("lr must be > 0, reg and negatives >= 0")
        check_negative_weight(self.negative_weight)

    @property
    def loss(self) -> Loss:
        """The loss the device's online step trains: its kind of feedback's."""
        return for_feedback(self.kind == "explicit")


class UnknownItemError(ValueError):
    """An event for an item beyond the catalogue this device synced (listed since, or not
    the shop's): nothing is stored."""


class UnknownCategoryError(ValueError):
    """A category the catalogue this device synced does not have."""


@dataclass(frozen=True)
class Recommendation:
    items: np.ndarray  # item rows, best first
    scores: np.ndarray  # the model's score of each
    skus: tuple[str, ...] | None = None  # the shop's ids of the items (a shop's catalogue)


class EdgeClient:
    """One shopper's recommender over its encrypted store (see the module docs)."""

    def __init__(self, store: DeviceStore, settings: EdgeSettings | None = None) -> None:
        self.store, self.settings = store, settings or EdgeSettings()
        self._rng = np.random.default_rng(self.settings.seed)
        self.factors = self.bias = self.categories = None
        self.pairs: tuple[np.ndarray, float, int] | None = None  # (counts, weight, cap)
        self.skus: tuple[str, ...] | None = None
        self.category_names: tuple[str, ...] = ()
        self.hidden = np.empty(0, dtype=np.int64)
        self._row_of: dict[str, int] = {}
        self.mean = 0.0
        self.reload_table()
        vector = store.get(USER)
        self.user = None if vector is None else vector.astype(np.float32)
        events = store.events()
        self._order = [int(i) for i in events["item"]]  # every event's item, in order
        self._touched: dict[int, set[int]] = {int(e): set() for e in EventType}
        for item, event in zip(events["item"], events["event"], strict=True):
            self._touched[int(event)].add(int(item))
        self._seen = set().union(*self._touched.values())  # every item the user touched

    # ---- the item table ------------------------------------------------------------------
    def reload_table(self) -> None:
        """Read the item table the device last synced from the store (None before any):
        the matrix factorisation's, or the pairs model's when that is what it synced last
        (its table checked: ValueError naming the entry)."""
        self.model = self._model_entry()
        self.factors, self.bias, self.pairs = None, None, None
        if self.model == PAIRS.name:
            meta = self.store.get(PAIRS_META)
            counts = pairs_model.check_table(self.store.get(PAIRS_COUNTS))
            if meta is None or meta.shape != (2,) or not (np.isfinite(meta[0]) and
                                                         meta[0] >= 0 and meta[1] >= 1):
                raise ValueError(f"{self.store.path}: state:{PAIRS_META} must be [weight >= "
                                 f"0, cap >= 1]")
            self.pairs = (counts, float(meta[0]), int(meta[1]))
        else:
            self.factors, self.bias = self.store.get(FACTORS), self.store.get(BIAS)
        meta = self.store.get(META)
        self.mean = float(meta[0]) if meta is not None else 0.0
        self.categories = self.store.get(CATEGORIES)
        if self.categories is None:
            self.categories = self.store.get(CATEGORY)
        skus = self.store.get(SKU)
        self.skus = None if skus is None else tuple(s.decode() for s in skus.tolist())
        self._row_of = {} if self.skus is None else {s: i for i, s in enumerate(self.skus)}
        names = self.store.get(CATEGORY_NAMES)
        self.category_names = () if names is None else tuple(n.decode()
                                                             for n in names.tolist())
        hidden = self.store.get(HIDDEN)
        self.hidden = np.empty(0, np.int64) if hidden is None else hidden.astype(np.int64)
        self.head, self.tail_bonus = self._ranking()
        self.similarity = self._similarity()

    def _similarity(self) -> float:
        """The similarity weight the last synced table came with (none: 0); ValueError
        naming the entry when the store's is not one number in range."""
        weight = self.store.get(SIMILARITY)
        if self.factors is None or weight is None:
            return 0.0
        try:
            if weight.shape != (1,):
                raise ValueError(f"similarity must be one number. Found {weight.shape}.")
            return check_similarity(float(weight[0]))
        except ValueError as exc:
            raise ValueError(f"{self.store.path}: state:{SIMILARITY}: {exc}") from None

    def _ranking(self) -> tuple[np.ndarray | None, float]:
        """The head and tail bonus the last synced table came with (none: the model's own
        order); ValueError naming the entry when the store's are not a bitmap of the table
        and a bonus in range."""
        bits, bonus = self.store.get(HEAD), self.store.get(TAIL_BONUS)
        if self.factors is None or bits is None or bonus is None or not len(bits):
            return None, 0.0
        try:
            if bonus.shape != (1,):
                raise ValueError(f"tail-bonus must be one number. Found {bonus.shape}.")
            return unpack_head(bits, len(self.factors)), check_bonus(float(bonus[0]))
        except ValueError as exc:
            raise ValueError(f"{self.store.path}: state:{HEAD}/{TAIL_BONUS}: {exc}") from None

    def _model_entry(self) -> str:
        """The model the store says was synced last (MF before any says so); ValueError
        naming the entry when it is not one model's name."""
        entry = self.store.get(MODEL)
        if entry is None:
            return MF.name
        if entry.shape != (1,) or entry.dtype.kind != "S" or \
                entry[0].decode("ascii", "replace") not in MODELS:
            raise ValueError(f"{self.store.path}: state:{MODEL} must name one of "
                             f"{', '.join(MODELS)}; found {entry!r:.60}")
        return entry[0].decode("ascii")

    def set_catalogue(self, catalogue: Catalogue | str | Path) -> None:
        """Take the shop's catalogue file (or a read :class:`Catalogue`) before any table
        has been synced: SKUs, categories and listings, so that events can be recorded by
        SKU from the start. A synced table's catalogue replaces it."""
        if not isinstance(catalogue, Catalogue):
            catalogue = read_catalogue(catalogue)
        if self.n_items and catalogue.n_items < self.n_items:
            raise ValueError(f"{catalogue.path}: {catalogue.n_items} items, fewer than the "
                             f"{self.n_items} rows of the table this device synced")
        self.store.put_many(shop_catalogue_state(catalogue))
        self.reload_table()

    def set_table(self, factors: np.ndarray, bias: np.ndarray, mean: float = 0.0,
                  categories: np.ndarray | None = None, head: np.ndarray | None = None,
                  tail_bonus: float = 0.0, similarity: float = 0.0) -> None:
        """Store a new item table (what a sync delivers) and use it from now on: a table
        that reaches the device without a SuperNode (the server's ``model.npz``, fetched
        by the app). Its rows are the catalogue's items in order (:meth:`set_catalogue`).
        ``head`` (a mask over the items), ``tail_bonus`` and ``similarity``: how to rank
        (:mod:`fedrec.common.ranking`; none: the model's own order)."""
        factors = np.asarray(factors, dtype=np.float32)
        bias = np.asarray(bias, dtype=np.float32)
        if factors.ndim != 2 or bias.shape != (len(factors),):
            raise ValueError(f"factors must be (n, k) and bias (n,). Found {factors.shape}, "
                             f"{bias.shape}.")
        if categories is not None and np.shape(categories) != (len(factors),):
            raise ValueError(f"categories must have one entry per item ({len(factors)}). "
                             f"Found {np.shape(categories)}.")
        if self.skus is not None and len(factors) > len(self.skus):
            raise ValueError(f"the table has {len(factors)} rows, the catalogue this device "
                             f"holds {len(self.skus)} items: take the newer catalogue first")
        bits = np.zeros(0, np.uint8)
        if head is not None:
            head = np.asarray(head)
            if head.dtype != bool or head.shape != (len(factors),):
                raise ValueError(f"head must be a bool mask with one entry per item "
                                 f"({len(factors)}). Found {head.dtype} {head.shape}.")
            bits = pack_head(head)
        self.store.put_many({**table_state(factors, bias, mean, categories), HEAD: bits,
                             TAIL_BONUS: np.array([check_bonus(tail_bonus)], np.float64),
                             SIMILARITY: np.array([check_similarity(similarity)], np.float64)})
        self.reload_table()

    def set_pairs(self, counts: np.ndarray, weight: float, cap: int = 200) -> None:
        """Store a pairs model's table (the server's ``model.npz`` of a pairs run, fetched
        by the app) and recommend with it from now on."""
        counts = pairs_model.check_table(np.asarray(counts))
        if not (np.isfinite(weight) and weight >= 0) or int(cap) < 1:
            raise ValueError(f"weight must be >= 0 and cap >= 1. Found {weight}, {cap}.")
        if self.skus is not None and len(counts) > len(self.skus):
            raise ValueError(f"the table has {len(counts)} items, the catalogue this device "
                             f"holds {len(self.skus)}: take the newer catalogue first")
        self.store.put_many(pairs_state(counts, float(weight), int(cap)))
        self.reload_table()

    @property
    def n_items(self) -> int:
        if self.pairs is not None:
            return len(self.pairs[0])
        return 0 if self.factors is None else len(self.factors)

    def row(self, item: int | str) -> int:
        """The table row of ``item``: a SKU of the shop's catalogue, or a row number.
        Raises :class:`UnknownItemError`."""
        if isinstance(item, str):
            if item not in self._row_of:
                have = "no catalogue yet (sync, or set_catalogue)" if self.skus is None \
                    else f"{len(self.skus)} items"
                raise UnknownItemError(f"SKU {item!r} is not in the catalogue this device "
                                       f"holds ({have}); nothing was stored")
            return self._row_of[item]
        if isinstance(item, bool) or not isinstance(item, int | np.integer):
            raise UnknownItemError(f"an item is a SKU (str) or a row (int). Found {item!r}.")
        item = int(item)
        if item < 0 or (self.n_items and item >= self.n_items):
            raise UnknownItemError(f"item {item} is not in the catalogue this device synced "
                                   f"(0..{self.n_items - 1}); nothing was stored")
        return item

    # ---- behaviour -------------------------------------------------------------------------
    def record(self, item: int | str, event: EventType | str = EventType.VIEW,
               value: float | None = None, timestamp: int | None = None) -> None:
        """Store one event for ``item`` (a SKU, or a row) and take one online step on the
        user vector (when the device has an item table). A rating needs its ``value``;
        other events count as 1."""
        kind = EventType.parse(event) if isinstance(event, str) else EventType(event)
        item = self.row(item)
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
        self._order.append(item)

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
        if s.loss.explicit:
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
                                      s.reg, 0.0, negative_weight=s.negative_weight)
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
                  category: int | str | None = None) -> Recommendation:
        """The ``k`` best items for this user by the current model: items the user has an
        ``exclude`` event for are left out (bought items by default), items the shop does
        not offer now (hidden) are never ranked, and with ``category`` (a name of the shop's
        catalogue, or an index) only that category's items are. Before any table has been
        synced there is nothing to rank: the result is empty."""
        if self.factors is None and self.pairs is None:
            return Recommendation(np.empty(0, np.int64), np.empty(0),
                                  None if self.skus is None else ())
        if self.pairs is not None:
            counts, weight, cap = self.pairs
            mine = np.array(self._order, np.int64)
            mine = pairs_model.latest_distinct(mine[mine < len(counts)], cap)
            scores = pairs_model.scores(counts, mine, weight)
        else:
            self._ensure_user()
            mine = np.unique(np.array(self._order, np.int64))
            scores = ranked(self.factors @ self.user[:-1] + self.bias, self.factors, mine,
                            self.similarity, self.head, self.tail_bonus)
        return self._top(scores, k, exclude, category)

    def similar(self, item: int | str, k: int = 10, category: int | str | None = None
                ) -> Recommendation:
        """The ``k`` items most like ``item`` (a SKU, or a row), for a product page: by
        the cosine of their pair counts under the pairs model ("customers who took this
        also took"), of their factor rows under matrix factorisation. Hidden items and the
        item itself are never ranked; nothing of the user's history is used."""
        row = self.row(item)
        if self.factors is None and self.pairs is None:
            return Recommendation(np.empty(0, np.int64), np.empty(0),
                                  None if self.skus is None else ())
        if self.pairs is not None:
            counts = self.pairs[0]
            norm = np.sqrt(np.diag(counts)) + pairs_model.EPS
            scores = counts[row] / norm[row] / norm
        else:
            q = self.factors.astype(np.float64)
            norm = np.linalg.norm(q, axis=1) + 1e-12
            scores = q @ q[row] / norm / norm[row]
        scores = np.array(scores, dtype=np.float64)
        scores[row] = -np.inf
        return self._top(scores, k, (), category, never=np.array([row]))

    def _top(self, scores: np.ndarray, k: int, exclude: Iterable[EventType | str],
             category: int | str | None, never: np.ndarray | None = None) -> Recommendation:
        """The best ``k`` of ``scores`` among the items allowed (see :meth:`recommend`)."""
        blocked = set()
        for kind in exclude:
            kind = EventType.parse(kind) if isinstance(kind, str) else EventType(kind)
            blocked |= self._touched[int(kind)]
        allowed = np.ones(self.n_items, dtype=bool)
        # (events stored before the first sync may name items beyond this table)
        blocked = np.fromiter(blocked, dtype=np.int64, count=len(blocked))
        allowed[blocked[blocked < self.n_items]] = False
        allowed[self.hidden[(self.hidden >= 0) & (self.hidden < self.n_items)]] = False
        if never is not None:
            allowed[never] = False
        if category is not None:
            allowed &= self._in_category(category)
        candidates = np.flatnonzero(allowed)
        k = min(int(k), len(candidates))
        skus = None if self.skus is None else ()
        if k <= 0:
            return Recommendation(np.empty(0, np.int64), np.empty(0), skus)
        cand_scores = scores[candidates]
        top = np.argpartition(-cand_scores, k - 1)[:k]
        top = top[np.argsort(-cand_scores[top], kind="stable")]
        rows = candidates[top]
        if self.skus is not None:
            skus = tuple(self.skus[r] for r in rows.tolist())
        return Recommendation(rows, cand_scores[top].astype(np.float64), skus)

    def _in_category(self, category: int | str) -> np.ndarray:
        """(n_items,) bool: the rows of ``category`` (a name, or an index)."""
        if self.categories is None or len(self.categories) < self.n_items:
            raise UnknownCategoryError("this device's table has no item categories")
        if isinstance(category, str):
            if category not in self.category_names:
                raise UnknownCategoryError(
                    f"category {category!r} is not in the catalogue this device synced "
                    f"({len(self.category_names)} categories)")
            category = self.category_names.index(category)
        index = self.categories[:self.n_items]
        return (index == category).any(axis=1) if index.ndim == 2 else index == category
