"""The centralized models and baselines as every bench fits and scores them: one model by
name, fitted on a split's training rows, scored on its held-out rows by the protocol's
metrics (RMSE/MAE for ratings, full-ranking @K for implicit feedback).

Apart from :mod:`fedrec.simulations.benches.quality` (the bench) so that the federated simulation,
which scores the centralized model beside itself, and the quality bench, which runs that
simulation, do not import each other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fedrec.common.data.interactions import Interactions
from fedrec.common.metrics import mae, ranking_metrics, rmse
from fedrec.common.mf import MatrixFactorization, MFConfig
from fedrec.common.ranking import DEFAULT_BONUS, ranked
from fedrec.common.segments import Segments
from fedrec.common.split import Split
from fedrec.simulations.models.baselines import BiasBaseline, GlobalMean, Popularity
from fedrec.simulations.models.pairs import ItemPairs

K = 10  # the cut-off of every ranking metric


def make_model(name: str, config: MFConfig, cap: int = 200) -> Any:
    """The model ``name``; ``cap``: the pairs model's distinct items a user."""
    if name == "global-mean":
        return GlobalMean()
    if name == "bias":
        return BiasBaseline()
    if name == "popularity":
        return Popularity()
    if name == "centralized-mf":
        return MatrixFactorization(config)
    if name == "centralized-pairs":
        return ItemPairs(cap)
    raise ValueError(f"Unknown model {name!r}.")


# The similarity's weight the centralized model ranks with: 0, chosen on ML-100K
# implicit-80-20's validation split (the preset, seed 0, re-ranked; 2026-12-07): at the
# devices' 0.1 NDCG@10 0.2580 and light users 0.2404, against 0.2625 and 0.2420 without it
# (both at tail bonus 0.2). Its user vectors fit all its epochs at once; a device's fit its
# own rounds, and gain from the likeness (fedrec.common.ranking.DEFAULT_SIMILARITY).
CENTRALIZED_SIMILARITY = 0.0


def evaluate(model: Any, s: Split, tail_bonus: float = DEFAULT_BONUS,
             similarity: float = CENTRALIZED_SIMILARITY) -> dict[str, float]:
    """The protocol's metrics of a fitted model on a split's held-out rows. Matrix
    factorisation ranks by the devices' rule (:func:`fedrec.common.ranking.ranked`): with
    ``similarity`` to each user's training items (by default the centralized model's own
    weight, :data:`CENTRALIZED_SIMILARITY`), and ``tail_bonus`` against the head of the
    training counts (the server's count of a federated run estimates the same); the
    baselines rank by their own scores."""
    if s.explicit:
        pred = model.predict(s.test.user, s.test.item)
        return {"rmse": rmse(pred, s.test.value), "mae": mae(pred, s.test.value)}
    segments = Segments.of(s.train)
    score = model.score_items
    if (tail_bonus or similarity) and isinstance(model, MatrixFactorization):
        head = ~segments.tail_mask(s.train.n_items)
        order, starts = s.train.by_user()
        items = s.train.item[order]

        def score(users: np.ndarray) -> np.ndarray:
            histories = [items[starts[u]:starts[u + 1]] for u in users]
            return ranked(model.score_items(users), model.items.factors, histories,
                          similarity, head, tail_bonus)
    metrics = ranking_metrics(score, s.train, s.test, k=K, segments=segments)
    metrics.pop("users")
    return metrics


def fit(model: Any, train: Interactions, on_epoch: Callable[[int, float], None] | None) -> None:
    args = (train.user, train.item, train.value, train.n_users, train.n_items)
    if isinstance(model, MatrixFactorization):
        model.fit(*args, on_epoch=on_epoch)
    elif isinstance(model, ItemPairs):
        model.fit(train)
    else:
        model.fit(*args)
