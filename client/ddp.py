"""A device's side of the ``secagg+dp`` mode: the real vector it contributes to a round
(:mod:`fedrec.common.als`), encoded with its share of Skellam noise
(:mod:`fedrec.common.ddp`), in the form Flower's ``secaggplus_mod`` masks unchanged.

The noise is drawn from the operating system's entropy on a real device: a server that
knows the run's seed must not be able to subtract it. Simulations draw it from the run's
seed so that the same seed gives the same model (the README says so).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

import numpy as np

from fedrec.common import als
from fedrec.common.ddp import FIT, SELECT, Skellam
from fedrec.common.sketch import Sketch


def encoding(config: Mapping) -> Skellam:
    """The round's encoding, from the round's config (every value checked by
    :class:`~fedrec.common.ddp.Skellam`)."""
    try:
        return Skellam(int(config["ddp-dim"]), float(config["ddp-clip"]),
                       float(config["ddp-scale"]), int(config["ddp-bits"]),
                       float(config["ddp-mu"]))
    except KeyError as exc:
        raise ValueError(f"a secagg+dp round's config has no {exc.args[0]!r}") from None


def noise_rng(config: Mapping, partition: int | None) -> np.random.Generator:
    """The noise's random stream: the OS's entropy unless this is a simulated device
    (``partition``), whose stream the run's seed fixes."""
    if partition is None:
        return np.random.default_rng(secrets.randbits(128))
    return np.random.default_rng([int(config.get("seed", 0)), partition,
                                  int(config.get("server-round", 0)), 17])


def real_vector(config: Mapping, arrays: list[np.ndarray], items: np.ndarray,
                values: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, float] | None]:
    """The device's real vector for the round, and its new user vector and bias (fit
    rounds). ``items`` are its positives, or for a rating model (``ddp-ratings``) its rated
    items with their ``values``."""
    stage = str(config.get("ddp-stage", ""))
    clip = float(config["ddp-clip"])
    dim = int(config["ddp-dim"])
    ratings = bool(int(config.get("ddp-ratings", 0)))
    scale = (float(config["rating-min"]), float(config["rating-max"])) if ratings else None
    if stage == SELECT:
        if not ratings:
            return _popularity(config, items, dim, clip), None
        # μ's two values, then (when the row set is chosen) the rated items' popularity,
        # each at half the norm.
        mean = als.mean_part(values, scale, clip / np.sqrt(2))
        if dim == 2:
            return mean * np.sqrt(2), None
        return np.concatenate([mean, _popularity(config, items, dim - 2, clip / np.sqrt(2))]
                              ), None
    if stage != FIT:
        raise ValueError(f"unknown secagg+dp stage {stage!r}")
    if len(arrays) != 3:
        raise ValueError(f"a secagg+dp fit round sends 3 arrays; found {len(arrays)}")
    factors, bias, rows = arrays
    n_items, k = factors.shape
    if bias.shape != (n_items,) or rows.ndim != 1 or (len(rows) and (
            rows.min() < 0 or rows.max() >= n_items)):
        raise ValueError("a secagg+dp fit round's table and rows disagree")
    keep = (items >= 0) & (items < n_items)
    items, values = items[keep], values[keep]
    reg = float(config["ddp-user-reg"])
    if ratings:
        mean = float(config["mean"])
        user, user_bias = als.rating_user_solve(factors, bias, mean, items, values, reg)
        layout: als.Layout | als.RatingLayout = als.RatingLayout(k, rows.astype(np.int64))
        x = (als.rating_contribution(user, user_bias, mean, items, values, layout, clip)
             if len(items) else np.zeros(layout.dim))
    else:
        items = np.unique(items)
        user, user_bias = als.user_solve(factors, bias, items, reg), 0.0
        layout = als.Layout(k, rows.astype(np.int64))
        x = als.contribution(user, items, layout, clip)
    if layout.dim != dim:
        raise ValueError(f"the round's rows give {layout.dim} values; its config says {dim}")
    return x, (user, user_bias)


def _popularity(config: Mapping, items: np.ndarray, dim: int, clip: float) -> np.ndarray:
    """The row choice's vector: one value per item, or its count sketch
    (:mod:`fedrec.common.sketch`) when the round names one."""
    sketched = int(config.get("ddp-sketch-items", 0))
    if not sketched:
        return als.popularity(items, dim, clip)
    sketch = Sketch(sketched, int(config["ddp-sketch-width"]), int(config.get("seed", 0)))
    if sketch.dim != dim:
        raise ValueError(f"the round's sketch has {sketch.dim} values; its config says {dim}")
    positives = np.unique(np.asarray(items, np.int64))
    values = np.full(len(positives), clip / np.sqrt(max(1, len(positives))))
    return sketch.encode(positives, values, clip)


def masked_input(z: np.ndarray, enc: Skellam) -> np.ndarray:
    """What the device hands ``secaggplus_mod``: ``m·(z − m/2)`` as floats, which SecAgg+
    (``max_weight`` m: it scales by 1/m, exactly; clipping range m/2, quantisation range
    m) turns back into exactly ``z``."""
    m = enc.modulus
    return (z.astype(np.float64) - m / 2) * m


def vector(config: Mapping, arrays: list[np.ndarray], items: np.ndarray, values: np.ndarray,
           partition: int | None) -> tuple[np.ndarray, tuple[np.ndarray, float] | None]:
    """The device's input to SecAgg+ for the round, and its new user vector and bias."""
    enc = encoding(config)
    x, user = real_vector(config, arrays, np.asarray(items, np.int64),
                          np.asarray(values, np.float64))
    z = enc.encode(x, noise_rng(config, partition))
    return masked_input(z, enc), user
