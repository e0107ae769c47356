"""Simulated devices: a dataset's protocol split, cut into one partition per user.

A simulated device is identified by its partition id (the user's dense index). The split is
computed once per process and cached, so thousands of simulated devices share it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from fedrec.common.data.registry import load_dataset
from fedrec.common.segments import Segments
from fedrec.common.split import Split, split, validation_split
from fedrec.common.stream import Timeline


@dataclass(frozen=True)
class UserRows:
    """One user's training and held-out rows (dense item ids and values); with a
    validation slice (:meth:`holding_out`), the training rows it was taken from."""

    train_items: np.ndarray
    train_values: np.ndarray
    test_items: np.ndarray
    test_values: np.ndarray
    valid_items: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    valid_values: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))

    def holding_out(self, n: int, keep: int = 2) -> UserRows:
        """The rows with the user's latest ``n`` training events moved to a validation
        slice (what early stopping scores rounds on: never the test rows). A user who
        would keep fewer than ``keep`` training events holds out nothing."""
        if n < 0:
            raise ValueError(f"validation events must be >= 0. Found {n}.")
        if not n or len(self.train_items) - n < keep:
            return self
        cut = len(self.train_items) - n
        return replace(self, train_items=self.train_items[:cut],
                       train_values=self.train_values[:cut],
                       valid_items=self.train_items[cut:], valid_values=self.train_values[cut:])


class Partitions:
    """Per-user views of a split, by CSR offsets (no per-user copies until asked)."""

    def __init__(self, s: Split) -> None:
        self.split = s
        self.n_users, self.n_items = s.train.n_users, s.train.n_items
        self._train = s.train.by_user()
        self._test = s.test.by_user()
        values = s.train.value
        self.rating_range = (float(values.min()), float(values.max())) if len(values) else (
            -np.inf, np.inf)

    def user(self, uid: int) -> UserRows:
        if not 0 <= uid < self.n_users:
            raise ValueError(f"partition id must be in [0, {self.n_users}). Found {uid}.")
        (tr_order, tr_off), (te_order, te_off) = self._train, self._test
        tr = tr_order[tr_off[uid]:tr_off[uid + 1]]
        te = te_order[te_off[uid]:te_off[uid + 1]]
        s = self.split
        return UserRows(s.train.item[tr], s.train.value[tr], s.test.item[te], s.test.value[te])


@lru_cache(maxsize=4)
def simulated_partitions(dataset: str, protocol: str, fold: int = 0,
                         data_dir: str | None = None, validation: bool = False) -> Partitions:
    """The cached partitions of ``dataset`` under ``protocol`` (fold ``fold``); with
    ``validation``, of its validation split (:func:`~fedrec.common.split.validation_split`:
    the training events split again, the test events left out)."""
    data = load_dataset(dataset, data_dir or None)
    for s in split(data, protocol):
        if s.fold == fold:
            return Partitions(validation_split(s) if validation else s)
    raise ValueError(f"protocol {protocol!r} has no fold {fold}")


@lru_cache(maxsize=4)
def simulated_timeline(dataset: str, explicit: bool, data_dir: str | None = None) -> Timeline:
    """The cached timeline of ``dataset``: its ratings (``explicit``), or every event as an
    implicit positive (value 1)."""
    data = load_dataset(dataset, data_dir or None)
    data = (data.ratings() if explicit
            else replace(data, value=np.ones(len(data), dtype=np.float32)))
    if not len(data):
        raise ValueError(f"dataset {dataset!r} has no {'rating ' if explicit else ''}events")
    return Timeline(data)


@lru_cache(maxsize=4)
def simulated_segments(dataset: str, explicit: bool, data_dir: str | None = None
                       ) -> Segments:
    """The imbalance segments a replay of ``dataset`` is measured with: users and items by
    their events in the whole timeline (:mod:`fedrec.common.segments`; an instrument of
    the bench, the same for every model, never used to learn)."""
    return Segments.of(simulated_timeline(dataset, explicit, data_dir).data)
