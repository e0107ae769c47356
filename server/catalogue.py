"""First vectors for newly listed items: from their content features, or neutral.

The content-based half of the brief. An item nobody has interacted with yet has no
behaviour to learn from, but the shop knows its content (genres, categories). A ridge
regression from content features to the learned rows ``[q_i | b_i]`` of the items
devices have already trained maps a new item's features to how its row should differ from
the average one, so it starts leaning towards the users of the items it resembles.
Without features, or before any item has been trained, a new item gets the neutral start:
small random factors and a zero bias.
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
                 bias: np.ndarray, new_features: np.ndarray, reg: float = 1.0,
                 with_bias: bool = True) -> tuple[np.ndarray, np.ndarray] | None:
    """First rows for items with ``new_features`` from a ridge fit of the ``trained``
    items' rows on their ``features``; None when there is nothing to fit on.

    ``features`` (n, f) belong to the rows of ``factors``/``bias``; ``trained`` is a mask
    of the rows learned from behaviour. Factors start at how trained rows differ from
    their average with content; the bias at the predicted bias (``with_bias``), or, for
    implicit feedback, at the neutral 0 plus that content deviation: there the bias is a
    popularity score, and the trained items' average would bury every new listing under
    the catalogue's long tail.
    """
    x = np.asarray(features, dtype=np.float64)[trained]
    if not len(x) or not len(new_features):
        return None
    y = np.column_stack([factors[trained], bias[trained]]).astype(np.float64)
    # Centred: the fit explains how rows differ with content around the trained items'
    # average; the average itself is added back only to the bias, and only with_bias.
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc = x - x_mean
    w = np.linalg.solve(xc.T @ xc + reg * np.eye(x.shape[1]), xc.T @ (y - y_mean))
    rows = (np.asarray(new_features, np.float64) - x_mean) @ w
    new_bias = rows[:, -1] + (y_mean[-1] if with_bias else 0.0)
    return rows[:, :-1].astype(np.float32), new_bias.astype(np.float32)
