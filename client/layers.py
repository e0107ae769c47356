"""What each privacy layer does on a device in the sparse modes (the ``fedrec`` runner of
:mod:`fedrec.common.privacy`): the arguments it adds to local training, and what it does
to the reply. A mode's layers apply in the order it lists them (``decoy+dp``: the update is
padded, then clipped and noised).
"""

from __future__ import annotations

from collections.abc import Callable

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


# layer → (its local-training arguments, its transform of the reply)
LAYERS: dict[str, tuple[Callable | None, Callable | None]] = {
    "decoy": (_decoy_train, _decoy_reply),
    "dp": (None, _dp_reply),
}


def _layers(mode: Mode) -> list[tuple[Callable | None, Callable | None]]:
    unknown = [name for name in mode.layers if name not in LAYERS]
    if unknown:
        raise ValueError(f"privacy={mode.name}: no device layer {', '.join(unknown)}")
    return [LAYERS[name] for name in mode.layers]


def train_arguments(mode: Mode, rc: RoundConfig, named: np.ndarray | None) -> dict:
    """The keyword arguments the mode's layers add to
    :meth:`~fedrec.client.device.Device.train`."""
    out: dict = {}
    for before, _ in _layers(mode):
        if before is not None:
            out.update(before(rc, named))
    return out


def finish(mode: Mode, update: ItemUpdate, metrics: dict[str, float], rc: RoundConfig,
           rng: np.random.Generator) -> Reply:
    """The reply once every layer of the mode had its say."""
    for _, after in _layers(mode):
        if after is not None:
            update, metrics = after(update, metrics, rc, rng)
    return update, metrics
