"""Attacks on a federated recommender, each one small module with its knowledge model
(:attr:`~fedrec.simulations.attacks.base.Attack.knows`): what ``fedrec bench attack`` runs
malicious simulated devices with."""

from __future__ import annotations

from fedrec.simulations.attacks.base import Attack, Knowledge, Request, knowledge_of
from fedrec.simulations.attacks.fake_users import FakeBandwagon, FakeRandom, FakeTarget
from fedrec.simulations.attacks.fedrecattack import FedRecAttack
from fedrec.simulations.attacks.pipattack import PipAttack
from fedrec.simulations.attacks.push import JitteredPush, NoisyPush, TargetPush
from fedrec.simulations.attacks.quantity import Quantity
from fedrec.simulations.attacks.untargeted import Untargeted

ATTACKS: dict[str, type[Attack]] = {cls.name: cls for cls in (
    TargetPush, NoisyPush, JitteredPush, FedRecAttack, PipAttack, FakeRandom, FakeBandwagon,
    FakeTarget, Quantity, Untargeted)}

__all__ = ["ATTACKS", "Attack", "Knowledge", "Request", "attack", "knowledge_of"]


def attack(name: str, knowledge: Knowledge, seed: int = 0) -> Attack:
    """The attack called ``name``; ValueError naming the ones there are."""
    if name not in ATTACKS:
        raise ValueError(f"attack must be one of {', '.join(ATTACKS)}. Found {name!r}.")
    return ATTACKS[name](knowledge, seed)
