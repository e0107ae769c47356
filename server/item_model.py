"""The server's item model: the global half of MF, its row versions and its optimiser.

:meth:`ItemModel.apply` takes one round's :class:`~fedrec.server.aggregate.Aggregate` as a
(pseudo-)gradient and moves only the rows it names with the server's step rule (SGD with
``lr = 1`` is federated averaging of the touched rows; Adam or Adagrad as FCF uses; Count,
whose step shrinks with the number of devices' moves a row has taken, for a stream's
biases). Each
moved row's version becomes the round number, so a device can later fetch only what changed.
"""

from __future__ import annotations

import math

import numpy as np

from fedrec.common import first_moves
from fedrec.common.first_moves import FirstMoves
from fedrec.common.optim import (
    COUNT,
    DEFAULT_HALVING,
    MAX_HALVING,
    MAX_LR,
    STEP_RULES,
    check_halving,
    make_step_rule,
)
from fedrec.common.params import ItemParams
from fedrec.server.aggregate import Aggregate


class ItemModel:
    """Item table + row versions + server optimiser state."""

    def __init__(self, params: ItemParams, step_rule: str = "sgd", lr: float = 1.0,
                 bias_rule: str | None = None, bias_lr: float | None = None,
                 halving: float = DEFAULT_HALVING) -> None:
        """``bias_rule``, ``bias_lr``: the biases' own step rule and step (None: the
        factors'); ``halving``: the Count rule's (either table's)."""
        self.params = params
        self.version = np.zeros(params.n_items, dtype=np.int64)
        self.round = 0
        self.refused_steps = 0  # steps undone because they diverged
        self.step_rule, self.lr = step_rule, lr
        self.bias_step_rule = step_rule if bias_rule is None else bias_rule
        self.bias_lr = lr if bias_lr is None else bias_lr
        self.halving = check_halving(halving)
        self._factor_rule = make_step_rule(step_rule, lr, params.factors.shape, halving)
        self._bias_rule = make_step_rule(self.bias_step_rule, self.bias_lr, params.bias.shape,
                                         halving)
        # The Count rule counts devices, each once per row: the rows each node has moved.
        self.counts_moves = COUNT in (step_rule, self.bias_step_rule)
        self._moved = FirstMoves()

    @property
    def n_items(self) -> int:
        return self.params.n_items

    def grow(self, factors: np.ndarray, bias: np.ndarray, round_number: int) -> None:
        """Append rows for newly listed items (their first vectors); existing rows, their
        versions and their optimiser state are left exactly as they were."""
        factors = np.asarray(factors, dtype=self.params.factors.dtype)
        bias = np.asarray(bias, dtype=self.params.bias.dtype)
        if factors.ndim != 2 or factors.shape[1] != self.params.n_factors \
                or bias.shape != (len(factors),):
            raise ValueError(f"new rows must be (m, {self.params.n_factors}) factors and (m,) "
                             f"biases. Found {factors.shape} and {bias.shape}.")
        if not len(factors):
            return
        p = self.params
        p.factors = np.concatenate([p.factors, factors])
        p.bias = np.concatenate([p.bias, bias])
        self.version = np.concatenate(
            [self.version, np.full(len(factors), round_number, dtype=np.int64)])
        self._factor_rule.grow(p.n_items)
        self._bias_rule.grow(p.n_items)

    def first_moves(self, node: int, ids: np.ndarray) -> np.ndarray:
        """Which of ``ids`` (a reply's rows, sorted and unique) ``node`` moves for the first
        time, as a mask; they are recorded. What the Count rule counts: a device adds at
        most one to a row's count over the whole run, however often it is sampled (a
        device sending moves on every row every round would otherwise shrink every row's
        step round after round: a freezing attack)."""
        return self._moved.new(node, ids)

    def apply(self, agg: Aggregate, round_number: int, counts: np.ndarray | None = None
              ) -> bool:
        """One server step on the rows of ``agg``. ``counts``: for the Count rule, how many
        devices moved each row for the first time (:meth:`first_moves`; None: the
        aggregate's devices). A step that would leave a non-finite value (a diverging
        server learning rate) is undone on the table and refused: returns False, and the
        model keeps its last finite rows."""
        if len(agg.ids):
            ids = agg.ids
            before = self.params.factors[ids].copy(), self.params.bias[ids].copy()
            # (the server's own count, never one a device claims)
            counts = agg.devices if counts is None else counts
            with np.errstate(over="ignore", invalid="ignore"):
                self._factor_rule.step(self.params.factors, ids, agg.rows.astype(np.float32),
                                       counts)
                self._bias_rule.step(self.params.bias, ids, agg.bias.astype(np.float32),
                                     counts)
            if not (np.isfinite(self.params.factors[ids]).all()
                    and np.isfinite(self.params.bias[ids]).all()):
                self.params.factors[ids], self.params.bias[ids] = before
                self.refused_steps += 1
                return False
            self.version[ids] = round_number
        self.round = round_number
        return True

    def restore(self, factors: np.ndarray, bias: np.ndarray, round_number: int) -> int:
        """Put earlier rows back (early stopping's best table: the first ``len(factors)``
        rows; rows added since keep theirs). Each row that differs gets ``round_number``
        as its version, so delta sync sends it; the optimiser state is left as it is.
        Returns how many rows changed."""
        n = len(factors)
        if n > self.n_items or factors.shape[1:] != self.params.factors.shape[1:] \
                or bias.shape != (n,):
            raise ValueError(f"rows to restore must be (m <= {self.n_items}, "
                             f"{self.params.n_factors}) and (m,). Found {factors.shape} and "
                             f"{bias.shape}.")
        p = self.params
        changed = np.flatnonzero((p.factors[:n] != factors).any(axis=1) | (p.bias[:n] != bias))
        p.factors[changed] = factors[changed]
        p.bias[changed] = bias[changed]
        self.version[changed] = round_number
        self.round = max(self.round, round_number)
        return len(changed)

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, float | int | str]]:
        """Everything the model is, as arrays and scalars (what a checkpoint stores)."""
        arrays = {"factors": self.params.factors, "bias": self.params.bias,
                  "version": self.version, **self._moved.record(self.n_items)}
        for prefix, rule in self._rules():
            arrays.update({prefix + k: v for k, v in rule.state().items()})
        meta = {"step-rule": self.step_rule, "lr": self.lr,
                "bias-step-rule": self.bias_step_rule, "bias-lr": self.bias_lr,
                "halving": self.halving, "round": self.round, "mean": float(self.params.mean),
                "refused-steps": self.refused_steps}
        return arrays, meta

    def _rules(self) -> tuple:
        return (("factor-rule.", self._factor_rule), ("bias-rule.", self._bias_rule))

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict) -> ItemModel:
        """The model :meth:`state` described, bit for bit; every value checked (a state
        read from disk may be damaged): raises ValueError naming what is wrong."""
        factors, bias, version = (arrays[k] for k in ("factors", "bias", "version"))
        if factors.dtype != np.float32 or factors.ndim != 2 or factors.shape[1] < 1:
            raise ValueError(f"factors must be a float32 (n, k) table. Found {factors.dtype} "
                             f"{factors.shape}.")
        n = factors.shape[0]
        for name, array, dtype in (("bias", bias, np.float32), ("version", version, np.int64)):
            if array.dtype != dtype or array.shape != (n,):
                raise ValueError(f"{name} must be {np.dtype(dtype).name} ({n},). Found "
                                 f"{array.dtype} {array.shape}.")
        for name, array in (("factors", factors), ("bias", bias)):
            if not np.isfinite(array).all():
                raise ValueError(f"{name} holds NaN or infinity")
        rule, lr, mean = meta["step-rule"], meta["lr"], meta["mean"]
        # (a checkpoint written before the biases had their own rule: the factors')
        bias_rule, bias_lr = meta.get("bias-step-rule", rule), meta.get("bias-lr", lr)
        # (and before the Count rule: its default, which no rule then used)
        halving = meta.get("halving", DEFAULT_HALVING)
        for key, value in (("step-rule", rule), ("bias-step-rule", bias_rule)):
            if value not in STEP_RULES:
                raise ValueError(f"{key} must be one of {', '.join(STEP_RULES)}. "
                                 f"Found {value!r}.")
        for key, value in (("lr", lr), ("bias-lr", bias_lr)):
            if not (is_finite_number(value) and 0 < value < MAX_LR):
                raise ValueError(f"{key} must be a finite number in (0, {MAX_LR:g}). "
                                 f"Found {value!r}.")
        if not (is_finite_number(halving) and 0 < halving <= MAX_HALVING):
            raise ValueError(f"halving must be a finite number in (0, {MAX_HALVING:g}]. "
                             f"Found {halving!r}.")
        if not is_finite_number(mean):
            raise ValueError(f"mean must be a finite number. Found {mean!r}.")
        for name in ("round", "refused-steps"):
            if not is_count(meta[name]):
                raise ValueError(f"{name} must be a whole number >= 0. Found {meta[name]!r}.")
        if n and (version.min() < 0 or version.max() > meta["round"]):
            raise ValueError(f"row versions must be in [0, {meta['round']}]. Found "
                             f"[{version.min()}, {version.max()}].")
        params = ItemParams(np.array(factors), np.array(bias), float(mean))
        model = cls(params, str(rule), float(lr), str(bias_rule), float(bias_lr),
                    float(halving))
        model.version = np.array(version)
        if any(k in arrays for k in first_moves.KEYS):
            if "moved" in arrays:
                raise ValueError("the moved record is there twice: as moved pairs and as "
                                 f"{', '.join(first_moves.KEYS)}")
            model._moved = FirstMoves.from_record(arrays, n)
        elif "moved" in arrays:  # (a checkpoint written before the compact record)
            model._moved = FirstMoves.from_pairs(arrays["moved"], n)
        model.round, model.refused_steps = int(meta["round"]), int(meta["refused-steps"])
        for prefix, step_rule in model._rules():
            state = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
            for name, value in state.items():
                if value.dtype.kind == "f" and not np.isfinite(value).all():
                    raise ValueError(f"{prefix}{name} holds NaN or infinity")
                if name in ("t", "v", "accum", "n") and value.size and value.min() < 0:
                    raise ValueError(f"{prefix}{name} must be >= 0 (a count or a sum of "
                                     "squares)")
            step_rule.load_state(state)
        unknown = sorted(set(arrays) - {"factors", "bias", "version", "moved",
                                        *first_moves.KEYS} - {
            k for k in arrays if k.startswith(("factor-rule.", "bias-rule."))})
        if unknown:
            raise ValueError(f"unknown arrays {unknown}")
        return model

    def changed_since(self, version: int) -> np.ndarray:
        """Ids of the rows moved after ``version`` (a round number)."""
        return np.flatnonzero(self.version > version)


def is_finite_number(value: object) -> bool:
    """A real number (not a bool) that is finite: what a value read from disk must be."""
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)


def is_count(value: object) -> bool:
    """A whole number >= 0 (an int, not a bool): a round, a count."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
