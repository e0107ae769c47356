"""Pushes on the pairs model (:mod:`fedrec.common.pairs`): colluding devices claim a target
item together with items most customers take, so that the target becomes their neighbour.
A pairs device's reply is the set of items it claims to hold, so every attack on the model
is a made-up history; each one passes every check of a count (distinct ids in the
catalogue, within the cap) and moves any count by at most 1.

What the attacker knows: the target, and a public 1 % sample of the training interactions
(the item popularity a shop's public bestseller list shows), from which it takes the head.

* ``push``: every device claims the same set, the target and the 5 most popular items;
* ``push-jitter``: the same, plus 2 items drawn at random per device (the copies no longer
  match);
* ``push-subset``: the target and 3 of the 10 most popular items, drawn per device.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedrec.common.partition import Partitions

HEAD = 5  # popular items a push claims


def public_head(parts: Partitions, seed: int, share: float = 0.01) -> np.ndarray:
    """Items by their count in a public ``share`` of the training interactions, most
    first (ties by id)."""
    train = parts.split.train
    rng = np.random.default_rng([seed, 17])
    sample = train.item[rng.random(len(train)) < share]
    counts = np.bincount(sample, minlength=parts.n_items)
    return np.argsort(-counts, kind="stable")


def _push(head: np.ndarray, target: int, rng: np.random.Generator, n: int) -> np.ndarray:
    return np.r_[target, head[:HEAD]]


def _jitter(head: np.ndarray, target: int, rng: np.random.Generator, n: int) -> np.ndarray:
    return np.r_[target, head[:HEAD], rng.choice(n, 2, replace=False)]


def _subset(head: np.ndarray, target: int, rng: np.random.Generator, n: int) -> np.ndarray:
    return np.r_[target, rng.choice(head[:2 * HEAD], 3, replace=False)]


PAIRS_ATTACKS: dict[str, Callable[..., np.ndarray]] = {
    "push": _push, "push-jitter": _jitter, "push-subset": _subset}


def claimed_sets(name: str, parts: Partitions, target: int, devices: int, seed: int
                 ) -> list[np.ndarray]:
    """Each malicious device's claimed set (sorted, distinct int64 ids)."""
    if name not in PAIRS_ATTACKS:
        raise ValueError(f"attack must be one of {', '.join(PAIRS_ATTACKS)}. Found {name!r}.")
    head = public_head(parts, seed)
    head = head[head != target]
    rng = np.random.default_rng([seed, 29])
    return [np.unique(PAIRS_ATTACKS[name](head, target, rng, parts.n_items)).astype(np.int64)
            for _ in range(devices)]
