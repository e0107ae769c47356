"""What every attack shares: what the attacker knows, the request it answers, and how a
crafted movement becomes a reply the server's checks accept.

The knowledge model is stated per attack (:attr:`Attack.knows`) in terms of
:class:`Knowledge`: the public run config (the catalogue size, the norm bound, the loss),
the table every device is sent each round, a public sample of the shop's interactions
(``public``: 1 % of the training events by default, as in FedRecAttack), and its own
devices' crafted histories. No attack sees honest devices' data, their user vectors or
their replies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedrec.client.device import Device, UserState
from fedrec.common.partition import Partitions
from fedrec.common.schema import ItemUpdate, TrainConfig


@dataclass(frozen=True)
class Knowledge:
    """What an attacker may use (see the module docstring)."""

    n_items: int
    target: int
    explicit: bool
    rating_range: tuple[float, float]
    public_users: np.ndarray  # (m,) user ids of the public interactions
    public_items: np.ndarray  # (m,) their items
    max_norm: float  # the server's published per-row bound
    history: int = 20  # items in each fake device's crafted history

    @property
    def popularity(self) -> np.ndarray:
        """Public events per item."""
        return np.bincount(self.public_items, minlength=self.n_items)

    def popular(self, share: float = 0.05) -> np.ndarray:
        """The most popular items by public events (at least 10), most popular first."""
        n = max(10, int(share * self.n_items))
        order = np.argsort(-self.popularity, kind="stable")
        return order[order != self.target][:n]


def knowledge_of(parts: Partitions, target: int, max_norm: float, explicit: bool,
                 public_share: float = 0.01, seed: int = 0) -> Knowledge:
    """The attacker's knowledge of a split: a random ``public_share`` of its training
    events, the target, and the public config."""
    train = parts.split.train
    rng = np.random.default_rng([seed, 41])
    n_public = max(1, round(public_share * len(train.item)))
    pick = np.sort(rng.choice(len(train.item), n_public, replace=False))
    return Knowledge(parts.n_items, int(target), explicit, parts.rating_range,
                     train.user[pick].astype(np.int64), train.item[pick].astype(np.int64),
                     float(max_norm))


@dataclass(frozen=True)
class Request:
    """One train message, decoded: the table the device is sent and the round's config."""

    factors: np.ndarray
    bias: np.ndarray
    mean: float
    config: TrainConfig
    server_round: int


def movement_update(ids: np.ndarray, rows: np.ndarray, bias: np.ndarray, norm: float,
                    counts: float = 1.0) -> ItemUpdate:
    """The reply that moves rows ``ids`` by the directions ``(rows, bias)`` (each scaled to
    L2 norm ``norm``, factors and bias together): an update is ``before − after``, so the
    reply carries the negated movement. Ids sorted and unique, as the server checks."""
    ids = np.asarray(ids, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    ids, rows, bias = ids[order], np.asarray(rows, np.float64)[order], \
        np.asarray(bias, np.float64)[order]
    length = np.sqrt((rows * rows).sum(axis=1) + bias * bias)
    scale = np.where(length > 0, norm / np.maximum(length, 1e-12), 0.0) * (1 - 1e-5)
    return ItemUpdate(ids, (-rows * scale[:, None]).astype(np.float32),
                      (-bias * scale).astype(np.float32),
                      np.full(len(ids), counts, dtype=np.float32))


def merge(camouflage: ItemUpdate, crafted: ItemUpdate) -> ItemUpdate:
    """``camouflage`` (the device's honest-looking rows) with ``crafted``'s rows in place of
    any it also names."""
    keep = ~np.isin(camouflage.ids, crafted.ids)
    ids = np.concatenate([camouflage.ids[keep], crafted.ids])
    order = np.argsort(ids, kind="stable")
    return ItemUpdate(ids[order],
                      np.concatenate([camouflage.rows[keep], crafted.rows])[order],
                      np.concatenate([camouflage.bias[keep], crafted.bias])[order],
                      np.concatenate([camouflage.counts[keep], crafted.counts])[order])


class Attack:
    """A malicious device's behaviour; one instance serves all of an attack's devices
    (``device``: 0, 1, … among them). Subclasses set :attr:`name`, :attr:`knows` and
    :attr:`targeted`, and override :meth:`history` and/or :meth:`craft`."""

    name = "attack"
    knows = ""
    targeted = True

    def __init__(self, knowledge: Knowledge, seed: int = 0) -> None:
        self.k = knowledge
        self.seed = seed
        self.users: dict[int, UserState | None] = {}  # each device's own user vector

    def rng(self, device: int, server_round: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, 97, device, server_round])

    def history(self, device: int) -> tuple[np.ndarray, np.ndarray]:
        """The device's crafted history (items, values): by default random items and the
        target, rated at the top of the scale (what a fake user would record)."""
        rng = np.random.default_rng([self.seed, 13, device])
        others = rng.choice(self.k.n_items, self.k.history, replace=False)
        return self._rated(np.union1d(others[others != self.k.target], [self.k.target]))

    def _rated(self, items: np.ndarray, high: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        items = np.unique(np.asarray(items, dtype=np.int64))
        if not self.k.explicit:
            return items, np.ones(len(items), np.float32)
        low, top = self.k.rating_range
        rng = np.random.default_rng([self.seed, 17, len(items)])
        values = rng.integers(int(low), int(top) + 1, len(items)).astype(np.float32)
        values[np.isin(items, [self.k.target] if high is None else high)] = top
        return items, values

    def honest(self, request: Request, device: int) -> tuple[ItemUpdate, dict[str, float]]:
        """The device's honest training on its crafted history, with fedrec's own device
        code (its camouflage, and all a fake user does)."""
        items, values = self.history(device)
        d = Device(items, values, seed=self.seed * 7919 + device * 31 + request.server_round,
                   state=self.users.get(device))
        low, high = self.k.rating_range
        update, metrics = d.train(request.factors, request.bias, request.mean,
                                  request.config, rating_range=(low, high))
        self.users[device] = d.user
        return update, metrics

    def craft(self, request: Request, device: int) -> tuple[ItemUpdate, dict[str, float]]:
        """The reply's update and training metrics (default: honest training)."""
        return self.honest(request, device)
