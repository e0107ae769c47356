"""What each privacy layer does on a device in the sparse modes (the ``fedrec`` runner of
:mod:`fedrec.common.privacy`): the arguments it adds to local training, what it does to the
train reply, and what it does to the evaluation reply. A mode's layers apply in the order
it lists them (``decoy+dp``: the update is padded, then clipped and noised).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from fedrec.common.privacy import Mode
from fedrec.common.privacy.gaussian import clip_and_noise
from fedrec.common.round_config import RoundConfig
from fedrec.common.schema import ItemUpdate

Reply = tuple[ItemUpdate, dict[str, float]]


def _decoy_train(rc: RoundConfig, named: np.ndarray | None) -> dict:
    return {"reply_rows": int(rc.need("decoy_rows")), "named": named}


def _decoy_reply(update: ItemUpdate, metrics: dict[str, float], rc: RoundConfig,
                 rng: np.random.Generator) -> Reply:
    # The reply's size must not tell the device's activity.
    return update, {**metrics, "num-examples": 1.0}


def _dp_reply(update: ItemUpdate, metrics: dict[str, float], rc: RoundConfig,
              rng: np.random.Generator) -> Reply:
    # The whole update clipped and noised on the device.
    return clip_and_noise(update, float(rc.need("dp_clip")), float(rc.need("dp_noise")),
                          rng), metrics


def _decoy_evaluation(metrics: dict[str, float]) -> dict[str, float]:
    # Held-out counts and error sums would tell the device's activity: a rating reply
    # carries the device's mean errors, counted as one example.
    n = metrics.get("num-examples", 0.0)
    if "sq-err" not in metrics or not n:
        return metrics
    return {**metrics, "sq-err": metrics["sq-err"] / n, "abs-err": metrics["abs-err"] / n,
            "num-examples": 1.0}


class DeviceLayer(NamedTuple):
    """A layer's three points on a device (None: it changes nothing there)."""

    train: Callable | None  # (round config, named rows) → Device.train's extra arguments
    reply: Callable | None  # (update, metrics, round config, rng) → the train reply
    evaluation: Callable | None  # (metrics) → the evaluation reply


LAYERS: dict[str, DeviceLayer] = {
    "decoy": DeviceLayer(_decoy_train, _decoy_reply, _decoy_evaluation),
    "dp": DeviceLayer(None, _dp_reply, None),
}


def _layers(mode: Mode) -> list[DeviceLayer]:
    unknown = [name for name in mode.layers if name not in LAYERS]
    if unknown:
        raise ValueError(f"privacy={mode.name}: no device layer {', '.join(unknown)}")
    return [LAYERS[name] for name in mode.layers]


def train_arguments(mode: Mode, rc: RoundConfig, named: np.ndarray | None) -> dict:
    """The keyword arguments the mode's layers add to
    :meth:`~fedrec.client.device.Device.train`."""
    out: dict = {}
    for layer in _layers(mode):
        if layer.train is not None:
            out.update(layer.train(rc, named))
    return out


def finish(mode: Mode, update: ItemUpdate, metrics: dict[str, float], rc: RoundConfig,
           rng: np.random.Generator) -> Reply:
    """The reply once every layer of the mode had its say."""
    for layer in _layers(mode):
        if layer.reply is not None:
            update, metrics = layer.reply(update, metrics, rc, rng)
    return update, metrics


def evaluation(mode: Mode, metrics: dict[str, float]) -> dict[str, float]:
    """The evaluation reply once every layer of the mode had its say."""
    for layer in _layers(mode):
        if layer.evaluation is not None:
            metrics = layer.evaluation(metrics)
    return metrics
