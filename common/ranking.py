"""How scores become a ranking: the model's order, or that order with a bonus for the tail.

Matrix factorisation trained on skewed data puts the same few popular items in everyone's
top 10: on ML-100K implicit-80-20 the least popular 80 % of the catalogue (the *tail*,
:mod:`fedrec.common.segments`) got 2 % of the places. The tail bonus re-ranks one user's
scores: standardised over the catalogue (so that one bonus means the same for every user
and every model), plus ``bonus`` for each item outside the *head*, the most popular
``HEAD_SHARE`` of the catalogue. The default (:data:`DEFAULT_BONUS`, 0.3) is the largest
bonus tried on ML-100K implicit-80-20's validation split whose NDCG@10 stays within 1 % of
the model's own order; there it takes the tail's share of the top 10 from 1.8 % to 6.0 %
(README, "Latest figures", Imbalance).

The head comes from counts, never from a user's own events. In a federated run the server
counts, per item, the devices whose update raised its bias
(:class:`fedrec.server.layers.HeadLayer`: the devices it is a positive of), and sends the
head with the table as a bitmap (:func:`pack_head`); a device checks what it is sent
(:func:`unpack_head`). A centralized model takes the head of its training counts. A bonus
of 0 is the model's own order.
"""

from __future__ import annotations

import math

import numpy as np

from fedrec.common.segments import TAIL_SHARE

HEAD_SHARE = 1.0 - TAIL_SHARE  # the head: the most popular 20 % of the catalogue
MAX_BONUS = 10.0  # in standard deviations of a user's scores: past it, the tail is all
HEAD_KEY = "head"  # the table array that carries the head (a bitmap, pack_head)
# The runs' default (RunSettings.tail_bonus): of 0.1, 0.15, 0.2, 0.3, 0.4, 0.5 on ML-100K
# implicit-80-20's validation split (`fedrec bench tune --grid tail-bonus=...`, 2026-12-07),
# the largest whose NDCG@10 is within 1 % of 0's: NDCG@10 0.2683 (0), 0.2677, 0.2672,
# 0.2665, 0.2664, 0.2645, 0.2615; tail share 1.8 %, 2.7, 3.2, 3.9, 6.0, 8.5, 12.3 %.
DEFAULT_BONUS = 0.3


def check_bonus(value: object, name: str = "tail-bonus") -> float:
    """``value`` as a tail bonus, or a ValueError naming ``name``: a number in
    [0, MAX_BONUS] (0: the model's own order)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer |
                                                  np.floating):
        raise ValueError(f"{name} must be a number. Found {value!r}.")
    if not (math.isfinite(value) and 0.0 <= value <= MAX_BONUS):
        raise ValueError(f"{name} must be a number in [0, {MAX_BONUS:g}]. Found {value!r}.")
    return float(value)


def with_tail_bonus(scores: np.ndarray, head: np.ndarray | None, bonus: float
                    ) -> np.ndarray:
    """``scores`` (one user's, or one row per user) standardised per user over their
    finite entries, plus ``bonus`` on every item outside ``head`` (a mask; items past its
    end, listed after it was drawn up, are tail). Unchanged with no bonus or no head;
    excluded items (-inf) stay excluded. A new array."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    if not bonus or head is None or not head.any():
        return scores
    rows = scores if scores.ndim == 2 else scores[None, :]
    finite = np.isfinite(rows)
    n = np.maximum(finite.sum(axis=1, keepdims=True), 1)
    zeroed = np.where(finite, rows, 0.0)
    mean = zeroed.sum(axis=1, keepdims=True) / n
    var = (np.where(finite, rows - mean, 0.0) ** 2).sum(axis=1, keepdims=True) / n
    std = np.sqrt(var)
    std[std == 0] = 1.0  # (a user whose scores are all alike: only the bonus orders them)
    rows -= mean
    rows /= std
    tail = np.ones(rows.shape[1], dtype=bool)
    tail[:min(len(head), rows.shape[1])] = ~head[:rows.shape[1]]
    rows[:, tail] += bonus
    return rows if scores.ndim == 2 else rows[0]


def pack_head(head: np.ndarray) -> np.ndarray:
    """The head mask as the table array devices are sent: one bit per item (little bit
    order), uint8."""
    return np.packbits(np.asarray(head, dtype=bool), bitorder="little")


def unpack_head(bits: np.ndarray, n_items: int) -> np.ndarray:
    """The head mask of a ``n_items`` table from what the server sent (it may be
    anything): ValueError naming the array when it is not a bitmap of at most that table
    (a shorter one was drawn up before items were listed: those are tail)."""
    bits = np.asarray(bits)
    if bits.dtype != np.uint8 or bits.ndim != 1 or len(bits) > (n_items + 7) // 8:
        raise ValueError(f"table array {HEAD_KEY!r} must be a uint8 bitmap of at most the "
                         f"{n_items} items ({(n_items + 7) // 8} bytes). Found {bits.dtype} "
                         f"{bits.shape}.")
    head = np.zeros(max(n_items, 8 * len(bits)), dtype=bool)
    head[:8 * len(bits)] = np.unpackbits(bits, bitorder="little").astype(bool)
    if head[n_items:].any():
        raise ValueError(f"table array {HEAD_KEY!r} names an item beyond the table's "
                         f"{n_items}")
    return head[:n_items]
