"""The federated models a run can train, each one named thing: what feedback it learns
from, which privacy modes it runs in, and its name in results.

``mf`` is biased matrix factorisation (the default; every mode). ``pairs`` is item-to-item
collaborative filtering from counts (:mod:`fedrec.common.pairs`): for small shops, where
factors do not beat popularity; implicit feedback, plain mode. Its one choice (popularity's
weight) is always made on the devices' held-out events, so ``stop-patience`` (which a
``csv:`` shop's preset sets for matrix factorisation) has no rounds to stop there.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedrec.common.defences import DEFAULT, OFF, defence_names


@dataclass(frozen=True)
class ModelKind:
    """One federated model."""

    name: str
    implicit_only: bool  # learns from implicit feedback only (no ratings protocol)
    modes: tuple[str, ...] | None  # the privacy modes it runs in (None: every mode)
    summary: str
    label: str  # how reports name it ("federated MF", "centralized MF")

    @property
    def federated(self) -> str:
        """The model's name in a simulation's record (``federated-mf``)."""
        return f"federated-{self.name}"

    @property
    def centralized(self) -> str:
        """The same model trained centrally (``centralized-mf``)."""
        return f"centralized-{self.name}"


MF = ModelKind("mf", False, None, "biased matrix factorisation: item rows and biases on the "
               "server, each user's vector on the device", "MF")
PAIRS = ModelKind("pairs", True, ("plain",), "item-to-item counts: how many devices hold "
                  "each pair of items; a device scores by cosine similarity to its items "
                  "plus weighted popularity", "pairs")
DEFAULT_MODEL = MF.name
MODELS: dict[str, ModelKind] = {m.name: m for m in (MF, PAIRS)}
# The pairs model's ``defences`` values: the run's default (which for pairs means its own
# defence, ``copies``: fedrec.server.defences.copies), ``copies``, or none.
PAIRS_DEFENCES = (DEFAULT, "copies", OFF, "")


def model_kind(name: str) -> ModelKind:
    """The model named ``name``; ValueError listing the models otherwise."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}. Found {name!r}.")
    return MODELS[name]


def check_settings(settings: object) -> None:
    """The run's model agrees with its other settings; ValueError naming the key."""
    kind = model_kind(settings.model)  # type: ignore[attr-defined]
    if kind is MF:
        defence_names(settings.defences)  # type: ignore[attr-defined]
    if kind.implicit_only and settings.explicit:  # type: ignore[attr-defined]
        raise ValueError(f"model={kind.name} learns from implicit feedback; protocol="
                         f"{settings.protocol} is ratings")  # type: ignore[attr-defined]
    privacy = settings.privacy  # type: ignore[attr-defined]
    if kind.modes is not None and privacy not in kind.modes:
        raise ValueError(f"model={kind.name} runs in privacy={', '.join(kind.modes)}; "
                         f"found privacy={privacy}")
    if kind is PAIRS:
        for key in ("catalogue", "checkpoint"):
            if getattr(settings, key):
                raise ValueError(f"model=pairs does not take {key}= yet (a fixed catalogue, "
                                 "no checkpoint)")
        if settings.defences not in PAIRS_DEFENCES:  # type: ignore[attr-defined]
            raise ValueError(f"model=pairs: defences must be one of "
                             f"{', '.join(map(repr, PAIRS_DEFENCES))} (the default turns "
                             f"on its own, copies). Found {settings.defences!r}.")
        if not settings.num_rounds:  # type: ignore[attr-defined]
            raise ValueError("model=pairs needs a number of rounds (num-rounds=0 runs until "
                             "stopped)")
        if not 1 <= settings.pairs_cap <= 100_000:  # type: ignore[attr-defined]
            raise ValueError(f"pairs_cap must be in [1, 100000]. Found "
                             f"{settings.pairs_cap}.")  # type: ignore[attr-defined]
