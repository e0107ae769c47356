"""Shared fixtures: tiny generated datasets, and the real MovieLens files when present.

Tests that need MovieLens use the ``ml100k`` fixture: it skips when ``$FEDREC_DATA`` does not
hold the files, and fails instead when ``FEDREC_REQUIRE_DATA=1`` (as CI sets it).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fedrec.common.data.interactions import EventType, IdMap, Interactions
from fedrec.common.data.registry import DatasetNotFoundError, dataset_dir, load_dataset


def _require_data() -> bool:
    return os.environ.get("FEDREC_REQUIRE_DATA", "") not in ("", "0")


def real_dataset_dir(name: str) -> Path:
    try:
        return dataset_dir(name)
    except DatasetNotFoundError as exc:
        if _require_data():
            pytest.fail(f"FEDREC_REQUIRE_DATA=1 but {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def ml100k() -> Interactions:
    real_dataset_dir("ml-100k")
    return load_dataset("ml-100k")


@pytest.fixture(scope="session")
def ml_latest_small_dir() -> Path:
    return real_dataset_dir("ml-latest-small")


@pytest.fixture(scope="session")
def ray_installed() -> None:
    """Skip without Flower's Ray engine, or fail when ``FEDREC_REQUIRE_RAY=1`` (as CI sets it)."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        if os.environ.get("FEDREC_REQUIRE_RAY", "") not in ("", "0"):
            pytest.fail("FEDREC_REQUIRE_RAY=1 but ray is not installed (pip install 'fedrec[ray]')")
        pytest.skip("Flower's Ray engine is not installed")


def make_interactions(user, item, value=None, timestamp=None, event=None,
                      n_users=None, n_items=None) -> Interactions:
    """Interactions over dense ids from plain lists (for hand-built cases)."""
    user = np.asarray(user, dtype=np.int32)
    item = np.asarray(item, dtype=np.int32)
    n = len(user)
    n_users = n_users if n_users is not None else (int(user.max()) + 1 if n else 0)
    n_items = n_items if n_items is not None else (int(item.max()) + 1 if n else 0)
    return Interactions(
        user=user, item=item,
        value=np.ones(n, np.float32) if value is None else np.asarray(value, np.float32),
        timestamp=np.arange(n, dtype=np.int64) if timestamp is None
        else np.asarray(timestamp, np.int64),
        event=np.full(n, EventType.RATING, np.int8) if event is None
        else np.asarray(event, np.int8),
        users=IdMap(np.arange(n_users)), items=IdMap(np.arange(n_items)), name="test",
    )


def low_rank_ratings(n_users: int = 60, n_items: int = 40, density: float = 0.5,
                     rank: int = 3, seed: int = 0) -> Interactions:
    """Ratings from a known low-rank model plus noise: something MF must learn."""
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(n_users, rank))
    q = rng.normal(size=(n_items, rank))
    mask = rng.random((n_users, n_items)) < density
    u, i = np.nonzero(mask)
    r = np.clip(3 + (p[u] * q[i]).sum(1) * 0.7 + rng.normal(0, 0.1, len(u)), 1, 5)
    order = rng.permutation(len(u))
    return make_interactions(u[order], i[order], r[order], n_users=n_users, n_items=n_items)


def shop_csv_file(tmp_path_factory, **config) -> Path:
    """A generated shop's event log written as CSV in a fresh temp folder
    (``ShopConfig(**config)``)."""
    from fedrec.common.data.csvlog import write_csv_log
    from fedrec.common.data.synthetic import ShopConfig, generate_shop

    path = tmp_path_factory.mktemp("shop") / "shop.csv"
    return write_csv_log(generate_shop(ShopConfig(**config)), path)
