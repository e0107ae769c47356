"""A shop's catalogue in a real deployment on 127.0.0.1: the operator lists an item with
``fedrec catalogue add`` while the server runs, and it reaches the devices' stores, SKU and
categories, with the next round's table: the edge app recommends it in its new category."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedrec.client.edge import EdgeClient
from fedrec.client.store import DeviceStore
from fedrec.common.catalogue import parse_catalogue, write_catalogue
from tests.deployment.conftest import ROOT, run
from tests.deployment.test_recovery import _checkpoint_round

N_ITEMS = 40


@pytest.mark.slow
def test_a_listing_added_while_the_server_runs_reaches_the_devices(federation):
    fed = federation
    path = fed.folder / "catalogue.csv"
    rows = ["sku,title,categories"] + [
        f"item-{i:03d},Item {i},{'shoes' if i % 2 else 'coats'}|{'kids' if i % 3 else 'all'}"
        for i in range(N_ITEMS)]
    write_catalogue(path, parse_catalogue("\n".join(rows) + "\n", str(path)))
    rng = np.random.default_rng(1)
    for _ in range(3):
        fed.add_device(rng.choice(N_ITEMS, 8, replace=False).tolist())
    assert fed.wait_online(3).count("online") == 3
    proc = fed.procs.start("run-1", "flwr", "run", str(ROOT), "local", "--stream",
                           "--run-config",
                           fed.config(4, catalogue=f'"{path}"', sync='"delta"'))
    fed.procs.wait_until("round 1 checkpointed", lambda: _checkpoint_round(fed) >= 1, 240)
    added = run(fed.procs, "fedrec", "catalogue", "add", str(path), "--sku", "boot-new",
                "--title", "Winter boot", "--categories", "shoes|winter")
    assert added.returncode == 0, added.stdout + added.stderr
    done_when_added = _checkpoint_round(fed)  # rounds finished when the file changed
    assert proc.wait(timeout=600) == 0, fed.procs.log("run-1")
    fed.procs.finished("run-1")
    history = json.loads((fed.folder / "results" / "history.json").read_text())
    train = {r["round"]: r["train"] for r in history["rounds"] if "train" in r}
    assert sorted(train) == [1, 2, 3, 4]
    grown = min(r for r, t in train.items() if t["items"] == N_ITEMS + 1)
    # The round in flight when the file changed may have sent its tables already; the
    # next one to start carries the listing.
    assert done_when_added < grown <= done_when_added + 2, (done_when_added, train)
    assert train[grown]["listed-new"] == 1
    assert all(t["accepted"] == 3 for t in train.values())
    for device in fed.devices:
        key = bytes.fromhex((device / "store.key").read_text())
        with DeviceStore(device / "store.db", key=key) as store:
            app = EdgeClient(store)
            assert app.n_items == N_ITEMS + 1 and app.skus[-1] == "boot-new"
            assert app.recommend(k=5, category="winter").skus == ("boot-new",)
            shoes = app.recommend(k=N_ITEMS, category="shoes", exclude=()).skus
            assert "boot-new" in shoes and len(shoes) == N_ITEMS // 2 + 1
    # Delta sync: after its first table, no device was sent the whole table again.
    assert all(t["first-contact-bytes"] == 0 for r, t in train.items() if r > 1)
