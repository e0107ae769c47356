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


FEATURES = ("bias", "abs_bias", "row_norm", "count", "popularity")


def row_features(ids: np.ndarray, rows: np.ndarray, bias_update: np.ndarray,
                 counts: np.ndarray, named: np.ndarray | None = None) -> np.ndarray:
    """What a server can read off each row of a reply, one column per :data:`FEATURES`:
    the bias update, its size, the row's norm, its count, and how many devices named the
    item last round (log scale; zeros without it)."""
    pop = (np.log1p(np.asarray(named, dtype=np.float64)[ids]) if named is not None
           else np.zeros(len(ids)))
    bias_update = np.asarray(bias_update, dtype=np.float64)
    return np.column_stack([bias_update, np.abs(bias_update),
                            np.linalg.norm(np.asarray(rows, dtype=np.float64), axis=1),
                            np.asarray(counts, dtype=np.float64), pop])


def decoy_auc(replies: list[tuple[np.ndarray, np.ndarray]], seed: int = 0) -> dict[str, float]:
    """How well a curious server tells real rows from decoys, given replies as
    ``(features, is_decoy)`` (features from :func:`row_features`).

    Two attackers: each feature alone, used in its better direction (AUC folded to ≥ 0.5),
    averaged over replies; and a logistic regression on all features (standardised, plus
    their squares) trained on half the replies — the server can simulate devices, so it
    may learn what decoys look like — and scored on the other half. ``best`` is the
    highest of them: 0.5 means decoys cannot be told apart.
    """
    out: dict[str, float] = {}
    usable = [(x, d) for x, d in replies if d.any() and (~d).any()]
    if not usable:
        return {"best": float("nan"), "replies": 0.0}
    for j, name in enumerate(FEATURES):
        values = [auc(x[:, j], ~d) for x, d in usable]
        a = float(np.nanmean(values))
        out[name] = max(a, 1.0 - a) if np.isfinite(a) else float("nan")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(usable))
    train = [usable[i] for i in order[: len(order) // 2]]
    test = [usable[i] for i in order[len(order) // 2:]]
    if train and test:
        x_tr = np.concatenate([x for x, _ in train])
        y_tr = np.concatenate([~d for _, d in train]).astype(np.float64)
        w = _fit_logistic(x_tr, y_tr)
        scores = [_design(x, w[1]) @ w[0] for x, _ in test]
        out["learned"] = float(np.nanmean([auc(s, ~d) for s, (_, d) in zip(scores, test,
                                                                              strict=True)]))
    out["best"] = float(np.nanmax(list(out.values())))
    out["replies"] = float(len(usable))
    return out


def _design(x: np.ndarray, scale: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    z = (x - scale[0]) / scale[1]
    return np.column_stack([np.ones(len(z)), z, z * z])


def _fit_logistic(x: np.ndarray, y: np.ndarray, steps: int = 300, lr: float = 0.5
                  ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Logistic regression by full-batch gradient descent (balanced classes)."""
    scale = (x.mean(axis=0), x.std(axis=0) + 1e-12)
    d = _design(x, scale)
    sample_w = np.where(y > 0, 0.5 / max(y.sum(), 1), 0.5 / max((1 - y).sum(), 1))
    w = np.zeros(d.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(d @ w)))
        w -= lr * (d.T @ (sample_w * (p - y)))
    return w, scale
