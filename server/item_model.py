"""The server's item model: the global half of MF, its row versions and its optimiser.

:meth:`ItemModel.apply` takes one round's :class:`~fedrec.server.aggregate.Aggregate` as a
(pseudo-)gradient and moves only the rows it names with the server's step rule (SGD with
``lr = 1`` is federated averaging of the touched rows; Adam or Adagrad as FCF uses). Each
moved row's version becomes the round number, so a device can later fetch only what changed.
"""

from __future__ import annotations

import numpy as np

from fedrec.common.optim import make_step_rule
from fedrec.common.params import ItemParams
from fedrec.server.aggregate import Aggregate


class ItemModel:
    """Item table + row versions + server optimiser state."""

    def __init__(self, params: ItemParams, step_rule: str = "sgd", lr: float = 1.0) -> None:
        self.params = params
        self.version = np.zeros(params.n_items, dtype=np.int64)
        self.round = 0
        self.refused_steps = 0  # steps undone because they diverged
        self.step_rule, self.lr = step_rule, lr
        self._factor_rule = make_step_rule(step_rule, lr, params.factors.shape)
        self._bias_rule = make_step_rule(step_rule, lr, params.bias.shape)

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

    def apply(self, agg: Aggregate, round_number: int) -> bool:
        """One server step on the rows of ``agg``. A step that would leave a non-finite
        value (a diverging server learning rate) is undone on the table and refused:
        returns False, and the model keeps its last finite rows."""
        if len(agg.ids):
            ids = agg.ids
            before = self.params.factors[ids].copy(), self.params.bias[ids].copy()
            with np.errstate(over="ignore", invalid="ignore"):
                self._factor_rule.step(self.params.factors, ids, agg.rows.astype(np.float32))
                self._bias_rule.step(self.params.bias, ids, agg.bias.astype(np.float32))
            if not (np.isfinite(self.params.factors[ids]).all()
                    and np.isfinite(self.params.bias[ids]).all()):
                self.params.factors[ids], self.params.bias[ids] = before
                self.refused_steps += 1
                return False
            self.version[ids] = round_number
        self.round = round_number
        return True

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, float | int | str]]:
        """Everything the model is, as arrays and scalars (what a checkpoint stores)."""
        arrays = {"factors": self.params.factors, "bias": self.params.bias,
                  "version": self.version}
        for prefix, rule in self._rules():
            arrays.update({prefix + k: v for k, v in rule.state().items()})
        meta = {"step-rule": self.step_rule, "lr": self.lr, "round": self.round,
                "mean": float(self.params.mean), "refused-steps": self.refused_steps}
        return arrays, meta

    def _rules(self) -> tuple:
        return (("factor-rule.", self._factor_rule), ("bias-rule.", self._bias_rule))

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict) -> ItemModel:
        """The model :meth:`state` described, bit for bit."""
        params = ItemParams(np.array(arrays["factors"], dtype=np.float32),
                            np.array(arrays["bias"], dtype=np.float32), float(meta["mean"]))
        model = cls(params, str(meta["step-rule"]), float(meta["lr"]))
        model.version = np.array(arrays["version"], dtype=np.int64)
        model.round, model.refused_steps = int(meta["round"]), int(meta["refused-steps"])
        for prefix, rule in model._rules():
            rule.load_state({k[len(prefix):]: v for k, v in arrays.items()
                             if k.startswith(prefix)})
        return model

    def changed_since(self, version: int) -> np.ndarray:
        """Ids of the rows moved after ``version`` (a round number)."""
        return np.flatnonzero(self.version > version)
