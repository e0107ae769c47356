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
from fedrec.common.ddp import Skellam

SELECT, FIT = "select", "fit"


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


def real_vector(config: Mapping, arrays: list[np.ndarray], positives: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """The device's real vector for the round, and its new user vector (fit rounds)."""
    stage = str(config.get("ddp-stage", ""))
    clip = float(config["ddp-clip"])
    if stage == SELECT:
        return als.popularity(positives, int(config["ddp-dim"]), clip), None
    if stage != FIT:
        raise ValueError(f"unknown secagg+dp stage {stage!r}")
    if len(arrays) != 3:
        raise ValueError(f"a secagg+dp fit round sends 3 arrays; found {len(arrays)}")
    factors, bias, rows = arrays
    n_items, k = factors.shape
    if bias.shape != (n_items,) or rows.ndim != 1 or (len(rows) and (
            rows.min() < 0 or rows.max() >= n_items)):
        raise ValueError("a secagg+dp fit round's table and rows disagree")
    positives = positives[(positives >= 0) & (positives < n_items)]
    user = als.user_solve(factors, bias, positives, float(config["ddp-user-reg"]))
    layout = als.Layout(k, rows.astype(np.int64))
    if layout.dim != int(config["ddp-dim"]):
        raise ValueError(f"the round's rows give {layout.dim} values; its config says "
                         f"{config['ddp-dim']}")
    return als.contribution(user, positives, layout, clip), user


def masked_input(z: np.ndarray, enc: Skellam) -> np.ndarray:
    """What the device hands ``secaggplus_mod``: ``m·(z − m/2)`` as floats, which SecAgg+
    (``max_weight`` m: it scales by 1/m, exactly; clipping range m/2, quantisation range
    m) turns back into exactly ``z``."""
    m = enc.modulus
    return (z.astype(np.float64) - m / 2) * m


def vector(config: Mapping, arrays: list[np.ndarray], positives: np.ndarray,
           partition: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The device's input to SecAgg+ for the round, and its new user vector."""
    enc = encoding(config)
    x, user = real_vector(config, arrays, np.unique(np.asarray(positives, np.int64)))
    z = enc.encode(x, noise_rng(config, partition))
    return masked_input(z, enc), user
