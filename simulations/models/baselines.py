"""Simple baselines every quality figure is shown beside.

* :class:`GlobalMean`: every rating is the training mean.
* :class:`BiasBaseline`: ``μ + b_u + b_i`` fitted by regularised alternating least squares
  (Surprise's BaselineOnly with its defaults: 10 sweeps, λ_i = 10, λ_u = 15).
* :class:`Popularity`: items ranked by their number of training interactions.

All share the :class:`~fedrec.common.mf.MatrixFactorization` fitting signature
``fit(user, item, value, n_users, n_items)``.
"""

from __future__ import annotations

import numpy as np

from fedrec.common.params import known_ids


class GlobalMean:
    """Predicts the training mean rating for every pair."""

    def fit(self, user: np.ndarray, item: np.ndarray, value: np.ndarray | None,
            n_users: int, n_items: int) -> GlobalMean:
        if value is None or not len(value):
            raise ValueError("GlobalMean needs rating values")
        self.mean = float(np.mean(value))
        return self

    def predict(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        return np.full(len(user), self.mean)


class BiasBaseline:
    """``μ + b_u + b_i`` by alternating closed-form ridge updates, vectorised."""

    def __init__(self, sweeps: int = 10, reg_user: float = 15.0, reg_item: float = 10.0) -> None:
        self.sweeps, self.reg_user, self.reg_item = sweeps, reg_user, reg_item

    def fit(self, user: np.ndarray, item: np.ndarray, value: np.ndarray | None,
            n_users: int, n_items: int) -> BiasBaseline:
        if value is None or not len(value):
            raise ValueError("BiasBaseline needs rating values")
        value = np.asarray(value, dtype=np.float64)
        self.mean = float(value.mean())
        self.user_bias = np.zeros(n_users)
        self.item_bias = np.zeros(n_items)
        n_u = np.bincount(user, minlength=n_users)
        n_i = np.bincount(item, minlength=n_items)
        for _ in range(self.sweeps):  # users first, then items, as Surprise does
            resid = value - self.mean - self.item_bias[item]
            self.user_bias = np.bincount(user, resid, n_users) / (self.reg_user + n_u)
            resid = value - self.mean - self.user_bias[user]
            self.item_bias = np.bincount(item, resid, n_items) / (self.reg_item + n_i)
        self.range = (float(value.min()), float(value.max()))
        return self

    def predict(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        known_ids("user", user, len(self.user_bias))
        known_ids("item", item, len(self.item_bias))
        pred = self.mean + self.user_bias[user] + self.item_bias[item]
        return np.clip(pred, *self.range)


class Popularity:
    """Ranks items by training interaction count (ties: lower item index first)."""

    def fit(self, user: np.ndarray, item: np.ndarray, value: np.ndarray | None,
            n_users: int, n_items: int) -> Popularity:
        self.counts = np.bincount(item, minlength=n_items).astype(np.float64)
        return self

    def score_items(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(users), len(self.counts)))
