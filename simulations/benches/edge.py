"""``fedrec bench edge``: what the embedded client costs on a device.

On a real file store (AES-GCM rows, SQLite in WAL mode) and an item table of the shop's
size: the latency of recording one event with its online step on the user vector (median and
95th percentile; with the store's default sync, and with a disk sync per commit as
``durable=True``), of a top-10 recommendation over 10k and 100k items, the
memory one client holds (peak of Python and numpy allocations while it opens the store,
records and recommends, measured with ``tracemalloc`` in a pass of its own), and the
store's size on disk.
"""

from __future__ import annotations

import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedrec.client.edge import EdgeClient, EdgeSettings
from fedrec.client.store import DeviceStore

KEY = bytes(range(32))  # a benchmark's store: the key does not matter


def _table(n_items: int, factors: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 0.1, (n_items, factors)).astype(np.float32),
            rng.normal(0, 0.1, n_items).astype(np.float32),
            rng.integers(0, 20, n_items).astype(np.int64))


def _percentiles(seconds: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {"median_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95))}


def _record_events(store: DeviceStore, table: tuple, rng: np.random.Generator, events: int,
                   seed: int) -> tuple[EdgeClient, list[float]]:
    """A client over ``store`` with ``table``, and the seconds each of ``events`` random
    views took to record (with its online step)."""
    app = EdgeClient(store, EdgeSettings(seed=seed))
    factors, bias, categories = table
    app.set_table(factors, bias, categories=categories)
    seconds = []
    for item in rng.integers(0, len(factors), events):
        start = time.perf_counter()
        app.record(int(item), "view")
        seconds.append(time.perf_counter() - start)
    return app, seconds


def _peak_memory(path: Path, table: tuple, events: int, seed: int) -> float:
    """Peak bytes of Python and numpy allocations while one client opens a fresh store,
    takes the table, records ``events`` events and recommends (``tracemalloc``, which slows
    every allocation: the latencies are measured apart, without it)."""
    rng = np.random.default_rng(seed + 2)
    tracemalloc.start()
    try:
        with DeviceStore(path, key=KEY, create=True) as store:
            app, _ = _record_events(store, table, rng, events, seed)
            app.recommend(k=10)
            app.recommend(k=10, category=3)
        return float(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()


def bench_edge(items: Sequence[int] = (10_000, 100_000), factors: int = 32,
               events: int = 500, recommendations: int = 200, seed: int = 0,
               folder: str | Path | None = None) -> dict:
    """The edge bench record (without ``env``)."""
    out: dict = {"bench": "edge", "factors": factors, "events": events, "sizes": {}}
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        for n_items in items:
            path = Path(tmp) / f"device-{n_items}.db"
            table = _table(n_items, factors, seed)
            rng = np.random.default_rng(seed + 1)
            with DeviceStore(path, key=KEY, create=True) as store:
                app, record = _record_events(store, table, rng, events, seed)
                top10, top10_category = [], []
                for _ in range(recommendations):
                    start = time.perf_counter()
                    app.recommend(k=10)
                    top10.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    app.recommend(k=10, category=3)
                    top10_category.append(time.perf_counter() - start)
            with DeviceStore(Path(tmp) / f"durable-{n_items}.db", key=KEY, create=True,
                             durable=True) as durable_store:
                _, record_durable = _record_events(durable_store, table, rng, events, seed)
            peak = _peak_memory(Path(tmp) / f"memory-{n_items}.db", table, events, seed)
            size = sum(p.stat().st_size for p in Path(tmp).glob(f"device-{n_items}.db*"))
            table_bytes = sum(a.nbytes for a in table)
            out["sizes"][str(n_items)] = {
                "record_and_update": _percentiles(record),
                "record_and_update_durable": _percentiles(record_durable),
                "top10": _percentiles(top10),
                "top10_in_a_category": _percentiles(top10_category),
                "memory_peak_mb": peak / 2**20,
                "table_mb": table_bytes / 2**20,
                "store_bytes": size,
                "store_bytes_per_event_beyond_table": max(0.0, (size - table_bytes) / events),
            }
    return out
