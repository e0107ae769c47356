"""Losses of biased matrix factorisation and their per-example gradients.

Every function is vectorised over a batch of examples: row ``e`` of each argument belongs to
example ``e``. The objective of one example is its loss plus L2 regularisation of the rows it
touches (the per-example form of stochastic MF, as in Funk SVD and Surprise):

* ``mse``: ``½ w (r̂ − r)² + ½ λ (‖p_u‖² + ‖q_i‖²) + ½ λ_b (b_u² + b_i²)``
* ``bce``: ``w (softplus(s) − y s) + ½ λ (‖p_u‖² + ‖q_i‖²) + ½ λ_b b_i²`` with ``y ∈ {0, 1}``
  (devices weigh a sampled negative's ``w`` by ``negative_weight``: :func:`negative_weights`)
* ``bpr``: ``w softplus(−(s⁺ − s⁻)) + ½ λ (‖p_u‖² + ‖q⁺‖² + ‖q⁻‖²) + ½ λ_b (b⁺² + b⁻²)``

Gradients are returned per example, not yet summed per row: the caller decides how rows that
appear several times are combined (a sum for centralized SGD, a weighted mean across devices
on a federated server). ``tests/common/test_losses.py`` checks every gradient against finite
differences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


@dataclass(frozen=True)
class Loss:
    """A loss as the code branches on it: the feedback it learns from and where it trains.

    ``explicit``: it learns ratings (its examples carry values; μ and biases are fitted
    around them) rather than implicit events (every event a positive, negatives sampled).
    ``pairwise``: each example is a (positive, negative) pair, not a labelled item.
    ``on_devices``: devices, the edge client and the timeline replay train it; a loss
    without is trained only by the centralized model (:class:`fedrec.common.mf.MFConfig`)
    and refused by name in a device's training config."""

    name: str
    explicit: bool
    pairwise: bool
    on_devices: bool
    what: str

    @property
    def feedback(self) -> str:
        return "explicit" if self.explicit else "implicit"


MSE = Loss("mse", explicit=True, pairwise=False, on_devices=True,
           what="squared error of ratings")
BCE = Loss("bce", explicit=False, pairwise=False, on_devices=True,
           what="binary cross-entropy of events against sampled negatives")
BPR = Loss("bpr", explicit=False, pairwise=True, on_devices=False,
           what="Bayesian personalised ranking of each event above a sampled negative")

# Every loss by name, in the order help texts list them.
LOSSES: dict[str, Loss] = {loss.name: loss for loss in (MSE, BCE, BPR)}


def loss_named(name: str, *, on_devices: bool = False) -> Loss:
    """The loss called ``name``; ValueError naming the choices otherwise (with
    ``on_devices``, only the losses devices train)."""
    loss = LOSSES.get(name) if isinstance(name, str) else None
    if loss is not None and (loss.on_devices or not on_devices):
        return loss  # (the common case: one lookup, on every config property read)
    choices = [n for n, known in LOSSES.items() if known.on_devices or not on_devices]
    where = "" if loss is None else " on devices (only the centralized model trains it)"
    raise ValueError(f"loss must be one of {', '.join(choices)}{where}. Found {name!r}.")


class NamesLoss:
    """A config that names its loss (``loss``, the name on the wire and in files): the
    loss as a concept, and the feedback it learns from."""

    loss: str

    @property
    def loss_kind(self) -> Loss:
        """The loss as a concept (:class:`Loss`)."""
        return loss_named(self.loss)

    @property
    def explicit(self) -> bool:
        """Whether the model learns ratings rather than implicit feedback (its loss's)."""
        return self.loss_kind.explicit


def for_feedback(explicit: bool) -> Loss:
    """The loss devices train for a kind of feedback: ratings or implicit events."""
    return MSE if explicit else BCE


@dataclass(frozen=True)
class Regularization:
    """L2 strengths: ``factors`` for p_u and q_i, ``bias`` for b_u and b_i."""

    factors: float = 0.02
    bias: float = 0.02

    def __post_init__(self) -> None:
        if self.factors < 0 or self.bias < 0:
            raise ValueError(
                f"Regularization must be >= 0. Found factors={self.factors}, bias={self.bias}."
            )


@dataclass(frozen=True)
class ExampleGrads:
    """Per-example loss and gradients with respect to the rows each example touches."""

    loss: np.ndarray  # (n,) data term only, without regularisation
    user_factors: np.ndarray  # (n, k)
    user_bias: np.ndarray  # (n,)
    item_factors: np.ndarray  # (n, k)
    item_bias: np.ndarray  # (n,)


def softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)), stable for large |x|."""
    return np.logaddexp(0.0, x)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(−x)), stable for large |x| (as ½ + ½ tanh(x/2): no overflow, one pass)."""
    out = np.multiply(x, 0.5)
    np.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


def predict_rating(
    mean: float, user_bias: np.ndarray, item_bias: np.ndarray,
    user_factors: np.ndarray, item_factors: np.ndarray,
) -> np.ndarray:
    """Explicit prediction ``μ + b_u + b_i + p_u·q_i`` for aligned rows."""
    return mean + user_bias + item_bias + np.einsum("ij,ij->i", user_factors, item_factors)


def predict_score(
    item_bias: np.ndarray, user_factors: np.ndarray, item_factors: np.ndarray
) -> np.ndarray:
    """Implicit score ``b_i + p_u·q_i`` (a logit) for aligned rows."""
    return item_bias + np.einsum("ij,ij->i", user_factors, item_factors)


def mse_grads(
    mean: float, user_factors: np.ndarray, user_bias: np.ndarray,
    item_factors: np.ndarray, item_bias: np.ndarray, rating: np.ndarray,
    reg: Regularization, weight: np.ndarray | None = None,
) -> ExampleGrads:
    """Squared error on explicit ratings."""
    err = predict_rating(mean, user_bias, item_bias, user_factors, item_factors) - rating
    w = 1.0 if weight is None else weight
    werr = w * err
    return ExampleGrads(
        loss=0.5 * w * err * err,
        user_factors=werr[:, None] * item_factors + reg.factors * user_factors,
        user_bias=werr + reg.bias * user_bias,
        item_factors=werr[:, None] * user_factors + reg.factors * item_factors,
        item_bias=werr + reg.bias * item_bias,
    )


def bce_grads(
    user_factors: np.ndarray, item_factors: np.ndarray, item_bias: np.ndarray,
    label: np.ndarray, reg: Regularization, weight: np.ndarray | None = None,
) -> ExampleGrads:
    """Binary cross-entropy on observed (label 1) and sampled negative (label 0) pairs."""
    s = predict_score(item_bias, user_factors, item_factors)
    w = 1.0 if weight is None else weight
    ds = w * (sigmoid(s) - label)
    return ExampleGrads(
        loss=w * (softplus(s) - label * s),
        user_factors=ds[:, None] * item_factors + reg.factors * user_factors,
        user_bias=np.zeros_like(ds),
        item_factors=ds[:, None] * user_factors + reg.factors * item_factors,
        item_bias=ds + reg.bias * item_bias,
    )


@dataclass(frozen=True)
class PairGrads:
    """Per-pair BPR loss and gradients for the user, the positive and the negative item."""

    loss: np.ndarray
    user_factors: np.ndarray
    pos_factors: np.ndarray
    pos_bias: np.ndarray
    neg_factors: np.ndarray
    neg_bias: np.ndarray


def bpr_grads(
    user_factors: np.ndarray, pos_factors: np.ndarray, pos_bias: np.ndarray,
    neg_factors: np.ndarray, neg_bias: np.ndarray, reg: Regularization,
    weight: np.ndarray | None = None,
) -> PairGrads:
    """Bayesian personalised ranking: the positive should score above the negative."""
    x = predict_score(pos_bias, user_factors, pos_factors) - predict_score(
        neg_bias, user_factors, neg_factors
    )
    w = 1.0 if weight is None else weight
    dx = -w * sigmoid(-x)  # d loss / d x
    return PairGrads(
        loss=w * softplus(-x),
        user_factors=dx[:, None] * (pos_factors - neg_factors) + reg.factors * user_factors,
        pos_factors=dx[:, None] * user_factors + reg.factors * pos_factors,
        pos_bias=dx + reg.bias * pos_bias,
        neg_factors=-dx[:, None] * user_factors + reg.factors * neg_factors,
        neg_bias=-dx + reg.bias * neg_bias,
    )


class OneUserGrads(NamedTuple):
    """Gradients of a batch of one user's examples: the user's summed, the items' per row.
    (A named tuple: made once per mini-batch on a device, where a dataclass costs more.)"""

    loss: float
    user_factors: np.ndarray  # (k,) summed over the batch
    user_bias: float
    item_factors: np.ndarray  # (n, k) per example
    item_bias: np.ndarray  # (n,)


def mse_grads_one_user(mean: float, p: np.ndarray, bu: float, q: np.ndarray, b: np.ndarray,
                       rating: np.ndarray, reg: Regularization, with_loss: bool = True
                       ) -> OneUserGrads:
    """:func:`mse_grads` for n examples of one user (a device's case), with the user's
    gradient already summed; fewer temporaries on the per-device hot path. Without
    ``with_loss`` the loss is not computed (reported as NaN)."""
    err = q @ p
    err += b
    err += (mean + bu)
    err -= rating
    n = len(rating)
    return OneUserGrads(
        loss=0.5 * float(err @ err) if with_loss else np.nan,
        user_factors=err @ q + (reg.factors * n) * p,
        user_bias=float(err.sum()) + reg.bias * n * bu,
        item_factors=err[:, None] * p + reg.factors * q,
        item_bias=err + reg.bias * b,
    )


def check_negative_weight(value: object) -> float:
    """``value`` as a negative weight: a finite number > 0 (not a bool, not text); refused
    by name otherwise."""
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not np.isfinite(value) or not value > 0):
        raise ValueError(f"negative_weight must be a finite number > 0. Found {value!r}.")
    return float(value)


def negative_weights(label: np.ndarray, negative_weight: float) -> np.ndarray | None:
    """Each example's weight in a BCE loss whose sampled negatives (label 0) weigh
    ``negative_weight`` against a positive's 1; None when every weight is 1."""
    if negative_weight == 1.0:
        return None
    return np.where(np.asarray(label) > 0, 1.0, float(negative_weight))


def bce_grads_one_user(p: np.ndarray, q: np.ndarray, b: np.ndarray, label: np.ndarray,
                       reg: Regularization, with_loss: bool = True,
                       negative_weight: float = 1.0) -> OneUserGrads:
    """:func:`bce_grads` for n examples of one user, the user's gradient summed, each
    sampled negative weighted ``negative_weight`` (:func:`negative_weights`). Without
    ``with_loss`` the loss is not computed (reported as NaN)."""
    s = q @ p
    s += b
    ds = sigmoid(s)
    ds -= label
    w = negative_weights(label, negative_weight)
    if w is not None:
        ds *= w
    n = len(label)
    data = softplus(s) - label * s if with_loss else None
    return OneUserGrads(
        loss=float((data if w is None else w * data).sum()) if with_loss else np.nan,
        user_factors=ds @ q + (reg.factors * n) * p,
        user_bias=0.0,
        item_factors=ds[:, None] * p + reg.factors * q,
        item_bias=ds + reg.bias * b,
    )


def mse_user_grads(mean: float, p: np.ndarray, bu: float, q: np.ndarray, b: np.ndarray,
                   rating: np.ndarray, reg: Regularization) -> tuple[np.ndarray, float]:
    """The user's half of :func:`mse_grads_one_user` alone (``p_u`` and ``b_u``, summed):
    what fitting the private vector against fixed items needs, and nothing else."""
    err = q @ p
    err += b
    err += (mean + bu)
    err -= rating
    n = len(rating)
    return err @ q + (reg.factors * n) * p, float(err.sum()) + reg.bias * n * bu


def bce_user_grads(p: np.ndarray, q: np.ndarray, b: np.ndarray, label: np.ndarray,
                   reg: Regularization, negative_weight: float = 1.0) -> np.ndarray:
    """The user's half of :func:`bce_grads_one_user` alone (``p_u``, summed)."""
    ds = q @ p
    ds += b
    ds = sigmoid(ds)
    ds -= label
    w = negative_weights(label, negative_weight)
    if w is not None:
        ds *= w
    return ds @ q + (reg.factors * len(label)) * p


def online_rating_step(p: np.ndarray, bu: float, q: np.ndarray, bi: float, err: float,
                       lr: float, reg: float, reg_bias: float, bias_lr: float | None = None
                       ) -> tuple[np.ndarray, float, np.ndarray, float]:
    """One online SGD step on one rating of ``err = r̂ − r``: the new ``(p_u, b_u, q_i, b_i)``,
    all moved from the old values (``bias_lr`` defaults to ``lr``)."""
    blr = lr if bias_lr is None else bias_lr
    return (p - lr * (err * q + reg * p), bu - blr * (err + reg_bias * bu),
            q - lr * (err * p + reg * q), bi - blr * (err + reg_bias * bi))


def online_bce_step(p: np.ndarray, q: np.ndarray, b: np.ndarray, label: np.ndarray, lr: float,
                    reg: float, reg_bias: float, bias_lr: float | None = None,
                    negative_weight: float = 1.0
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One online SGD step of one user on rows ``q, b`` (a positive and its sampled
    negatives, ``label`` 1 or 0, each negative's loss weighted ``negative_weight``): the new
    ``(p_u, q, b)``, all moved from the old values."""
    blr = lr if bias_lr is None else bias_lr
    ds = sigmoid(q @ p + b) - label
    w = negative_weights(label, negative_weight)
    if w is not None:
        ds = ds * w
    return (p - lr * (ds @ q + reg * len(label) * p), q - lr * (ds[:, None] * p + reg * q),
            b - blr * (ds + reg_bias * b))
