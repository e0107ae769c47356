"""First vectors for newly listed items: from their content features, or neutral.

The content-based half of the brief. An item nobody has interacted with yet has no
behaviour to learn from, but the shop knows its content (genres, categories). A ridge
regression from content features (plus an intercept) to the learned rows ``[q_i | b_i]``
of the items devices have already trained maps a new item's features to a first row, so
it starts near the items it resembles. Without features, or before any item has been
trained, a new item gets the neutral start: small random factors and a zero bias.
"""

from __future__ import annotations

import numpy as np

INITS = ("content", "neutral")


def neutral_rows(n: int, n_factors: int, rng: np.random.Generator, init_std: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The default start of a row, as for the initial table."""
    return (rng.normal(0.0, init_std, size=(n, n_factors)).astype(np.float32),
            np.zeros(n, dtype=np.float32))


def content_rows(features: np.ndarray, trained: np.ndarray, factors: np.ndarray,
                 bias: np.ndarray, new_features: np.ndarray, reg: float = 1.0
                 ) -> tuple[np.ndarray, np.ndarray] | None:
    """First rows for items with ``new_features`` from a ridge fit of the ``trained``
    items' rows on their ``features``; None when there is nothing to fit on.

    ``features`` (n, f) belong to the rows of ``factors``/``bias``; ``trained`` is a mask
    of the rows learned from behaviour.
    """
    x = np.asarray(features, dtype=np.float64)[trained]
    if not len(x) or not len(new_features):
        return None
    x = np.column_stack([x, np.ones(len(x))])  # the intercept: the trained items' centroid
    y = np.column_stack([factors[trained], bias[trained]]).astype(np.float64)
    penalty = reg * np.eye(x.shape[1])
    penalty[-1, -1] = 0.0  # the intercept is not shrunk
    w = np.linalg.solve(x.T @ x + penalty, x.T @ y)
    new = np.column_stack([np.asarray(new_features, np.float64), np.ones(len(new_features))])
    rows = new @ w
    return rows[:, :-1].astype(np.float32), rows[:, -1].astype(np.float32)
