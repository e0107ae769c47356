"""Default hyper-parameters of the centralized model, per kind of protocol.

Tuned once on ML-100K (fold 0 of ``explicit-5fold``; ``implicit-80-20``); the figures in the
README are measured with exactly these.
"""

from __future__ import annotations

from dataclasses import replace

from fedrec.common.mf import MFConfig
from fedrec.common.split import is_explicit

EXPLICIT = MFConfig(loss="mse", n_factors=100, optimizer="sgd", step_rule="sgd", lr=0.01,
                    reg=0.1, reg_bias=0.01, epochs=40, batch_size=128)
IMPLICIT = MFConfig(loss="bce", n_factors=64, optimizer="sgd", step_rule="adam", lr=0.005,
                    reg=0.01, reg_bias=0.0, epochs=30, batch_size=512, negatives=16)


def mf_config(protocol: str, **overrides: object) -> MFConfig:
    """The preset for ``protocol`` with ``overrides`` (those that are not None) applied."""
    base = EXPLICIT if is_explicit(protocol) else IMPLICIT
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
