"""What delta sync publishes: the item table devices are sent, and which rows it moved when.

With ``threshold`` 0 the published table *is* the model (no copy): every row a round moves
is sent to each device at its next sync. Implicit training moves many rows a little (every
sampled negative nudges a catalogue row), so on a large catalogue almost every row moves
between two syncs of a device. With ``threshold`` τ > 0 the server keeps publishing the
model's rows lazily, as Gaia's significance filter does for parameter servers: a row is
published (copied, its version bumped) once its drift from the published row exceeds τ
times that row's norm (with a floor of ``floor``, so rows near zero are not published on
noise); the model itself keeps every update, only what devices are sent lags by at most
that relative drift. Devices train against the published rows and their updates are
differences, which the server applies to the model's rows as usual.
"""

from __future__ import annotations

import numpy as np

from fedrec.server.item_model import ItemModel


class PublishedTable:
    """The table delta sync sends (see the module docstring)."""

    def __init__(self, model: ItemModel, threshold: float = 0.0, floor: float = 0.01) -> None:
        if not threshold >= 0:
            raise ValueError(f"sync threshold must be >= 0. Found {threshold}.")
        self.model, self.threshold, self.floor = model, float(threshold), float(floor)
        if self.threshold:
            p = model.params
            self._factors, self._bias = p.factors.copy(), p.bias.copy()
            self._version = model.version.copy()
            self._dirty = np.zeros(model.n_items, dtype=bool)  # moved, not yet published
        self.published_rows = 0  # rows published since the start (threshold > 0)
        self.held_back = 0  # rows moved in a round but not published then

    @property
    def factors(self) -> np.ndarray:
        self._grow()
        return self.model.params.factors if not self.threshold else self._factors

    @property
    def bias(self) -> np.ndarray:
        self._grow()
        return self.model.params.bias if not self.threshold else self._bias

    @property
    def n_items(self) -> int:
        return self.model.n_items

    @property
    def round(self) -> int:
        """The table's version: the model's last round."""
        return self.model.round

    def changed_since(self, version: int) -> np.ndarray:
        """Ids of the published rows moved after ``version`` (a round number)."""
        if not self.threshold:
            return self.model.changed_since(version)
        self._grow()
        return np.flatnonzero(self._version > version)

    def _grow(self) -> None:
        """Rows the catalogue added are published as they were listed."""
        if not self.threshold or len(self._factors) == self.model.n_items:
            return
        p, n = self.model.params, len(self._factors)
        self._factors = np.concatenate([self._factors, p.factors[n:]])
        self._bias = np.concatenate([self._bias, p.bias[n:]])
        self._version = np.concatenate([self._version, self.model.version[n:]])
        self._dirty = np.concatenate([self._dirty, np.zeros(len(p.bias) - n, dtype=bool)])

    def refresh(self, moved: np.ndarray, round_number: int) -> None:
        """After a round moved rows ``moved``: publish those (and earlier held-back rows)
        whose drift from the published row exceeds the threshold."""
        if not self.threshold:
            return
        self._grow()
        self._dirty[moved] = True
        ids = np.flatnonzero(self._dirty)
        if not len(ids):
            return
        p = self.model.params
        work = np.column_stack([p.factors[ids], p.bias[ids]])
        pub = np.column_stack([self._factors[ids], self._bias[ids]])
        drift = np.linalg.norm(work - pub, axis=1)
        scale = np.maximum(np.linalg.norm(pub, axis=1), self.floor)
        due = ids[drift > self.threshold * scale]
        self._factors[due], self._bias[due] = p.factors[due], p.bias[due]
        self._version[due] = round_number
        self._dirty[due] = False
        self.published_rows += len(due)
        self.held_back += len(moved) - int(np.isin(moved, due).sum())
