"""An honest-but-curious server that tries to tell which items a device touched.

It sees each device's reply (item ids, row and bias updates) and nothing else. Its guess
for every catalogue item: items the reply does not name score lowest; named items score by
how their bias moved (a positive's bias is pulled up by training, a sampled negative's is
pushed down, so ``-bias update`` ranks positives first). The figure is the ROC AUC of those
scores against the device's true items: 0.5 means the replies tell nothing; 1.0 means they
tell everything.
"""

from __future__ import annotations

import numpy as np


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC with ties counted half (Mann–Whitney), vectorised."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if not n_pos or not n_neg:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores))
    # Average ranks over ties (1-based).
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def membership_scores(ids: np.ndarray, bias_update: np.ndarray, n_items: int) -> np.ndarray:
    """The attacker's score per catalogue item for one reply."""
    scores = np.full(n_items, -np.inf)
    scores[ids] = -np.asarray(bias_update, dtype=np.float64)
    # Unnamed items tie at the bottom; keep them finite for the rank computation.
    floor = scores[ids].min() - 1.0 if len(ids) else 0.0
    scores[np.isneginf(scores)] = floor
    return scores


def membership_auc(replies: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                   n_items: int) -> dict[str, float]:
    """Mean AUC over replies of ``(ids, bias_update, true_items)``: over the whole catalogue
    (does a reply reveal the user's items?) and among the named rows only (can real rows be
    told from the other rows a reply carries: sampled negatives, decoys?)."""
    catalogue, named = [], []
    for ids, bias_update, truth in replies:
        labels = np.zeros(n_items, dtype=bool)
        labels[truth] = True
        scores = membership_scores(ids, bias_update, n_items)
        catalogue.append(auc(scores, labels))
        named.append(auc(scores[ids], labels[ids]))
    def mean(values: list[float]) -> float:
        values = [v for v in values if np.isfinite(v)]
        return float(np.mean(values)) if values else float("nan")

    return {"catalogue_auc": mean(catalogue), "named_rows_auc": mean(named),
            "replies": len(replies)}


def infer_ratings(rows: np.ndarray, bias_update: np.ndarray, factors: np.ndarray,
                  bias: np.ndarray, mean: float, lr: float, reg: float, reg_bias: float,
                  epochs: int, rating_range: tuple[float, float]) -> np.ndarray:
    """Ratings a curious server reads off one explicit reply (rows for the rated items).

    A device's bias update is ``epochs · lr · (err_i + λ_b b_i)`` to first order, so it
    gives each rating's error ``err_i = r̂_i − r_i``; the row updates ``epochs · lr ·
    (err_i p_u + λ q_i)`` then give the user's vector by least squares; the prediction
    ``μ + b_i + p_u·q_i`` (the user's own bias unknown, taken as 0) minus the error is the
    guess. ``factors``/``bias`` are the rows the server sent for those items.
    """
    step = epochs * lr
    err = bias_update.astype(np.float64) / step - reg_bias * bias.astype(np.float64)
    signal = rows.astype(np.float64) / step - reg * factors.astype(np.float64)
    denom = float(err @ err)
    p_u = (err @ signal) / denom if denom > 0 else np.zeros(factors.shape[1])
    pred = mean + bias + factors.astype(np.float64) @ p_u
    return np.clip(pred - err, *rating_range)
