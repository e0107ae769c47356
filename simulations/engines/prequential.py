"""Prequential (test-then-train) bookkeeping shared by every model of a stream bench.

Each model scores each arriving event before it learns from it. Scores are summed per tick
(``Sums``), so curves over time and totals come from the same numbers for the federated
model (whose devices report sums) and for the centralized ones (which score per event).
"""

from __future__ import annotations

import numpy as np

from fedrec.common.metrics import GROUPS, PREQUENTIAL_KEYS
from fedrec.common.segments import tail_figures, with_k

K = 10
KEYS = PREQUENTIAL_KEYS


class Sums:
    """Per-tick sums of prequential scores, one row per tick."""

    def __init__(self, n_ticks: int) -> None:
        self.table = np.zeros((n_ticks, len(KEYS)), dtype=np.float64)

    def add(self, tick: int, values: dict[str, float]) -> None:
        for j, key in enumerate(KEYS):
            self.table[tick, j] += float(values.get(key, values.get(f"pq-{key}", 0.0)))

    def column(self, key: str) -> np.ndarray:
        return self.table[:, KEYS.index(key)]

    def totals(self, ticks: slice = slice(None), explicit: bool = True) -> dict[str, float]:
        """RMSE/MAE (explicit) or HR@10/NDCG@10 (implicit), overall and on new items."""
        t = self.table[ticks].sum(axis=0)
        get = dict(zip(KEYS, t, strict=True))
        n, new_n = get["n"], get["new-n"]
        if explicit:
            out = {"rmse": float(np.sqrt(get["sq-err"] / n)) if n else float("nan"),
                   "mae": float(get["abs-err"] / n) if n else float("nan"),
                   "new_item_rmse": (float(np.sqrt(get["new-sq-err"] / new_n)) if new_n
                                     else float("nan"))}
        else:
            out = {f"hr@{K}": float(get["hits"] / n) if n else float("nan"),
                   f"ndcg@{K}": float(get["ndcg"] / n) if n else float("nan"),
                   f"new_item_hr@{K}": float(get["new-hits"] / new_n) if new_n
                   else float("nan")}
        for g in GROUPS:  # light and heavy users, tail items (fedrec.common.segments)
            gn = get[f"{g}-n"]
            if not gn:
                continue
            if explicit:
                out[f"{g}-rmse"] = float(np.sqrt(get[f"{g}-sq-err"] / gn))
            else:
                out[f"{g}-hr@{K}"] = float(get[f"{g}-hits"] / gn)
                out[f"{g}-ndcg@{K}"] = float(get[f"{g}-ndcg"] / gn)
            out[f"{g}-scored"] = int(gn)
        if not explicit:  # the tail's share of the top-K places shown
            out.update(with_k(tail_figures(get["tail-recs"], get["recs"], 0.0, 0.0), K))
        return {**out, "scored": int(n), "new_item_scored": int(new_n)}

    def curve(self, window_ticks: int, explicit: bool) -> list[float]:
        """The headline metric over a sliding window of ``window_ticks`` ticks."""
        w = max(1, window_ticks)
        kernel = np.ones(w)
        n = np.convolve(self.column("n"), kernel)[: len(self.table)]
        num = np.convolve(self.column("sq-err" if explicit else "hits"), kernel)[
            : len(self.table)]
        with np.errstate(invalid="ignore", divide="ignore"):
            values = np.sqrt(num / n) if explicit else num / n
        return [None if not np.isfinite(v) else float(v) for v in values]

