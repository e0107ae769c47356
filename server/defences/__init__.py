"""The server's defences against poisoning, each one named module that sees a round's
accepted updates before they are folded (:class:`~fedrec.server.defences.base.Defence`).
A run names its defences in the ``defences`` setting (comma-separated, in order; ``off``
for none); :data:`DEFAULT` are the ones on by default, those that cost honest quality at
most 1 % on the benches (``fedrec bench attack``).
"""

from __future__ import annotations

from collections.abc import Callable

from fedrec.common.defences import DEFAULT, NAMES, OFF, defence_names
from fedrec.server.defences.base import Defence
from fedrec.server.defences.budget import Budget
from fedrec.server.defences.clip import LearnedClip
from fedrec.server.defences.coordination import Coordination

DEFENCES: dict[str, Callable[[int], Defence]] = {
    LearnedClip.name: lambda seed: LearnedClip(),
    Budget.name: lambda seed: Budget(),
    Coordination.name: lambda seed: Coordination(seed=seed),
}

__all__ = ["DEFAULT", "DEFENCES", "NAMES", "OFF", "Defence", "build_defences", "defence_names"]


def build_defences(value: str, seed: int = 0) -> list[Defence]:
    """The defences named by ``value``, in its order."""
    return [DEFENCES[name](seed) for name in defence_names(value)]
