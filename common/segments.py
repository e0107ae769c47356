"""Imbalance, measured where it bites: light and heavy users, and the catalogue's tail.

The brief's first hard problem is imbalanced data: a few users and items carry most of the
events. An overall figure hides who pays for it, so the quality benches also report

* **light users**, about the third of users with the fewest training events, and **heavy
  users**, about the third with the most: their own HR@K and NDCG@K;
* **tail items**, the least popular 80 % of the catalogue by training events: their share
  of all recommended places (``tail-share@K``) and how many held-out tail events land in
  the top K (``tail-recall@K``, hits on tail items over held-out tail items).

A :class:`Segments` is the measuring instrument, fixed before a model is scored and the
same for every model of a run: thresholds on a user's count of training events, and the
public list of *head* items (the rest is the tail). It comes from the training split
(:meth:`Segments.from_training`), never from held-out events. A federated run sends it to
devices in the evaluation round's config (:meth:`Segments.to_config`); each device reports
its segment and its tail counts beside its metrics, and the server pools them
(:func:`pool_segments`). In the plain mode a device's training count is in its train reply
already; its segment (one of three) tells the server less than that.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from fedrec.common.data.interactions import Interactions

TAIL_SHARE = 0.8  # the tail: the least popular 80 % of the catalogue
LIGHT, MIDDLE, HEAVY = 0, 1, 2
NAMES = {LIGHT: "light", HEAVY: "heavy"}  # the segments reported (the middle third is not)
CONFIG_KEYS = ("segment-light-max", "segment-heavy-min", "segment-head")


def head_of(counts: np.ndarray, share: float = 1.0 - TAIL_SHARE) -> np.ndarray:
    """The head as a mask over the catalogue: the ``ceil(share · n)`` items with the most
    ``counts``, ties to the lower id; no item when no count is positive (nothing is known
    yet). The segments' head (training events) and the ranking's (the server's counts,
    :mod:`fedrec.common.ranking`) are drawn up alike."""
    counts = np.asarray(counts, dtype=np.float64)
    head = np.zeros(len(counts), dtype=bool)
    if not len(counts) or not (counts > 0).any():
        return head
    order = np.lexsort((np.arange(len(counts)), -counts))  # most counted first
    head[order[:int(np.ceil(len(counts) * share))]] = True
    return head


@dataclass(frozen=True)
class Segments:
    """Users with at most ``light_max`` training events are light, with at least
    ``heavy_min`` heavy; ``head`` (sorted item ids) are the popular items, every other
    item of the catalogue is in the tail."""

    light_max: int
    heavy_min: int
    head: np.ndarray

    def __post_init__(self) -> None:
        if not 0 <= self.light_max < self.heavy_min:
            raise ValueError(f"segments: light-max must be >= 0 and below heavy-min. Found "
                             f"{self.light_max}, {self.heavy_min}.")
        head = np.asarray(self.head)
        if head.ndim != 1 or (len(head) and (head.dtype.kind not in "iu" or head.min() < 0
                                             or (np.diff(head) <= 0).any())):
            raise ValueError("segments: head must be distinct item ids >= 0, sorted")
        object.__setattr__(self, "_masks", {})  # tail masks by catalogue size

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Segments) and self.light_max == other.light_max
                and self.heavy_min == other.heavy_min
                and np.array_equal(self.head, other.head))

    __hash__ = None  # (mutable-looking: holds an array)

    @classmethod
    def from_training(cls, user_counts: np.ndarray, item_counts: np.ndarray,
                      tail_share: float = TAIL_SHARE) -> Segments:
        """The segments of a training split: ``user_counts`` (training events per user
        with any) and ``item_counts`` (per item of the catalogue). The light threshold is
        the count of the user at the first third of the users sorted by count, the heavy
        one the count at two thirds (users tied at a threshold share its segment, so a
        segment is about a third); the head is the most popular ``1 - tail_share`` of the
        catalogue (ties to the lower id)."""
        counts = np.sort(np.asarray(user_counts, dtype=np.int64))
        counts = counts[counts > 0]
        if not len(counts):
            raise ValueError("segments: no user has a training event")
        light = int(counts[max(0, len(counts) // 3 - 1)])
        heavy = max(light + 1, int(counts[min(len(counts) - 1, (2 * len(counts)) // 3)]))
        head = head_of(np.asarray(item_counts, dtype=np.int64), 1.0 - tail_share)
        return cls(light, heavy, np.flatnonzero(head).astype(np.int64))

    @classmethod
    def of(cls, train: Interactions) -> Segments:
        """The segments of a split's training rows (:meth:`from_training`)."""
        return cls.from_training(np.bincount(train.user, minlength=train.n_users),
                                 np.bincount(train.item, minlength=train.n_items))

    def segment(self, counts: np.ndarray | int) -> np.ndarray:
        """Each user's segment (:data:`LIGHT`, :data:`MIDDLE` or :data:`HEAVY`) by their
        count of training events."""
        counts = np.asarray(counts)
        return np.where(counts <= self.light_max, LIGHT,
                        np.where(counts >= self.heavy_min, HEAVY, MIDDLE))

    def group(self, count: int) -> str | None:
        """The reported segment (``light`` or ``heavy``) of a user with ``count`` events;
        None for the middle third."""
        return NAMES.get(int(self.segment(count)))

    def groups(self, counts: np.ndarray) -> list[str | None]:
        """:meth:`group` of each of ``counts``."""
        names = np.array([NAMES.get(code) for code in (LIGHT, MIDDLE, HEAVY)], dtype=object)
        return names[self.segment(counts)].tolist()

    def tail_mask(self, n_items: int) -> np.ndarray:
        """Whether each item of an ``n_items`` catalogue is in the tail (items listed
        after the head was drawn up are tail items); read only."""
        mask = self._masks.get(n_items)
        if mask is None:  # (a replay's devices ask every message: made once per size)
            mask = np.ones(n_items, dtype=bool)
            mask[self.head[self.head < n_items]] = False
            mask.flags.writeable = False
            self._masks[n_items] = mask
        return mask

    def to_config(self) -> dict[str, int | list[int]]:
        """The keys of an evaluation round's config that carry the segments."""
        return {"segment-light-max": self.light_max, "segment-heavy-min": self.heavy_min,
                "segment-head": [int(i) for i in self.head]}

    @classmethod
    def from_config(cls, config: Mapping) -> Segments | None:
        """The segments an evaluation round's config carries (None: it carries none);
        a missing, mistyped or inconsistent key is refused by name."""
        present = [key for key in CONFIG_KEYS if key in config]
        if not present:
            return None
        missing = [key for key in CONFIG_KEYS if key not in config]
        if missing:
            raise ValueError(f"round config: {missing[0]!r} missing beside {present[0]!r}")
        values = []
        for key in CONFIG_KEYS[:2]:
            value = config[key]
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"round config: {key!r} must be int, found {value!r}")
            values.append(value)
        head = config["segment-head"]
        if not isinstance(head, list | tuple | np.ndarray) or any(
                isinstance(i, bool) or not isinstance(i, int | np.integer) for i in head):
            raise ValueError("round config: 'segment-head' must be a list of item ids")
        try:
            return cls(values[0], values[1], np.asarray(head, dtype=np.int64))
        except ValueError as exc:
            raise ValueError(f"round config: {exc}") from None


def user_figures(hits: np.ndarray, ndcg: np.ndarray, segment: np.ndarray
                 ) -> dict[str, float]:
    """Light and heavy users' HR and NDCG, from per-user arrays (``hits``: the user's
    number of hits; ``ndcg``: the user's NDCG; ``segment``: the user's segment). A segment
    with no user is left out."""
    out: dict[str, float] = {}
    for code, name in NAMES.items():
        mine = segment == code
        if mine.any():
            out[f"{name}-users"] = float(mine.sum())
            out[f"{name}-hr"] = float(np.mean(hits[mine] > 0))
            out[f"{name}-ndcg"] = float(np.mean(ndcg[mine]))
    return out


def tail_figures(tail_recs: float, recs: float, tail_hits: float,
                 tail_test: float) -> dict[str, float]:
    """The tail's share of recommended places and its recall (each left out when there
    was nothing to count)."""
    out = {}
    if recs:
        out["tail-share"] = tail_recs / recs
    if tail_test:
        out["tail-recall"] = tail_hits / tail_test
    return out


def with_k(figures: Mapping[str, float], k: int) -> dict[str, float]:
    """Name each rate with its cut-off (``light-ndcg`` → ``light-ndcg@10``); the counts
    of users keep their names."""
    return {(key if key.endswith("-users") else f"{key}@{k}"): v
            for key, v in figures.items()}


def pooling_order(rows: Iterable[Mapping[str, float]]) -> list[Mapping[str, float]]:
    """Devices' metric rows in an order of their own (by their keys and values), not the
    order replies arrived in: sums over them, and so the pooled figures, are then the same
    to the last bit whatever the arrival order (a resumed run's, a slower device's)."""
    return sorted(rows, key=lambda row: sorted(row.items()))


def pool_segments(rows: Iterable[Mapping[str, float]], k: int) -> dict[str, float]:
    """Pool devices' evaluation replies that carry a segment (see
    :meth:`fedrec.client.device.Device.evaluate_ranking`) into the segment figures."""
    rows = [r for r in pooling_order(rows) if "segment" in r and r.get("num-users", 0) > 0]
    if not rows:
        return {}
    seg = np.array([r["segment"] for r in rows])
    hits = np.array([r[f"hr@{k}"] for r in rows])
    ndcg = np.array([r[f"ndcg@{k}"] for r in rows])
    out = user_figures(hits, ndcg, seg)
    out.update(tail_figures(sum(r["tail-recs"] for r in rows), sum(r["recs"] for r in rows),
                            sum(r["tail-hits"] for r in rows),
                            sum(r["tail-test"] for r in rows)))
    return with_k(out, k)


def segments_line(metrics: Mapping[str, float], k: int = 10) -> str:
    """One line of a model's segment figures, for a bench's console summary."""
    parts = [f"{name} users ndcg@{k} {metrics[f'{name}-ndcg@{k}']:.4f}"
             for name in NAMES.values() if f"{name}-ndcg@{k}" in metrics]
    parts += [f"{key} {metrics[f'{key}@{k}']:.4f}" for key in ("tail-share", "tail-recall")
              if f"{key}@{k}" in metrics]
    return ", ".join(parts)
