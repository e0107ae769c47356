"""Biased matrix factorisation trained by gradient descent, centrally.

Three optimisers, as in the brief:

* ``gd``: full-batch gradient descent, one step per epoch over every training example;
* ``sgd``: mini-batch stochastic gradient descent over shuffled examples;
* ``online``: one step per event, in the order the events are given.

``partial_fit`` continues training on new rows without starting over (growing the tables for
new users and items); ``learn_one`` is its one-event form.

Each step sums the per-example gradients of :mod:`fedrec.common.losses` per row and moves
the rows with a step rule of :mod:`fedrec.common.optim`. Losses: ``mse`` on explicit ratings,
``bce`` on positives plus sampled negatives, ``bpr`` on (positive, negative) pairs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fedrec.common.atomic import atomic_open
from fedrec.common.losses import (
    LOSSES,
    NamesLoss,
    Regularization,
    bce_grads,
    bpr_grads,
    mse_grads,
)
from fedrec.common.negatives import NegativeSampler, check_alpha
from fedrec.common.optim import STEP_RULES, StepRule, make_step_rule, sum_rows_counted
from fedrec.common.params import ItemParams, UserParams, known_ids

OPTIMIZERS = ("gd", "sgd", "online")


class NonFiniteError(FloatingPointError):
    """Training produced NaN or infinite parameters (lower the learning rate)."""


@dataclass(frozen=True)
class MFConfig(NamesLoss):
    """Hyper-parameters of :class:`MatrixFactorization`, stored as passed."""

    n_factors: int = 64
    loss: str = "mse"
    optimizer: str = "sgd"
    step_rule: str = "sgd"
    lr: float = 0.01
    reg: float = 0.05
    reg_bias: float = 0.01
    epochs: int = 20
    batch_size: int = 256
    negatives: int = 4
    negative_alpha: float = 0.0
    init_std: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        _choice("loss", self.loss, LOSSES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("step_rule", self.step_rule, STEP_RULES)
        for name in ("n_factors", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1. Found {getattr(self, name)}.")
        if self.negatives < 1 and not self.explicit:
            raise ValueError(f"negatives must be >= 1 for loss {self.loss!r}. "
                             f"Found {self.negatives}.")
        check_alpha(self.negative_alpha, "negative_alpha")
        Regularization(self.reg, self.reg_bias)

    @property
    def regularization(self) -> Regularization:
        return Regularization(self.reg, self.reg_bias)

    def to_dict(self) -> dict:
        return asdict(self)


class MatrixFactorization:
    """Biased MF over dense user and item indices.

    ``fit`` trains from scratch; ``partial_fit`` takes one pass over new rows with the
    configured optimiser and ``learn_one`` one online step on one event; both grow the tables
    for unseen users or items and leave the rows that no event touched bit-identical.
    After fitting, ``users`` holds every user's private
    half and ``items`` the global half of the model.
    """

    def __init__(self, config: MFConfig | None = None) -> None:
        self.config = config or MFConfig()
        self.users: UserParams | None = None
        self.items: ItemParams | None = None
        self.rating_range: tuple[float, float] = (-np.inf, np.inf)
        self._rules: dict[str, StepRule] = {}
        self._rng = np.random.default_rng(self.config.seed)
        self._sampler: NegativeSampler | None = None
        self._running_mean: list | None = None

    # ---- training ---------------------------------------------------------------------
    def fit(self, user: np.ndarray, item: np.ndarray, value: np.ndarray | None = None,
            n_users: int | None = None, n_items: int | None = None,
            on_epoch: Callable[[int, float], None] | None = None) -> MatrixFactorization:
        """Train on (user, item[, value]) rows from a fresh initialisation.

        ``value`` holds ratings for ``mse`` and is ignored by the implicit losses, which treat
        every row as a positive. ``on_epoch(epoch, mean_loss)`` is called after each epoch;
        the mean training loss per epoch is also kept in ``history``.
        """
        cfg = self.config
        user, item, value = self._check_rows(user, item, value)
        n_users = int(n_users if n_users is not None else (user.max() + 1 if len(user) else 0))
        n_items = int(n_items if n_items is not None else (item.max() + 1 if len(item) else 0))
        known_ids("user", user, n_users)
        known_ids("item", item, n_items)
        self._init(n_users, n_items, value)
        if not cfg.explicit:
            self._sampler = NegativeSampler(user, item, n_items, alpha=cfg.negative_alpha)
        self.history: list[float] = []
        for epoch in range(cfg.epochs):
            self.history.append(self._epoch(user, item, value))
            if on_epoch is not None:
                on_epoch(epoch, self.history[-1])
        return self

    def partial_fit(self, user: np.ndarray, item: np.ndarray, value: np.ndarray | None = None,
                    n_users: int | None = None, n_items: int | None = None) -> float:
        """One pass of the configured optimiser over new rows, continuing from the current
        model. Returns the mean data loss.

        After ``fit`` the global mean μ stays as fitted; a model that starts from
        ``partial_fit`` keeps μ as the running mean of the ratings it has seen.
        """
        user, item, value = self._check_rows(user, item, value)
        n_users = max(int(n_users or 0), int(user.max()) + 1 if len(user) else 0)
        n_items = max(int(n_items or 0), int(item.max()) + 1 if len(item) else 0)
        if self.users is None:
            self._init(n_users, n_items, value)
            self._running_mean = [0, 0.0]  # ratings seen, their sum
        else:
            self._grow(n_users, n_items)
        if self.config.explicit and len(value):
            low, high = self.rating_range
            self.rating_range = (min(low, float(value.min())), max(high, float(value.max())))
            if self._running_mean is not None:
                self._running_mean[0] += len(value)
                self._running_mean[1] += float(value.sum())
                self.items.mean = self._running_mean[1] / self._running_mean[0]
        if not self.config.explicit:
            if self._sampler is None:
                self._sampler = NegativeSampler(user, item, self.items.n_items,
                                                alpha=self.config.negative_alpha)
            else:
                self._sampler.extend(user, item, self.items.n_items)
        return self._epoch(user, item, value)

    def learn_one(self, user: int, item: int, value: float = 1.0) -> float:
        """One online step on one event (a rating, or an implicit positive)."""
        return self.partial_fit(np.array([user]), np.array([item]),
                                np.array([value], dtype=np.float32))

    def _check_rows(self, user: np.ndarray, item: np.ndarray, value: np.ndarray | None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        user = np.asarray(user, dtype=np.int32)
        item = np.asarray(item, dtype=np.int32)
        if len(user) != len(item) or (value is not None and len(value) != len(user)):
            raise ValueError("user, item and value must have the same length")
        if len(user) and (user.min() < 0 or item.min() < 0):
            raise ValueError("user and item indices must be >= 0")
        if self.config.explicit:
            if value is None:
                raise ValueError("loss 'mse' needs rating values")
            value = np.asarray(value, dtype=np.float32)
            if not np.all(np.isfinite(value)):
                raise ValueError("rating values must be finite")
        return user, item, value

    def _grow(self, n_users: int, n_items: int) -> None:
        """Append fresh rows for new users and items; existing rows are not touched."""
        cfg = self.config
        if n_users > self.users.n_users:
            extra = UserParams.init(n_users - self.users.n_users, cfg.n_factors, self._rng,
                                    cfg.init_std)
            self.users = UserParams(np.concatenate([self.users.factors, extra.factors]),
                                    np.concatenate([self.users.bias, extra.bias]))
            self._rules["user_factors"].grow(n_users)
            self._rules["user_bias"].grow(n_users)
        if n_items > self.items.n_items:
            extra = ItemParams.init(n_items - self.items.n_items, cfg.n_factors, self._rng,
                                    cfg.init_std)
            self.items = ItemParams(np.concatenate([self.items.factors, extra.factors]),
                                    np.concatenate([self.items.bias, extra.bias]),
                                    self.items.mean)
            self._rules["item_factors"].grow(n_items)
            self._rules["item_bias"].grow(n_items)

    def _init(self, n_users: int, n_items: int, value: np.ndarray | None) -> None:
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        explicit = cfg.explicit and value is not None and len(value)
        mean = float(value.mean()) if explicit else 0.0
        self._running_mean = None
        self.users = UserParams.init(n_users, cfg.n_factors, rng, cfg.init_std)
        self.items = ItemParams.init(n_items, cfg.n_factors, rng, cfg.init_std, mean=mean)
        self.rating_range = (-np.inf, np.inf)
        if explicit:
            self.rating_range = (float(value.min()), float(value.max()))
        self._rng = np.random.default_rng(cfg.seed + 1)
        self._rules = self._fresh_rules()

    def _fresh_rules(self) -> dict[str, StepRule]:
        cfg = self.config
        return {
            "user_factors": make_step_rule(cfg.step_rule, cfg.lr, self.users.factors.shape),
            "user_bias": make_step_rule(cfg.step_rule, cfg.lr, self.users.bias.shape),
            "item_factors": make_step_rule(cfg.step_rule, cfg.lr, self.items.factors.shape),
            "item_bias": make_step_rule(cfg.step_rule, cfg.lr, self.items.bias.shape),
        }

    def _epoch(self, user: np.ndarray, item: np.ndarray, value: np.ndarray | None) -> float:
        """One pass over the training rows; returns the mean data loss per row."""
        cfg = self.config
        n = len(user)
        loss = 0.0
        if cfg.optimizer == "gd":
            loss = self._step(user, item, value)
        elif cfg.optimizer == "sgd":
            order = self._rng.permutation(n)
            for start in range(0, n, cfg.batch_size):
                rows = order[start:start + cfg.batch_size]
                loss += self._step(user[rows], item[rows], None if value is None else value[rows])
        else:
            for row in range(n):
                loss += self._step(user[row:row + 1], item[row:row + 1],
                                   None if value is None else value[row:row + 1])
        finite = np.isfinite(self.items.factors).all() and np.isfinite(self.users.factors).all()
        if not finite:
            raise NonFiniteError(f"training diverged (non-finite parameters); "
                                 f"lower lr={cfg.lr}")
        return loss / max(n, 1)

    def _step(self, user: np.ndarray, item: np.ndarray, value: np.ndarray | None) -> float:
        """One gradient step on a batch of positive rows (negatives added for implicit)."""
        cfg = self.config
        U, It, reg = self.users, self.items, cfg.regularization
        if cfg.explicit:
            g = mse_grads(It.mean, U.factors[user], U.bias[user], It.factors[item],
                          It.bias[item], value, reg)
            u_rows, i_rows = user, item
            du, dub, di, dib = g.user_factors, g.user_bias, g.item_factors, g.item_bias
        elif not cfg.loss_kind.pairwise:
            users_neg = np.repeat(user, cfg.negatives)
            neg, ok = self._sampler.sample(users_neg, self._rng)
            u_rows = np.concatenate([user, users_neg[ok]])
            i_rows = np.concatenate([item, neg[ok]])
            label = np.zeros(len(u_rows), dtype=np.float32)
            label[: len(user)] = 1.0
            g = bce_grads(U.factors[u_rows], It.factors[i_rows], It.bias[i_rows], label, reg)
            du, dub, di, dib = g.user_factors, None, g.item_factors, g.item_bias
        else:
            users_neg = np.repeat(user, cfg.negatives)
            pos = np.repeat(item, cfg.negatives)
            neg, ok = self._sampler.sample(users_neg, self._rng)
            users_neg, pos, neg = users_neg[ok], pos[ok], neg[ok]
            g = bpr_grads(U.factors[users_neg], It.factors[pos], It.bias[pos], It.factors[neg],
                          It.bias[neg], reg)
            u_rows, i_rows = users_neg, np.concatenate([pos, neg])
            du, dub = g.user_factors, None
            di = np.concatenate([g.pos_factors, g.neg_factors])
            dib = np.concatenate([g.pos_bias, g.neg_bias])
        rows, grad, counts = sum_rows_counted(u_rows, du)
        self._rules["user_factors"].step(U.factors, rows, grad, counts)
        if dub is not None:
            rows, grad, counts = sum_rows_counted(u_rows, dub)
            self._rules["user_bias"].step(U.bias, rows, grad, counts)
        rows, grad, counts = sum_rows_counted(i_rows, di)
        self._rules["item_factors"].step(It.factors, rows, grad, counts)
        rows, grad, counts = sum_rows_counted(i_rows, dib)
        self._rules["item_bias"].step(It.bias, rows, grad, counts)
        return float(g.loss.sum())

    # ---- prediction -------------------------------------------------------------------
    def predict(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        """Predicted ratings (``mse``), clipped to the training rating range, or scores."""
        self._check_fitted()
        user, item = np.asarray(user), np.asarray(item)
        U, It = self.users, self.items
        known_ids("user", user, U.n_users)
        known_ids("item", item, It.n_items)
        dot = np.einsum("ij,ij->i", U.factors[user], It.factors[item])
        if not self.config.explicit:
            return It.bias[item] + dot
        pred = It.mean + U.bias[user] + It.bias[item] + dot
        return np.clip(pred, *self.rating_range)

    def score_items(self, users: np.ndarray) -> np.ndarray:
        """Scores of every item for each of ``users``: shape (len(users), n_items).

        Ranking needs only the item-dependent part, ``b_i + p_u·q_i``.
        """
        self._check_fitted()
        known_ids("user", users, self.users.n_users)
        return self.users.factors[users] @ self.items.factors.T + self.items.bias[None, :]

    # ---- persistence ------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the fitted tables and the config to ``path`` (``.npz``) through a temp file
        and a rename: a crash leaves the old file or the new one, never half of one."""
        self._check_fitted()
        U, It = self.users, self.items
        with atomic_open(path, "wb") as out:
            np.savez(out, user_factors=U.factors, user_bias=U.bias,
                     item_factors=It.factors, item_bias=It.bias,
                     mean=np.array(It.mean, np.float64),
                     rating_range=np.array(self.rating_range, np.float64),
                     config=np.array(json.dumps(self.config.to_dict())))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> MatrixFactorization:
        """A model saved by :meth:`save`, every array checked (shapes, dtypes, finite);
        ValueError naming the file and the field otherwise. It predicts as the saved one
        did; further ``partial_fit`` starts fresh step-rule state."""
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (OSError, ValueError, EOFError) as exc:
            raise ValueError(f"{path}: not a saved model ({exc})") from None
        want = ("user_factors", "user_bias", "item_factors", "item_bias", "mean",
                "rating_range", "config")
        missing = [k for k in want if k not in arrays]
        if missing:
            raise ValueError(f"{path}: field {missing[0]!r} is missing")
        try:
            config = MFConfig(**json.loads(str(arrays["config"])))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: field 'config': {exc}") from None
        k = config.n_factors
        shapes = {"user_factors": (None, k), "item_factors": (None, k), "user_bias": (None,),
                  "item_bias": (None,), "mean": (), "rating_range": (2,)}
        for name, shape in shapes.items():
            a = arrays[name]
            if a.dtype.kind != "f" or a.ndim != len(shape) or any(
                    want_n is not None and got != want_n
                    for got, want_n in zip(a.shape, shape, strict=True)):
                raise ValueError(f"{path}: field {name!r} must be float {shape}; found "
                                 f"{a.dtype} {a.shape}")
            if name != "rating_range" and not np.isfinite(a).all():
                raise ValueError(f"{path}: field {name!r} holds non-finite values")
        for rows, bias in (("user_factors", "user_bias"), ("item_factors", "item_bias")):
            if len(arrays[rows]) != len(arrays[bias]):
                raise ValueError(f"{path}: fields {rows!r} and {bias!r} differ in rows")
        model = cls(config)
        model.users = UserParams(arrays["user_factors"].astype(np.float32),
                                 arrays["user_bias"].astype(np.float32))
        model.items = ItemParams(arrays["item_factors"].astype(np.float32),
                                 arrays["item_bias"].astype(np.float32),
                                 float(arrays["mean"]))
        low, high = (float(v) for v in arrays["rating_range"])
        if not low <= high:  # (NaN fails too; ±inf is an implicit model's open range)
            raise ValueError(f"{path}: field 'rating_range' must be low <= high; found "
                             f"{low}, {high}")
        model.rating_range = (low, high)
        model._rng = np.random.default_rng(config.seed + 1)
        model._rules = model._fresh_rules()
        model._running_mean = None
        return model

    def _check_fitted(self) -> None:
        if self.users is None or self.items is None:
            raise RuntimeError("the model is not fitted yet; call fit() first")


def _choice(name: str, value: str, allowed: Iterable[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}. Found {value!r}.")
