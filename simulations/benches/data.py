"""``fedrec bench data``: how fast the data layer is — loading, generating, evaluating.

Each figure is the best of a few repeats in one run, so a busy machine inflates it least.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fedrec.common.data.registry import MOVIELENS, DatasetNotFoundError, dataset_dir
from fedrec.common.data.synthetic import ShopConfig, generate_shop
from fedrec.common.metrics import ranking_metrics
from fedrec.common.split import split


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Fastest wall time of ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_data(data_dir: str | Path | None = None, repeats: int = 3,
               synthetic_events: int = 1_000_000) -> dict:
    """Load every MovieLens dataset found, generate the synthetic shop, and time a full-ranking
    evaluation of ML-100K ``implicit-80-20`` (random scores: the metric's cost, not a model's)."""
    timings: dict[str, dict] = {}
    for name, (loader, _) in MOVIELENS.items():
        try:
            folder = dataset_dir(name, data_dir)
        except DatasetNotFoundError:
            continue
        data = loader(folder)
        timings[f"load {name}"] = {"seconds": best_of(lambda f=folder, ld=loader: ld(f), repeats),
                                   "rows": len(data)}
        if name == "ml-100k":
            s = next(split(data, "implicit-80-20"))
            table = np.random.default_rng(0).normal(size=(data.n_users, data.n_items))
            timings["evaluate ml-100k implicit-80-20 (full ranking, all users)"] = {
                "seconds": best_of(
                    lambda s=s, t=table: ranking_metrics(lambda u: t[u], s.train, s.test),
                    repeats),
                "users": data.n_users, "items": data.n_items}
    cfg = ShopConfig(n_users=max(100, synthetic_events // 50),
                     n_items=max(100, synthetic_events // 200), n_events=synthetic_events)
    shop = generate_shop(cfg)
    timings[f"generate synthetic {synthetic_events:,} events"] = {
        "seconds": best_of(lambda: generate_shop(cfg), repeats), "rows": len(shop),
        "users": cfg.n_users, "items": cfg.n_items}
    return {"bench": "data", "dataset": "all found", "protocol": None, "timings": timings}
