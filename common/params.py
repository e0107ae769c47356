"""Model parameters, split by owner.

Biased matrix factorisation scores a (user, item) pair as

* explicit: ``r̂ = μ + b_u + b_i + p_u · q_i``
* implicit: ``s = b_i + p_u · q_i``

``p_u`` and ``b_u`` belong to the user's device and never leave it (:class:`UserParams`);
``q_i``, ``b_i`` and ``μ`` are global and live on the server (:class:`ItemParams`).
Keeping the two apart here is what lets later layers put them on different machines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DTYPE = np.float32


@dataclass
class ItemParams:
    """The global, item-side half of the model: item factors, item biases, global mean."""

    factors: np.ndarray  # (n_items, k) float32
    bias: np.ndarray  # (n_items,) float32
    mean: float = 0.0

    @classmethod
    def init(
        cls, n_items: int, n_factors: int, rng: np.random.Generator, std: float = 0.1,
        mean: float = 0.0,
    ) -> ItemParams:
        """Item rows drawn from N(0, std²), biases zero."""
        _check_shape(n_items, n_factors)
        factors = rng.normal(0.0, std, size=(n_items, n_factors)).astype(DTYPE)
        return cls(factors=factors, bias=np.zeros(n_items, dtype=DTYPE), mean=float(mean))

    @property
    def n_items(self) -> int:
        return int(self.factors.shape[0])

    @property
    def n_factors(self) -> int:
        return int(self.factors.shape[1])

    def copy(self) -> ItemParams:
        return ItemParams(self.factors.copy(), self.bias.copy(), self.mean)


@dataclass
class UserParams:
    """The private, device-side half: one row per user this process holds.

    A device holds a single row; a centralized model holds every user's row.
    """

    factors: np.ndarray  # (n_users, k) float32
    bias: np.ndarray  # (n_users,) float32

    @classmethod
    def init(
        cls, n_users: int, n_factors: int, rng: np.random.Generator, std: float = 0.1
    ) -> UserParams:
        """User rows drawn from N(0, std²), biases zero."""
        _check_shape(n_users, n_factors)
        factors = rng.normal(0.0, std, size=(n_users, n_factors)).astype(DTYPE)
        return cls(factors=factors, bias=np.zeros(n_users, dtype=DTYPE))

    @property
    def n_users(self) -> int:
        return int(self.factors.shape[0])

    def copy(self) -> UserParams:
        return UserParams(self.factors.copy(), self.bias.copy())


def _check_shape(n_rows: int, n_factors: int) -> None:
    if n_rows < 0:
        raise ValueError(f"Number of rows must be >= 0. Found {n_rows}.")
    if n_factors < 1:
        raise ValueError(f"Number of factors must be >= 1. Found {n_factors}.")


def known_ids(field: str, ids: np.ndarray, n: int) -> None:
    """ValueError naming ``field`` unless every id is in ``[0, n)``: a user or item the
    model does not have is refused, never wrapped around or read past a table."""
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        bad = ids[(ids < 0) | (ids >= n)]
        raise ValueError(f"{field} {int(bad[0])} is unknown: the model has {n} {field}s "
                         f"(ids 0..{n - 1})")
