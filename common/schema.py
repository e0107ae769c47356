"""What crosses the wire between a device and the server, without Flower.

* :class:`TrainConfig`: the hyper-parameters the server sends with a train message.
* :class:`ItemUpdate`: a device's sparse item-side update: the ids of the rows it touched,
  a pseudo-gradient per row (the row's value before local training minus after), the same
  for the item biases, and how many of the device's examples touched each row.
* :func:`validate_update`: every check a reply must pass before it may touch the model.

:mod:`fedrec.common.records` maps these to and from Flower records; nothing else does.
A reply never carries raw events, ratings, timestamps or the user vector: the fields below
are all there is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from fedrec.common.losses import NamesLoss, check_negative_weight, loss_named
from fedrec.common.mf import OPTIMIZERS

UPDATE_KEYS = ("ids", "rows", "bias", "counts")


@dataclass(frozen=True)
class TrainConfig(NamesLoss):
    """Local training of one device for one round."""

    # The defaults of local training, here only: RunSettings takes its own from these.
    loss: str = "mse"
    optimizer: str = "sgd"
    local_epochs: int = 2
    lr: float = 0.05
    reg: float = 0.01
    reg_bias: float = 0.0
    batch_size: int = 32
    negatives: int = 8
    init_std: float = 0.1
    user_steps: int = 0  # full-batch steps on the user vector alone before local epochs
    user_lr: float = 0.5  # their step size (on the mean gradient over the device's examples)
    # Implicit feedback: negatives come from the round's public pool of about this share of
    # the catalogue (fedrec.common.negatives; the round config names the pool); 1: the whole
    # catalogue.
    negative_pool: float = 1.0
    # Implicit feedback: each sampled negative's loss weighs this against a positive's 1
    # (fedrec.common.losses.negative_weights): many negatives at a small weight spread the
    # same push over more of the catalogue.
    negative_weight: float = 1.0
    # Early stopping (fedrec.server.stopping): the latest events each device holds out of
    # training, the validation slice the server's stopping rule is scored on; 0: none.
    validation_events: int = 0

    def __post_init__(self) -> None:
        loss_named(self.loss, on_devices=True)  # (refused by name: not one devices train)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}. "
                             f"Found {self.optimizer!r}.")
        for name in ("local_epochs", "batch_size", "negatives"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1. Found {getattr(self, name)}.")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0. Found {self.lr}.")
        if self.validation_events < 0:
            raise ValueError(f"validation_events must be >= 0. Found "
                             f"{self.validation_events}.")
        if self.user_steps < 0 or not self.user_lr > 0:
            raise ValueError("user_steps must be >= 0 and user_lr > 0.")
        if self.reg < 0 or self.reg_bias < 0 or self.init_std < 0:
            raise ValueError("reg, reg_bias and init_std must be >= 0.")
        pool = self.negative_pool
        if isinstance(pool, bool) or not isinstance(pool, int | float) or not 0 < pool <= 1:
            raise ValueError(f"negative_pool must be a number in (0, 1]. Found {pool!r}.")
        if self.negative_pool < 1 and self.explicit:
            raise ValueError("negative_pool applies to implicit feedback (a rating model "
                             "samples no negatives)")
        check_negative_weight(self.negative_weight)
        if self.negative_weight != 1 and self.explicit:
            raise ValueError("negative_weight applies to implicit feedback (a rating model "
                             "samples no negatives)")

    def to_dict(self) -> dict[str, int | float | str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Build from a config mapping; unknown keys are refused by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown train config keys: {', '.join(unknown)}")
        return cls(**values)


@dataclass(frozen=True)
class ItemUpdate:
    """A device's sparse item-side update (see the module docstring)."""

    ids: np.ndarray  # (m,) int64, strictly increasing
    rows: np.ndarray  # (m, k) float32
    bias: np.ndarray  # (m,) float32
    counts: np.ndarray  # (m,) float32, examples that touched each row

    def arrays(self) -> dict[str, np.ndarray]:
        return {key: getattr(self, key) for key in UPDATE_KEYS}

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays().values())


class InvalidReplyError(ValueError):
    """A reply (its update or any other field) failed validation; ``reason`` is a short
    machine-readable tag naming the check (and the field, where there is one)."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}")


InvalidUpdateError = InvalidReplyError  # the update's checks raise the same error


EXPECTED_DTYPES = {"ids": np.int64, "rows": np.float32, "bias": np.float32,
                   "counts": np.float32}


def validate_update(arrays: dict[str, np.ndarray], n_items: int, n_factors: int,
                    max_norm: float) -> ItemUpdate:
    """Check a decoded reply and build the :class:`ItemUpdate`, or raise
    :class:`InvalidUpdateError` naming what is wrong.

    Checks: exactly the expected keys; dtypes; shapes consistent with ``n_factors``; every
    value finite; ids strictly increasing (sorted, unique) and in ``[0, n_items)``; counts
    positive; each row's L2 norm (factors and bias together) at most ``max_norm``.
    """
    keys = set(arrays)
    if keys != set(UPDATE_KEYS):
        raise InvalidUpdateError("keys", f"expected {sorted(UPDATE_KEYS)}, found {sorted(keys)}")
    for key, dtype in EXPECTED_DTYPES.items():
        if arrays[key].dtype != dtype:
            raise InvalidUpdateError(
                "dtype", f"{key!r} must be {np.dtype(dtype).name}, found {arrays[key].dtype}")
    ids, rows, bias, counts = (arrays[k] for k in UPDATE_KEYS)
    m = ids.shape[0] if ids.ndim == 1 else -1
    if ids.ndim != 1 or rows.shape != (m, n_factors) or bias.shape != (m,) \
            or counts.shape != (m,):
        raise InvalidUpdateError(
            "shape", f"ids {ids.shape}, rows {rows.shape}, bias {bias.shape}, counts "
            f"{counts.shape}; expected (m,), (m, {n_factors}), (m,), (m,)")
    for key in ("rows", "bias", "counts"):
        if not np.isfinite(arrays[key]).all():
            raise InvalidUpdateError("nonfinite", f"{key!r} holds NaN or infinity")
    if m and (ids[0] < 0 or ids[-1] >= n_items or ids.min() < 0 or ids.max() >= n_items):
        raise InvalidUpdateError("id-range", f"ids must be in [0, {n_items}), found "
                                 f"[{ids.min()}, {ids.max()}]")
    if m > 1 and not (ids[1:] > ids[:-1]).all():
        if len(np.unique(ids)) != m:
            raise InvalidUpdateError("id-duplicate", "ids must be unique")
        raise InvalidUpdateError("id-order", "ids must be sorted in increasing order")
    if m and counts.min() <= 0:
        raise InvalidUpdateError("counts", "counts must be > 0")
    if m:
        # float32 squares: a norm that overflows is infinite, over any bound (also refused).
        norms = np.einsum("ij,ij->i", rows, rows) + bias * bias
        worst = float(np.sqrt(norms.max()))
        if not worst <= max_norm:
            raise InvalidUpdateError("norm", f"a row's norm is {worst:.3g}, "
                                     f"bound is {max_norm:.3g}")
    return ItemUpdate(ids, rows, bias, counts)
