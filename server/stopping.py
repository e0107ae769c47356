"""Early stopping: more rounds never leave a worse model than the best one seen.

Fixed round counts and learning rates carried over from MovieLens overfit a small shop (a
2,000-event log's NDCG fell from 0.351 at round 10 to 0.217 at round 40). With
``stop-patience=P`` every device holds its latest training event out of training (its
validation slice, :meth:`~fedrec.common.partition.UserRows.holding_out`); the scheduled
evaluation rounds score that slice (``evaluate-on=validation``), never the test rows. The
server keeps the item table of the best validation figure so far; after ``P`` evaluations
without improvement it stops, puts the best table back (every row that differs gets the
current round as its version, so delta sync sends it), and only then scores the test rows.

What the server learns is what any evaluation round tells it (pooled metrics of devices'
held-out rows), here of the validation slice.

The rule's state (its best figure and round, how long it has waited, its trace and the best
table) is part of the server's checkpoint (:meth:`EarlyStop.state`, :meth:`EarlyStop.load`):
a server killed and restarted mid-run stops where the run without the restart would have,
and puts back the same table. Read back from disk it is checked like everything there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from fedrec.server.item_model import ItemModel, is_count, is_finite_number

MIN_GAIN = 1e-4  # an improvement smaller than this (relative) does not count
STATE = "early-stop"  # the checkpoint's run-state entry (and its arrays' name prefix)


@dataclass
class EarlyStop:
    """The stopping rule of one run: ``patience`` evaluations without a better
    ``metric`` (``rmse``: lower is better; a ranking metric: higher is better)."""

    patience: int
    metric: str
    best: float = math.nan
    best_round: int = 0
    waited: int = 0
    trace: list[tuple[int, float]] = field(default_factory=list)
    _factors: np.ndarray | None = None
    _bias: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.patience < 1:
            raise ValueError(f"stop-patience must be >= 1. Found {self.patience}.")

    @classmethod
    def for_run(cls, patience: int, explicit: bool) -> EarlyStop:
        return cls(patience, "rmse" if explicit else "ndcg@10")

    @property
    def lower_is_better(self) -> bool:
        return self.metric == "rmse"

    def observe(self, server_round: int, result: Mapping[str, float] | None,
                model: ItemModel) -> bool:
        """Take a validation round's pooled figures; keep the table when it is the best so
        far. Returns whether the run should stop now. A round with no figure (no device
        had a validation event) counts as no improvement."""
        value = None if not result else result.get(self.metric)
        if value is not None and math.isfinite(value):
            self.trace.append((server_round, float(value)))
            if self._better(float(value)):
                self.best, self.best_round, self.waited = float(value), server_round, 0
                self._factors = model.params.factors.copy()
                self._bias = model.params.bias.copy()
                return False
        self.waited += 1
        return self.stopped

    @property
    def stopped(self) -> bool:
        """Whether the rule has said stop (a resumed run trains no further)."""
        return self.waited >= self.patience

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """The rule as a checkpoint keeps it: the best table (arrays, when there is one) and
        the rest (JSON)."""
        arrays = {} if self._factors is None or self._bias is None else {
            "factors": self._factors, "bias": self._bias}
        meta = {"metric": self.metric, "best": None if math.isnan(self.best) else self.best,
                "best-round": self.best_round, "waited": self.waited,
                "trace": [[r, v] for r, v in self.trace]}
        return arrays, meta

    def load(self, arrays: Mapping[str, np.ndarray], meta: Mapping, last_round: int,
             n_items: int, n_factors: int) -> None:
        """Take the state :meth:`state` gave, read back from a checkpoint of a run whose
        last round is ``last_round`` and whose table is (``n_items``, ``n_factors``).
        ValueError naming the field if anything in it could not have come from this rule;
        nothing is taken then. This run's patience applies (an operator may change it)."""
        def field_error(name: str, problem: str) -> ValueError:
            return ValueError(f"early-stop.{name} {problem}")

        if not isinstance(meta, Mapping):
            raise field_error("state", f"must be a mapping. Found {type(meta).__name__}.")
        if meta.get("metric") != self.metric:
            raise field_error("metric", f"is {meta.get('metric')!r}, this run stops on "
                              f"{self.metric!r}: the checkpoint is of another kind of run")
        best = meta.get("best")
        if best is not None and not is_finite_number(best):
            raise field_error("best", f"must be a finite number or null. Found {best!r}.")
        best_round, waited = meta.get("best-round"), meta.get("waited")
        if not is_count(best_round) or not 0 <= best_round <= last_round:
            raise field_error("best-round", f"must be a whole number in [0, {last_round}]. "
                              f"Found {best_round!r}.")
        if not is_count(waited) or not 0 <= waited <= last_round:
            raise field_error("waited", f"must be a whole number in [0, {last_round}]. "
                              f"Found {waited!r}.")
        trace = meta.get("trace")
        if not isinstance(trace, list) or not all(
                isinstance(p, list) and len(p) == 2 and is_count(p[0])
                and 0 < p[0] <= last_round and is_finite_number(p[1]) for p in trace) \
                or any(b[0] <= a[0] for a, b in pairwise(trace)):
            raise field_error("trace", f"must list [round, value] pairs, rounds increasing "
                              f"in [1, {last_round}], values finite")
        if (best is None) != (best_round == 0) or (best is not None and [
                best_round, best] not in trace):
            raise field_error("best", "and best-round must be a pair the trace holds (or "
                              "null and 0 before any figure)")
        factors, bias = arrays.get("factors"), arrays.get("bias")
        if (factors is None) != (best is None) or (factors is None) != (bias is None):
            raise field_error("factors", "and bias (the best table) must be there exactly "
                              "when there is a best figure")
        if factors is not None:
            if factors.dtype != np.float32 or factors.ndim != 2 \
                    or factors.shape[1] != n_factors or not 0 < len(factors) <= n_items:
                raise field_error("factors", f"must be float32 (m <= {n_items}, "
                                  f"{n_factors}). Found {factors.dtype} {factors.shape}.")
            if bias.dtype != np.float32 or bias.shape != (len(factors),):
                raise field_error("bias", f"must be float32 ({len(factors)},). Found "
                                  f"{bias.dtype} {bias.shape}.")
            if not (np.isfinite(factors).all() and np.isfinite(bias).all()):
                raise field_error("factors", "or bias holds NaN or infinity")
        unknown = sorted(set(arrays) - {"factors", "bias"})
        if unknown:
            raise field_error("arrays", f"holds unknown arrays {unknown}")
        self.best = math.nan if best is None else float(best)
        self.best_round, self.waited = int(best_round), int(waited)
        self.trace = [(int(r), float(v)) for r, v in trace]
        self._factors = None if factors is None else np.array(factors)
        self._bias = None if bias is None else np.array(bias)

    def _better(self, value: float) -> bool:
        if math.isnan(self.best):
            return True
        gain = (self.best - value) if self.lower_is_better else (value - self.best)
        return gain > MIN_GAIN * max(abs(self.best), 1e-12)

    def restore(self, model: ItemModel, server_round: int) -> int:
        """Put the best table back (rows listed since keep theirs); returns how many rows
        changed. Changed rows get ``server_round`` as their version."""
        if self._factors is None or self._bias is None:
            return 0
        return model.restore(self._factors, self._bias, server_round)

    def summary(self) -> dict[str, float | int | list]:
        """What the history records of the rule."""
        return {"metric": self.metric, "patience": self.patience, "best": self.best,
                "best-round": self.best_round,
                "validation": [[r, v] for r, v in self.trace]}

