"""The ``pairs`` model trained centrally (:mod:`fedrec.common.pairs`): the same table, the
same held-out slice for popularity's weight and the same scores as a federated run, from
the pooled training rows. A federated run learns the same table exactly, so the two agree
(tested), and this is the reference its figures are compared with.
"""

from __future__ import annotations

import numpy as np

from fedrec.common import pairs
from fedrec.common.data.interactions import Interactions
from fedrec.common.metrics import ranking_metrics

KEY = "ndcg@10"


class ItemPairs:
    """Fit on training rows (each user's in time order); ``weight`` is chosen on each
    user's latest event held out (users keeping at least two events), as devices do."""

    def __init__(self, cap: int = 200, weights: tuple[float, ...] = pairs.WEIGHTS) -> None:
        self.cap, self.weights = cap, tuple(weights)
        self.weight: float | None = None
        self.validation: dict[float, float] = {}

    def fit(self, train: Interactions) -> ItemPairs:
        """Choose the weight on the held-out slice, then count every training row."""
        order, offsets = train.by_user()
        n_users, n_items = train.n_users, train.n_items
        rows_of = [order[offsets[u]:offsets[u + 1]] for u in range(n_users)]
        held = np.zeros(len(train), bool)  # each user's latest event (UserRows.holding_out)
        for rows in rows_of:
            if len(rows) - 1 >= 2:
                held[rows[-1]] = True
        kept, valid = train.subset(~held), train.subset(held)
        self.items = [pairs.latest_distinct(train.item[rows[~held[rows]]], self.cap)
                      for rows in rows_of]
        self.counts = pairs.PairCounts.of_sets(self.items, n_items).counts
        for w in self.weights:
            self.weight = w
            self.validation[w] = ranking_metrics(self.score_items, kept, valid)[KEY]
        self.weight = max(self.weights, key=lambda w: self.validation[w])
        self.items = [pairs.latest_distinct(train.item[rows], self.cap) for rows in rows_of]
        self.counts = pairs.PairCounts.of_sets(self.items, n_items).counts
        return self

    def score_items(self, users: np.ndarray) -> np.ndarray:
        prior = pairs.popularity_prior(self.counts)
        return np.stack([pairs.scores(self.counts, self.items[u], self.weight, prior)
                         for u in users])

