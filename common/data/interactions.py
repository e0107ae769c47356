"""The in-memory form of every dataset: a log of (user, item, event, value, time) rows.

Users and items are dense integer indices (``0..n-1``); :class:`IdMap` keeps the raw ids so
results can be reported in the dataset's own terms. Row order is the file order, which the
split protocols depend on.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import IntEnum

import numpy as np


class EventType(IntEnum):
    """Kinds of behaviour. A rating carries an explicit value; the others are implicit."""

    RATING = 0
    VIEW = 1
    CART = 2
    PURCHASE = 3

    @classmethod
    def parse(cls, text: str) -> EventType:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(e.name.lower() for e in cls)
            raise ValueError(f"unknown event type {text!r}; expected one of {names}") from None


@dataclass(frozen=True)
class IdMap:
    """Dense index ↔ raw id. ``raw[i]`` is the raw id of dense index ``i``."""

    raw: np.ndarray
    _lookup: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_raw(cls, raw_ids: np.ndarray) -> tuple[IdMap, np.ndarray]:
        """Index raw ids densely in sorted raw order; returns the map and the dense ids."""
        uniq, dense = np.unique(raw_ids, return_inverse=True)
        return cls(uniq), dense.astype(np.int32)

    def __len__(self) -> int:
        return len(self.raw)

    def index(self, raw_id: object) -> int:
        """Dense index of ``raw_id``; ``KeyError`` naming it when unknown."""
        if not self._lookup:
            self._lookup.update({r.item() if hasattr(r, "item") else r: i
                                 for i, r in enumerate(self.raw)})
        try:
            return self._lookup[raw_id]
        except KeyError:
            raise KeyError(f"unknown id {raw_id!r}") from None


@dataclass(frozen=True)
class ItemFeatures:
    """Content features per item (genres, categories): ``matrix[i]`` belongs to dense item i."""

    matrix: np.ndarray  # (n_items, n_features) float32
    names: tuple[str, ...]


@dataclass(frozen=True)
class Interactions:
    """A behaviour log over dense user and item indices, in file (or generation) order."""

    user: np.ndarray  # int32
    item: np.ndarray  # int32
    value: np.ndarray  # float32: the rating for RATING events, 1.0 for implicit events
    timestamp: np.ndarray  # int64, seconds since the epoch
    event: np.ndarray  # int8 EventType codes
    users: IdMap
    items: IdMap
    name: str = "data"
    item_features: ItemFeatures | None = None
    item_listed: np.ndarray | None = None  # int64 listing time per item, where known

    def __post_init__(self) -> None:
        n = len(self.user)
        for name in ("item", "value", "timestamp", "event"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"column {name!r} has {len(getattr(self, name))} rows, "
                                 f"'user' has {n}")
        if n and (self.user.min() < 0 or self.user.max() >= len(self.users)):
            raise ValueError("user index out of range of the user id map")
        if n and (self.item.min() < 0 or self.item.max() >= len(self.items)):
            raise ValueError("item index out of range of the item id map")

    def __len__(self) -> int:
        return len(self.user)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def subset(self, rows: np.ndarray) -> Interactions:
        """The rows at ``rows`` (indices or a mask), keeping the id maps and item side data."""
        return replace(self, user=self.user[rows], item=self.item[rows], value=self.value[rows],
                       timestamp=self.timestamp[rows], event=self.event[rows])

    def ratings(self) -> Interactions:
        """Only the explicit RATING events (the explicit protocols' rows)."""
        return self.subset(self.event == EventType.RATING)

    def positives(self) -> Interactions:
        """One row per distinct (user, item) pair, at its first occurrence in file order.

        Every event counts as a positive; for rating datasets (no repeated pairs) this is the
        log unchanged.
        """
        key = self.user.astype(np.int64) * self.n_items + self.item
        _, first = np.unique(key, return_index=True)
        if len(first) == len(self):
            return self
        return self.subset(np.sort(first))

    def by_user(self) -> tuple[np.ndarray, np.ndarray]:
        """Row order grouping rows by user (stable) and CSR offsets: user u's rows are
        ``order[offsets[u]:offsets[u+1]]``."""
        order = np.argsort(self.user, kind="stable")
        offsets = np.zeros(self.n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.user, minlength=self.n_users), out=offsets[1:])
        return order, offsets
