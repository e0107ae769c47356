"""The pairs model in a real deployment on 127.0.0.1: a SuperLink and three SuperNodes, each
device with its own keys and encrypted store. The server learns exactly the table of the
devices' items, and each device's edge app recommends with the table it was sent."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedrec.client.edge import EdgeClient
from fedrec.client.store import DeviceStore
from fedrec.common import pairs
from tests.deployment.conftest import ROOT

N_ITEMS = 40


@pytest.mark.slow
def test_a_deployed_pairs_run_counts_every_device_once_and_reaches_the_edge_app(federation):
    fed = federation
    rng = np.random.default_rng(4)
    bought = [rng.choice(N_ITEMS, 8, replace=False).tolist() for _ in range(3)]
    for items in bought:
        fed.add_device(items)
    assert fed.wait_online(3).count("online") == 3
    config = fed.config(3, model='"pairs"', checkpoint='""', **{"checkpoint-key-file": '""'})
    proc = fed.procs.start("run-1", "flwr", "run", str(ROOT), "local", "--stream",
                           "--run-config", config)
    fed.procs.finished("run-1")  # (it is meant to exit; the others are checked meanwhile)
    fed.procs.wait_until("the run ends", lambda: proc.poll() is not None, 600)
    assert proc.returncode == 0, fed.procs.log("run-1")
    history = json.loads((fed.folder / "results" / "history.json").read_text())
    train = [r["train"] for r in history["rounds"]]
    assert [t["accepted"] for t in train] == [3, 3, 3]
    # round 1 without each device's latest event, round 2 that event, round 3 nothing new
    assert [t["items-counted"] for t in train] == [21, 3, 0]
    assert history["rejected"] == {}
    table = np.load(fed.folder / "results" / "model.npz")["counts"]
    sets = [np.array(sorted(items)) for items in bought]
    np.testing.assert_array_equal(table, pairs.PairCounts.of_sets(sets, N_ITEMS).counts)
    for device, items in zip(fed.devices, bought, strict=True):
        key = bytes.fromhex((device / "store.key").read_text())
        with DeviceStore(device / "store.db", key=key) as store:
            app = EdgeClient(store)
            assert app.model == "pairs" and app.n_items == N_ITEMS
            np.testing.assert_array_equal(app.pairs[0], table)
            top = app.recommend(k=5)
            assert len(top.items) == 5 and not set(top.items.tolist()) & set(items)
