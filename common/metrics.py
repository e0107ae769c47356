"""Quality metrics: rating error and full-ranking top-K, vectorised.

Ranking follows the protocol definitions used for the public anchors: candidates are all
items except the user's training items; ties in score go to the lower item index;
Recall@K = hits/|test|, Precision@K = hits/K, HR@K = 1 if any hit, NDCG@K = DCG/IDCG with
binary relevance and IDCG over min(|test|, K) positions; averaged over users with at least
one test item. Coverage@K is the share of the catalogue in at least one user's top-K.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedrec.common.data.interactions import Interactions
from fedrec.common.segments import Segments, tail_figures, user_figures, with_k

ScoreFn = Callable[[np.ndarray], np.ndarray]


def rmse(pred: np.ndarray, truth: np.ndarray) -> float:
    """Root mean squared error."""
    _same_length(pred, truth)
    return float(np.sqrt(np.mean((np.asarray(pred, np.float64) - truth) ** 2)))


def mae(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean absolute error."""
    _same_length(pred, truth)
    return float(np.mean(np.abs(np.asarray(pred, np.float64) - truth)))


# The groups an event is also summed in (fedrec.common.segments): its user's segment
# (light or heavy; the middle third is not summed apart) and whether its item is in the tail.
GROUPS = ("light", "heavy", "tail")
PREQUENTIAL_KEYS = ("n", "sq-err", "abs-err", "hits", "ndcg", "new-n", "new-hits",
                    "new-ndcg", "new-sq-err",
                    *(f"{g}-{key}" for g in GROUPS for key in ("n", "sq-err", "hits", "ndcg")),
                    "recs", "tail-recs")


def prequential_sums() -> dict[str, float]:
    """Empty pooled sums of prequential scores (see :func:`add_rating_score`)."""
    return dict.fromkeys(PREQUENTIAL_KEYS, 0.0)


def _groups(user: str | None, tail: bool) -> tuple[str, ...]:
    return ((user,) if user else ()) + (("tail",) if tail else ())


def add_rating_score(sums: dict[str, float], err: float, new: bool, user: str | None = None,
                     tail: bool = False) -> None:
    """Add one rating's error (of the prediction clipped to the scale); ``new`` marks an
    event on a recently listed item, also summed apart; so are events of a ``light`` or
    ``heavy`` ``user`` and on a ``tail`` item."""
    sums["n"] += 1
    sums["sq-err"] += err * err
    sums["abs-err"] += abs(err)
    if new:
        sums["new-n"] += 1
        sums["new-sq-err"] += err * err
    for g in _groups(user, tail):
        sums[f"{g}-n"] += 1
        sums[f"{g}-sq-err"] += err * err


def add_rank_score(sums: dict[str, float], rank: int, new: bool, k: int = 10,
                   user: str | None = None, tail: bool = False) -> None:
    """Add one held-out item ranked at 0-based ``rank`` (HR@k and NDCG@k); ``new``,
    ``user`` and ``tail`` as in :func:`add_rating_score`."""
    hit, gain = hit_and_gain(rank, k)
    sums["n"] += 1
    sums["hits"] += hit
    sums["ndcg"] += gain
    if new:
        sums["new-n"] += 1
        sums["new-hits"] += hit
        sums["new-ndcg"] += gain
    for g in _groups(user, tail):
        sums[f"{g}-n"] += 1
        sums[f"{g}-hits"] += hit
        sums[f"{g}-ndcg"] += gain


def rank_among(scores: np.ndarray, item: int, excluded: np.ndarray) -> int:
    """0-based rank of ``item`` among the items not ``excluded`` (a boolean mask), for
    prequential ranking; ``scores`` is overwritten. Ties count half, as a random tie-break
    would on average: a model that scores every item alike ranks an item in the middle."""
    target = scores[item]
    scores[excluded] = -np.inf
    above = int((scores > target).sum())
    ties = int((scores == target).sum()) - 1
    return above + ties // 2


def add_top_share(sums: dict[str, float], ranked: np.ndarray, tail: np.ndarray,
                  k: int = 10) -> None:
    """Add the top ``k`` places of one ranking to the recommendations counted (``recs``)
    and those of them on ``tail`` items (``tail-recs``): the tail's share of what was
    recommended. ``ranked`` holds the scores :func:`rank_among` left; a place at -inf
    (an excluded item) is not a recommendation, as in a device's batch evaluation."""
    top = top_k(ranked[None, :], k)[0]
    placed = np.isfinite(ranked[top])
    sums["recs"] += int(placed.sum())
    sums["tail-recs"] += int((tail[top] & placed).sum())


def hit_and_gain(rank: int, k: int = 10) -> tuple[bool, float]:
    """HR@k and NDCG@k of one held-out item at 0-based ``rank``."""
    if rank >= k:
        return False, 0.0
    return True, float(1.0 / np.log2(rank + 2))


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of each row's ``k`` highest scores, best first; ties go to the lower index.

    Linear in the number of items per row (a partition, not a full sort).
    """
    n_rows, n_items = scores.shape
    k = min(k, n_items)
    if k == 0:
        return np.empty((n_rows, 0), dtype=np.int64)
    kth = np.partition(scores, n_items - k, axis=1)[:, n_items - k]
    above = scores > kth[:, None]
    need = k - above.sum(axis=1)  # how many tied-at-kth items to take, lowest index first
    ties = scores == kth[:, None]
    take_tie = ties & (np.cumsum(ties, axis=1) <= need[:, None])
    _, cols = np.nonzero(above | take_tie)
    cols = cols.reshape(n_rows, k)  # ascending item index within each row
    picked = np.take_along_axis(scores, cols, axis=1)
    order = np.argsort(-picked, axis=1, kind="stable")
    return np.take_along_axis(cols, order, axis=1)


def ranking_metrics(score_fn: ScoreFn, train: Interactions, test: Interactions, k: int = 10,
                    batch_users: int | None = None, segments: Segments | None = None
                    ) -> dict[str, float]:
    """HR@K, NDCG@K, Recall@K, Precision@K and coverage over all non-training items.

    ``score_fn(users)`` returns a (len(users), n_items) score matrix. Users are scored in
    batches sized to keep each matrix near 8M entries. With ``segments``
    (:mod:`fedrec.common.segments`), also light and heavy users' HR and NDCG and the
    tail's share of recommended places and recall.
    """
    n_items = test.n_items
    tr_order, tr_off = train.by_user()
    te_order, te_off = test.by_user()
    test_counts = np.diff(te_off)
    users = np.flatnonzero(test_counts > 0)
    if batch_users is None:
        batch_users = max(1, 8_000_000 // max(n_items, 1))
    hits_at = np.zeros((len(users), k), dtype=bool)
    tail = segments.tail_mask(n_items) if segments is not None else None
    tail_recs = recs = tail_hits = 0
    recommended = np.zeros(n_items, dtype=bool)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    for start in range(0, len(users), batch_users):
        batch = users[start:start + batch_users]
        scores = np.array(score_fn(batch), dtype=np.float64, copy=True)
        rows_tr = _rows_of(batch, tr_off)
        scores[rows_tr[0], train.item[tr_order[rows_tr[1]]]] = -np.inf
        top = top_k(scores, k)
        placed = np.isfinite(np.take_along_axis(scores, top, axis=1))
        recommended[top[placed]] = True
        is_test = np.zeros_like(scores, dtype=bool)
        rows_te = _rows_of(batch, te_off)
        is_test[rows_te[0], test.item[te_order[rows_te[1]]]] = True
        # (a catalogue smaller than k fills fewer places: the rest are no hits)
        hit = np.take_along_axis(is_test, top, axis=1)
        hits_at[start:start + len(batch), :top.shape[1]] = hit
        if tail is not None:
            recs += int(placed.sum())
            tail_recs += int((tail[top] & placed).sum())
            tail_hits += int((tail[top] & hit).sum())
    n_test = test_counts[users]
    hits = hits_at.sum(axis=1)
    dcg = (hits_at * discounts[: hits_at.shape[1]]).sum(axis=1)
    ideal = np.cumsum(discounts)[np.minimum(n_test, k) - 1]
    if not len(users):
        return {f"hr@{k}": 0.0, f"ndcg@{k}": 0.0, f"recall@{k}": 0.0, f"precision@{k}": 0.0,
                f"coverage@{k}": 0.0, "users": 0}
    out = {
        f"hr@{k}": float(np.mean(hits > 0)),
        f"ndcg@{k}": float(np.mean(dcg / ideal)),
        f"recall@{k}": float(np.mean(hits / n_test)),
        f"precision@{k}": float(np.mean(hits / k)),
        f"coverage@{k}": float(recommended.mean()) if n_items else 0.0,
        "users": len(users),
    }
    if segments is not None:
        user_counts = np.diff(tr_off)[users]
        figures = user_figures(hits, dcg / ideal, segments.segment(user_counts))
        pairs = np.unique(test.user.astype(np.int64) * n_items + test.item)  # (distinct)
        figures.update(tail_figures(tail_recs, recs, tail_hits,
                                    float(tail[pairs % n_items].sum())))
        out.update(with_k(figures, k))
    return out


def _rows_of(batch: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For a batch of users, (position in batch, position in the user-grouped order) of every
    row they own."""
    starts, ends = offsets[batch], offsets[batch + 1]
    counts = ends - starts
    local = np.repeat(np.arange(len(batch)), counts)
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return local, np.repeat(starts, counts) + within


def _same_length(a: np.ndarray, b: np.ndarray) -> None:
    if len(a) != len(b):
        raise ValueError(f"predictions and truth differ in length: {len(a)} vs {len(b)}")
    if not len(a):
        raise ValueError("cannot compute an error over zero ratings")
