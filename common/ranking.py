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

Before the bonus, a device can blend in how like its own items each item is
(:func:`with_similarity`): the model's scores standardised, plus ``similarity`` times the
standardised product of the item's factor row with the sum of the unit-length rows of the
items the user has events on (an item-to-item score from the same table, so it needs
nothing more from the server and works in every mode a device holds the table in). Users
with few events gain most: their own vector rests on few events, their items' rows on
many users'. It is the model's own form, an item's row times a vector, so a row an
attacker pushes gains from it no more than from the model's scores; a cosine, blind to the
row's length, let a pushed tail item (a short row) into 5 % of top 10s where the model's
scores kept it out (README, Poisoning). The default (:data:`DEFAULT_SIMILARITY`) and the
bonus that goes with it were chosen together on validation (below).
"""

from __future__ import annotations

import math

import numpy as np

from fedrec.common.segments import TAIL_SHARE

HEAD_SHARE = 1.0 - TAIL_SHARE  # the head: the most popular 20 % of the catalogue
MAX_BONUS = 10.0  # in standard deviations of a user's scores: past it, the tail is all
HEAD_KEY = "head"  # the table array that carries the head (a bitmap, pack_head)
MAX_SIMILARITY = 10.0  # the similarity's weight, against the model's standardised scores
# The runs' defaults (RunSettings.similarity, .tail_bonus), chosen on ML-100K
# implicit-80-20's validation split, seeds 0, 1 and 2 (the federated preset's final table
# and user vectors, re-ranked; 2026-12-07). First the similarity, without a bonus: of 0,
# 0.05, 0.075, 0.1, 0.15, 0.2, the one that serves light users best among those whose
# NDCG@10 is within 1 % of the best: NDCG@10 0.2649, 0.2659, 0.2650, 0.2643, 0.2592,
# 0.2546; light users 0.2374, 0.2404, 0.2407, 0.2415, 0.2370, 0.2327; tail share 1.9 %,
# 2.6, 2.9, 3.3, 4.1, 5.1 %. Then the bonus at similarity 0.1: of 0.1, 0.15, 0.2, 0.25,
# 0.3, the largest whose NDCG@10 is within 1 % of 0's: 0.2643 (0), 0.2635, 0.2632, 0.2624,
# 0.2613, 0.2599; tail share 3.3 % (0), 4.7, 5.7, 6.9, 8.2, 9.7 %. The bonus alone (before
# the similarity, seed 0, `fedrec bench tune --grid tail-bonus=...`): 0.3 by the same rule,
# NDCG@10 0.2683 (0), 0.2677, 0.2672, 0.2665, 0.2664, 0.2645, 0.2615 at 0.1-0.5; tail
# share 1.8 %, 2.7, 3.2, 3.9, 6.0, 8.5, 12.3 %. Cosines (both sides unit length) did a
# little better on validation (light users 0.2434 at 0.1, NDCG@10 0.2663) and the same on
# test, but let a pushed tail item into 5.4 % of top 10s (push-jitter, 10 % of devices,
# against 0.5 % without the similarity); dot products with the history's rows, 0.2408.
DEFAULT_SIMILARITY = 0.1
DEFAULT_BONUS = 0.2


def _check_weight(value: object, name: str, bound: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer |
                                                  np.floating):
        raise ValueError(f"{name} must be a number. Found {value!r}.")
    if not (math.isfinite(value) and 0.0 <= value <= bound):
        raise ValueError(f"{name} must be a number in [0, {bound:g}]. Found {value!r}.")
    return float(value)


def check_bonus(value: object, name: str = "tail-bonus") -> float:
    """``value`` as a tail bonus, or a ValueError naming ``name``: a number in
    [0, MAX_BONUS] (0: the model's own order)."""
    return _check_weight(value, name, MAX_BONUS)


def check_similarity(value: object, name: str = "similarity") -> float:
    """``value`` as the similarity's weight, or a ValueError naming ``name``: a number in
    [0, MAX_SIMILARITY] (0: the model's scores alone)."""
    return _check_weight(value, name, MAX_SIMILARITY)


def unit_rows(factors: np.ndarray) -> np.ndarray:
    """The factor rows scaled to unit length (float64; a row of zeros stays zeros)."""
    rows = np.asarray(factors, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)


def history_sums(factors: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
    """One row per history: the sum of its items' rows of ``factors``, each scaled to unit
    length (a row of zeros adds nothing; ids past the table's end, listed after it was
    sent, are left out). Only the histories' rows are read."""
    n = len(factors)
    kept = [np.asarray(h, dtype=np.int64) for h in histories]
    kept = [h[(h >= 0) & (h < n)] for h in kept]
    lengths = np.array([len(h) for h in kept], dtype=np.int64)
    out = np.zeros((len(kept), np.shape(factors)[1]))
    if lengths.sum():
        ids = np.concatenate(kept)
        starts = np.r_[0, np.cumsum(lengths)[:-1]]
        nonempty = lengths > 0
        out[nonempty] = np.add.reduceat(unit_rows(factors[ids]), starts[nonempty], axis=0)
    return out


def with_similarity(scores: np.ndarray, factors: np.ndarray,
                    histories: np.ndarray | list[np.ndarray], weight: float) -> np.ndarray:
    """``scores`` (one user's, with ``histories`` its item ids; or one row per user, with a
    list of id arrays) standardised per user, plus ``weight`` times the standardised
    likeness of each item to the user's items: its row of ``factors`` times the sum of
    their rows scaled to unit length. A user with no items gets its standardised scores.
    Unchanged with weight 0. A new array."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    if not weight:
        return scores
    one = scores.ndim == 1
    rows = scores[None, :] if one else scores
    sums = history_sums(factors, [histories] if one else list(histories))
    table = np.asarray(factors)[:rows.shape[1]]  # (in the table's own precision)
    similar = (table @ sums.T.astype(table.dtype)).T.astype(np.float64)
    if similar.shape[1] < rows.shape[1]:  # (scores past the table's rows: no likeness)
        similar = np.pad(similar, ((0, 0), (0, rows.shape[1] - similar.shape[1])))
    rows = _standardised(rows) + weight * _standardised(similar)
    return rows[0] if one else rows


def ranked(scores: np.ndarray, factors: np.ndarray | None = None,
           histories: np.ndarray | list[np.ndarray] | None = None, similarity: float = 0.0,
           head: np.ndarray | None = None, bonus: float = 0.0) -> np.ndarray:
    """What a user ranks by: :func:`with_similarity` (when ``similarity`` and the
    ``factors`` and ``histories`` are given), then :func:`with_tail_bonus`. A new array."""
    if similarity and factors is not None and histories is not None:
        scores = with_similarity(scores, factors, histories, similarity)
    return with_tail_bonus(scores, head, bonus)


def _standardised(rows: np.ndarray) -> np.ndarray:
    """Each row minus its mean, over its standard deviation, over its finite entries
    (excluded items, -inf, stay so; a row whose entries are all alike is only centred)."""
    rows = np.array(rows, dtype=np.float64, copy=True)
    finite = np.isfinite(rows)
    n = np.maximum(finite.sum(axis=1, keepdims=True), 1)
    mean = np.where(finite, rows, 0.0).sum(axis=1, keepdims=True) / n
    var = (np.where(finite, rows - mean, 0.0) ** 2).sum(axis=1, keepdims=True) / n
    std = np.sqrt(var)
    std[std == 0] = 1.0
    rows -= mean
    rows /= std
    return rows


def with_tail_bonus(scores: np.ndarray, head: np.ndarray | None, bonus: float
                    ) -> np.ndarray:
    """``scores`` (one user's, or one row per user) standardised per user over their
    finite entries, plus ``bonus`` on every item outside ``head`` (a mask; items past its
    end, listed after it was drawn up, are tail). Unchanged with no bonus or no head;
    excluded items (-inf) stay excluded. A new array."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    if not bonus or head is None or not head.any():
        return scores
    # (a user whose scores are all alike: only the bonus orders them)
    rows = _standardised(scores if scores.ndim == 2 else scores[None, :])
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
