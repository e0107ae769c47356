"""Differential privacy on a device's update: clip the whole update, add Gaussian noise.

The update (every row and every item bias it sends, taken together as one vector) is scaled
down to an L2 norm of at most ``clip``, then each sent value gets independent Gaussian noise
of standard deviation ``noise_multiplier · clip``. Counts become 1 per row, so the weights a
server uses carry nothing of the data. This protects the update's values; which rows a
device sends (its ids) is protected by the ``decoy`` and ``secagg`` modes, not by this one.
The server accounts the privacy loss of the whole run (:mod:`fedrec.server.accountant`).
"""

from __future__ import annotations

import numpy as np

from fedrec.common.schema import ItemUpdate


def update_norm(update: ItemUpdate) -> float:
    """L2 norm of the whole update (rows and biases together)."""
    rows = update.rows.astype(np.float64)
    bias = update.bias.astype(np.float64)
    return float(np.sqrt(np.einsum("ij,ij->", rows, rows) + bias @ bias))


def clip_and_noise(update: ItemUpdate, clip: float, noise_multiplier: float,
                   rng: np.random.Generator) -> ItemUpdate:
    """The update clipped to ``clip`` and noised with ``N(0, (noise_multiplier·clip)²)``."""
    if not clip > 0 or noise_multiplier < 0:
        raise ValueError(f"clip must be > 0 and noise_multiplier >= 0. Found {clip}, "
                         f"{noise_multiplier}.")
    norm = update_norm(update)
    scale = min(1.0, clip / norm) if norm > 0 else 1.0
    std = noise_multiplier * clip
    rows = update.rows.astype(np.float64) * scale
    bias = update.bias.astype(np.float64) * scale
    if std > 0:
        rows += rng.normal(0.0, std, size=rows.shape)
        bias += rng.normal(0.0, std, size=bias.shape)
    return ItemUpdate(update.ids, rows.astype(np.float32), bias.astype(np.float32),
                      np.ones(len(update.ids), dtype=np.float32))
