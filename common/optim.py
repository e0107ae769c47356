"""Step rules for row-sparse parameter tables (SGD, Adagrad, Adam, Count).

A table (the item factors, the item biases, ...) is updated only at the rows a batch touched.
:func:`sum_rows` folds the per-example gradients of repeated rows into one row each;
a :class:`StepRule` then moves those rows. Adagrad and Adam keep per-row state, and Adam
counts steps per row ("lazy" Adam), so rows that are rarely touched are not over-corrected.
Count shrinks each row's step with the number of moves folded into it (a running mean).
The same rules serve centralized training and, later, the federated server's optimiser step.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np

COUNT = "count"
STEP_RULES = ("sgd", "adagrad", "adam", COUNT)
# Count's default: a row's step halves once this many moves were folded into it.
DEFAULT_HALVING = 4.0
# The largest server step a run may ask for, and a checkpoint may hold (one bound for both,
# so no run writes a checkpoint it cannot load again).
MAX_LR = 1e6
MAX_HALVING = 1e9


def sum_rows(rows: np.ndarray, grads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum gradient rows that share a row index.

    Returns the sorted unique indices and, aligned with them, the summed gradients
    (same trailing shape as ``grads``).
    """
    ids, summed, _ = _summed(rows, grads, counted=False)
    return ids, summed


def sum_rows_counted(rows: np.ndarray, grads: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`sum_rows`, and how many gradient rows were summed into each (for
    :class:`Count`)."""
    ids, summed, counts = _summed(rows, grads, counted=True)
    return ids, summed, counts if counts is not None else np.ones(len(ids))


def _summed(rows: np.ndarray, grads: np.ndarray, counted: bool
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The sums, and (``counted``, where rows repeat) the count behind each; None: one
    each."""
    if len(rows) <= 1:
        return rows, grads, None
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    first = np.empty(len(rows), dtype=bool)
    first[0] = True
    np.not_equal(sorted_rows[1:], sorted_rows[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    if len(starts) == len(rows):  # no repeats: nothing to add up
        return sorted_rows, grads[order], None
    counts = np.diff(np.append(starts, len(rows))).astype(np.float64) if counted else None
    return sorted_rows[starts], np.add.reduceat(grads[order], starts, axis=0), counts


class StepRule(ABC):
    """Moves selected rows of one table against their gradient."""

    def __init__(self, lr: float) -> None:
        if not lr > 0:
            raise ValueError(f"Learning rate must be > 0. Found {lr}.")
        self.lr = float(lr)

    @abstractmethod
    def step(self, table: np.ndarray, rows: np.ndarray, grad: np.ndarray,
             counts: np.ndarray | None = None) -> None:
        """Update ``table[rows]`` in place; ``rows`` must be unique. ``counts``: how many
        moves (examples, or devices' updates) were summed into each row's ``grad`` (None:
        one each); only :class:`Count` uses them."""

    def grow(self, n_rows: int) -> None:  # noqa: B027 - stateless rules need nothing
        """Make room for state of a table that grew to ``n_rows`` rows."""

    def state(self) -> dict[str, np.ndarray]:
        """The rule's per-row state (to checkpoint it); empty for stateless rules."""
        return {}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state` returned, checking names and shapes."""
        own = self.state()
        if set(state) != set(own):
            raise ValueError(f"{type(self).__name__} state has {sorted(own)}, "
                             f"found {sorted(state)}")
        for name, value in state.items():
            if value.shape != own[name].shape:
                raise ValueError(f"{type(self).__name__} state {name!r} has shape "
                                 f"{own[name].shape}, found {value.shape}")
            setattr(self, name, np.array(value, dtype=own[name].dtype))


class SGD(StepRule):
    """Plain gradient step: ``θ ← θ − lr·g``."""

    def step(self, table: np.ndarray, rows: np.ndarray, grad: np.ndarray,
             counts: np.ndarray | None = None) -> None:
        table[rows] -= self.lr * grad


class Adagrad(StepRule):
    """Adagrad: each coordinate's step shrinks with its accumulated squared gradient."""

    def __init__(self, lr: float, shape: tuple[int, ...], eps: float = 1e-8,
                 initial_accumulator: float = 0.0) -> None:
        super().__init__(lr)
        self.eps = eps
        self.accum = np.full(shape, initial_accumulator, dtype=np.float32)

    def step(self, table: np.ndarray, rows: np.ndarray, grad: np.ndarray,
             counts: np.ndarray | None = None) -> None:
        acc = self.accum[rows] + grad * grad
        self.accum[rows] = acc
        table[rows] -= self.lr * grad / (np.sqrt(acc) + self.eps)

    def grow(self, n_rows: int) -> None:
        self.accum = _grow(self.accum, n_rows)

    def state(self) -> dict[str, np.ndarray]:
        return {"accum": self.accum}


class Adam(StepRule):
    """Lazy Adam: moments and bias correction advance only for the rows a step touches."""

    def __init__(self, lr: float, shape: tuple[int, ...], beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8) -> None:
        super().__init__(lr)
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"Adam betas must be in [0, 1). Found {beta1}, {beta2}.")
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m = np.zeros(shape, dtype=np.float32)
        self.v = np.zeros(shape, dtype=np.float32)
        self.t = np.zeros(shape[0], dtype=np.int64)

    def step(self, table: np.ndarray, rows: np.ndarray, grad: np.ndarray,
             counts: np.ndarray | None = None) -> None:
        t = self.t[rows] + 1
        self.t[rows] = t
        m = self.beta1 * self.m[rows] + (1 - self.beta1) * grad
        v = self.beta2 * self.v[rows] + (1 - self.beta2) * grad * grad
        self.m[rows], self.v[rows] = m, v
        tf = t.astype(np.float32)
        c1 = 1 - np.float32(self.beta1) ** tf
        c2 = 1 - np.float32(self.beta2) ** tf
        if grad.ndim > 1:
            c1, c2 = c1[:, None], c2[:, None]
        table[rows] -= np.float32(self.lr) * (m / c1) / (np.sqrt(v / c2) + np.float32(self.eps))

    def grow(self, n_rows: int) -> None:
        self.m, self.v = _grow(self.m, n_rows), _grow(self.v, n_rows)
        self.t = _grow(self.t, n_rows)

    def state(self) -> dict[str, np.ndarray]:
        return {"m": self.m, "v": self.v, "t": self.t}


class Count(StepRule):
    """A step that shrinks with each row's count of moves: after ``n`` moves a row's next
    one is scaled by ``lr·h / (h + n)``, so the step halves at ``n = h`` (``halving``).

    With ``lr·h = 1`` a row is the running mean of its targets with a prior of ``h − 1``
    pseudo-moves at its first value (a ridge mean): a scalar an online learner estimates
    from every event on it, such as an item's rating bias, settles as its evidence grows
    instead of following its last few events. ``k`` moves summed into one step (a round's
    devices, each against the same stale row) take the step the ``k``-th of them would
    have alone, ``lr·h / (h + n + k − 1)``, which for a mean is exact. Moves that are not
    counted (``k = 0``: on the server, devices that moved the row before) take the step
    the next counted one would, ``lr·h / (h + n)``.
    """

    def __init__(self, lr: float, shape: tuple[int, ...],
                 halving: float = DEFAULT_HALVING) -> None:
        super().__init__(lr)
        check_halving(halving)
        self.halving = float(halving)
        self.n = np.zeros(shape[0], dtype=np.float64)

    def step(self, table: np.ndarray, rows: np.ndarray, grad: np.ndarray,
             counts: np.ndarray | None = None) -> None:
        k = np.ones(len(rows)) if counts is None else np.asarray(counts, dtype=np.float64)
        if k.shape != (len(rows),) or not (k >= 0).all():
            raise ValueError(f"counts must be one number >= 0 per row ({len(rows)}). Found "
                             f"shape {k.shape}.")
        h = self.halving
        scale = self.lr * h / (h + self.n[rows] + np.maximum(k, 1) - 1)
        self.n[rows] += k
        if grad.ndim > 1:
            scale = scale[:, None]
        table[rows] -= (scale * grad).astype(table.dtype)

    def grow(self, n_rows: int) -> None:
        self.n = _grow(self.n, n_rows)

    def state(self) -> dict[str, np.ndarray]:
        return {"n": self.n}


def check_halving(halving: float) -> float:
    """A :class:`Count` rule's halving count: finite and > 0 (raises ValueError)."""
    if not (isinstance(halving, int | float) and not isinstance(halving, bool)
            and math.isfinite(halving) and 0 < halving <= MAX_HALVING):
        raise ValueError(f"halving must be a number in (0, {MAX_HALVING:g}]. Found "
                         f"{halving!r}.")
    return float(halving)


def make_step_rule(name: str, lr: float, shape: tuple[int, ...],
                   halving: float = DEFAULT_HALVING) -> StepRule:
    """Build a step rule by name for a table of ``shape`` (``halving``: Count's)."""
    if name == "sgd":
        return SGD(lr)
    if name == "adagrad":
        return Adagrad(lr, shape)
    if name == "adam":
        return Adam(lr, shape)
    if name == COUNT:
        return Count(lr, shape, halving)
    raise ValueError(f"Unknown step rule {name!r}; expected one of {', '.join(STEP_RULES)}.")


def _grow(arr: np.ndarray, n_rows: int) -> np.ndarray:
    if n_rows < arr.shape[0]:
        raise ValueError(f"A table can only grow: has {arr.shape[0]} rows, asked for {n_rows}.")
    out = np.zeros((n_rows, *arr.shape[1:]), dtype=arr.dtype)
    out[: arr.shape[0]] = arr
    return out
