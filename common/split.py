"""Evaluation protocols: deterministic train/test splits, identical everywhere they are used.

* ``explicit-5fold``: the rating rows in file order; ``perm = default_rng(0).permutation(n)``;
  fold f tests on ``perm[f::5]`` and trains on the rest.
* ``explicit-80-20``: the same permutation; the first 80% train, the rest test.
* ``implicit-80-20``: as above over the positives (every rating or event is a positive, one
  row per distinct user-item pair); users without a test item are skipped by the metrics.
* ``implicit-leave-last``: each user's latest positive (ties: the last in file order) is the
  test item; everything else trains.

Train and test never share a row, and for the implicit protocols never share a user-item pair.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from fedrec.common.data.interactions import Interactions

PROTOCOLS = ("explicit-5fold", "explicit-80-20", "implicit-80-20", "implicit-leave-last")
SEED = 0


@dataclass(frozen=True)
class Split:
    """One train/test pair of a protocol. ``fold`` is 0 except in k-fold protocols."""

    protocol: str
    fold: int
    train: Interactions
    test: Interactions

    @property
    def explicit(self) -> bool:
        return self.protocol.startswith("explicit")


def is_explicit(protocol: str) -> bool:
    """Whether a protocol evaluates rating error (else ranking)."""
    check_protocol(protocol)
    return protocol.startswith("explicit")


def check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"Unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}.")


def protocol_rows(data: Interactions, protocol: str) -> Interactions:
    """The rows a protocol splits: the ratings for explicit, the distinct positives for
    implicit protocols."""
    check_protocol(protocol)
    if protocol.startswith("explicit"):
        rows = data.ratings()
        if not len(rows):
            raise ValueError(f"dataset {data.name!r} has no rating events; "
                             f"protocol {protocol!r} needs explicit ratings")
        return rows
    return data.positives()


def split(data: Interactions, protocol: str) -> Iterator[Split]:
    """Yield the protocol's splits of ``data`` (5 for ``explicit-5fold``, else 1)."""
    rows = protocol_rows(data, protocol)
    n = len(rows)
    if protocol == "implicit-leave-last":
        test = leave_last_rows(rows)
        mask = np.zeros(n, dtype=bool)
        mask[test] = True
        yield Split(protocol, 0, rows.subset(~mask), rows.subset(test))
        return
    perm = np.random.default_rng(SEED).permutation(n)
    if protocol == "explicit-5fold":
        for fold in range(5):
            mask = np.zeros(n, dtype=bool)
            mask[perm[fold::5]] = True
            yield Split(protocol, fold, rows.subset(~mask), rows.subset(mask))
        return
    cut = int(0.8 * n)
    yield Split(protocol, 0, rows.subset(np.sort(perm[:cut])), rows.subset(np.sort(perm[cut:])))


def validation_split(s: Split) -> Split:
    """The same protocol applied to ``s``'s training events alone (its first fold): what
    settings are chosen on, so that no choice sees the test events."""
    return next(split(s.train, s.protocol))


def leave_last_rows(rows: Interactions) -> np.ndarray:
    """Row index of each user's latest event; ties go to the last in file order."""
    if not len(rows):
        return np.empty(0, dtype=np.int64)
    order = np.lexsort((np.arange(len(rows)), rows.timestamp, rows.user))
    last = np.r_[rows.user[order][1:] != rows.user[order][:-1], True]
    return np.sort(order[last])
