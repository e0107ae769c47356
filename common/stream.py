"""A dataset as a timeline: events in time order, cut into ticks, items listed over time.

Events are sorted by timestamp with a stable sort, so events with the same timestamp keep
their file order. A tick is either a number of events or a span of seconds; rounds of
training run between ticks. An item appears when it is listed: at its listing time where
the data has one (the synthetic shop), otherwise at its first event (MovieLens). Items are
renumbered in listing order, so the catalogue at any time is the ids ``0..n-1`` and grows
at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import pairwise

import numpy as np

from fedrec.common.data.interactions import IdMap, Interactions, ItemFeatures

DAY = 86_400


@dataclass(frozen=True)
class Tick:
    """Events ``[start, stop)`` of the timeline; ``now`` is the time the tick closes."""

    index: int
    start: int
    stop: int
    now: int


class Timeline:
    """``data`` in time order, with per-user and per-item views (see the module docstring)."""

    def __init__(self, data: Interactions) -> None:
        first = np.full(data.n_items, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first, data.item, data.timestamp)
        listed = first if data.item_listed is None else np.minimum(
            np.asarray(data.item_listed, dtype=np.int64), first)  # never after a first event
        # Renumber items in listing order (ties by old id): new id = rank.
        rank = np.argsort(listed, kind="stable")
        new_id = np.empty_like(rank)
        new_id[rank] = np.arange(len(rank))
        features = data.item_features
        if features is not None:
            features = ItemFeatures(features.matrix[rank], features.names)
        order = np.argsort(data.timestamp, kind="stable")
        timed = data.subset(order)
        self.data = replace(timed, item=new_id[timed.item].astype(np.int32),
                            items=IdMap(data.items.raw[rank]), item_features=features,
                            item_listed=listed[rank])
        self.order = order  # row i of the timeline is row order[i] of the file
        self.item_listed = listed[rank]  # sorted: the catalogue grows at the end
        self.n_users, self.n_items = data.n_users, data.n_items
        # Users' events in time order, as CSR offsets into the timeline.
        self.user_order, self.user_offsets = self.data.by_user()

    def __len__(self) -> int:
        return len(self.data)

    def ticks(self, events: int | None = None, seconds: int | None = None) -> list[Tick]:
        """Cut the timeline every ``events`` events, or every ``seconds`` of time (empty
        spans are skipped). A tick's ``now`` is the timestamp of its last event."""
        if (events is None) == (seconds is None):
            raise ValueError("give exactly one of events or seconds")
        t = self.data.timestamp
        n = len(t)
        if events is not None:
            if events < 1:
                raise ValueError(f"events per tick must be >= 1. Found {events}.")
            bounds = [*range(0, n, events), n]
        else:
            if seconds < 1:
                raise ValueError(f"seconds per tick must be >= 1. Found {seconds}.")
            if not n:
                return []
            edges = np.arange(t[0] - t[0] % seconds + seconds, t[-1] + seconds, seconds)
            bounds = sorted({0, n, *np.searchsorted(t, edges, side="left").tolist()})
        spans = [(a, b) for a, b in pairwise(bounds) if b > a]
        return [Tick(i, a, b, int(t[b - 1])) for i, (a, b) in enumerate(spans)]

    def user_events(self, user: int) -> np.ndarray:
        """Timeline positions of ``user``'s events, in time order."""
        return self.user_order[self.user_offsets[user]:self.user_offsets[user + 1]]

    def listed_by(self, now: int) -> int:
        """The catalogue's size at ``now``: items ``0..n-1`` are listed."""
        return int(np.searchsorted(self.item_listed, now, side="right"))
