"""A server run on a catalogue file (in process): a listing added while it runs reaches
devices with the next round's table, delisted items are hidden and never trained, and a
damaged new version is refused while the run goes on."""

from __future__ import annotations

import json
import logging
import time
from itertools import pairwise

import numpy as np
import pytest
from flwr.common.logger import FLOWER_LOGGER

from fedrec.client.app import app as client_app
from fedrec.common import records
from fedrec.common.catalogue import with_changes, write_catalogue
from fedrec.common.partition import simulated_partitions
from fedrec.common.settings import RunSettings
from fedrec.server.app import app as server_app
from fedrec.simulations.cli.catalogue import dataset_catalogue
from fedrec.simulations.engines.inprocess import run_in_process

FLOWER_LOGGER.setLevel(logging.WARNING)
SHOP = "synthetic:n_users=60,n_items=50,n_events=3000"


def _round(msg) -> int:
    return int(msg.content[records.CONFIG]["server-round"])


@pytest.mark.parametrize("sync", ["full", "delta"])
def test_a_listing_added_while_the_server_runs_reaches_devices_next_round(tmp_path, sync):
    path = tmp_path / "catalogue.csv"
    cat = dataset_catalogue(SHOP)
    write_catalogue(path, cat)
    settings = RunSettings(dataset=SHOP, catalogue=str(path), num_rounds=4,
                           evaluate_every=4, factors=8, negatives=2, sync=sync,
                           results_dir=str(tmp_path / "results"))
    tables: dict[int, list] = {}
    changed: list[int] = []

    def operator(direction: str, msg) -> None:
        if direction != "to-device" or msg.metadata.message_type != "train":
            return
        r = _round(msg)
        tables.setdefault(r, []).append(records.record_to_arrays(msg.content[records.ITEMS]))
        if r == 2 and 2 not in changed:  # the operator lists an item, delists another
            changed.append(2)
            write_catalogue(path, with_changes(
                cat, add=[{"sku": "NEW-1", "title": "Trail shoe",
                           "categories": "brand-new|category-00"}],
                delist={"SKU-05": time.time()}))
        if r == 3 and 3 not in changed:  # then saves a damaged file
            changed.append(3)
            path.write_text("sku,title\nNEW-2,x\n")

    parts = simulated_partitions(SHOP, settings.protocol, 0, "")
    run_in_process(server_app, client_app, parts.n_users, settings.to_run_config(),
                   observer=operator)
    history = json.loads((tmp_path / "results" / "history.json").read_text())
    train = {r["round"]: r["train"] for r in history["rounds"] if "train" in r}
    assert [train[r]["items"] for r in (1, 2, 3, 4)] == [50, 50, 51, 51]
    assert [train[r]["listed-new"] for r in (1, 2, 3, 4)] == [0, 0, 1, 0]
    assert [train[r]["hidden"] for r in (1, 2, 3, 4)] == [0, 0, 1, 1]
    assert train[4]["catalogue-refused"] == 1 and train[4]["catalogue-version"] == 2
    assert all(train[r]["accepted"] == parts.n_users for r in (1, 2, 3, 4))
    # Round 3's tables carry the new row, its SKU and categories; and hide SKU-05.
    for table in tables[3]:
        n = len(table["factors"]) if "ids" not in table else int(table["version"][1])
        assert n == 51
        assert table["static.sku"][-1] == b"NEW-1"
        names = [s.decode() for s in table["category-names"].tolist()]
        assert names[-1] == "brand-new"
        assert table["static.categories"][-1, :2].tolist() == [len(names) - 1,
                                                               names.index("category-00")]
        assert table["hidden"].tolist() == [5]
    assert all("hidden" in t and not len(t["hidden"]) for t in tables[2])
    model = np.load(tmp_path / "results" / "model.npz")
    assert model["factors"].shape == (51, 8)
    assert model["version"][5] <= 2  # SKU-05, delisted after round 2: never moved again
    assert (model["version"][:50] == 4).sum() > 10  # (while others were trained)
    if sync == "delta":  # a device's delta after the listing: the new row, no whole table
        deltas = [t for t in tables[3] if "ids" in t]
        assert deltas and all(50 in t["ids"].tolist() for t in deltas)


def test_a_checkpoint_resumes_only_on_the_catalogue_its_rows_are_of(tmp_path):
    path = tmp_path / "catalogue.csv"
    cat = dataset_catalogue(SHOP)
    write_catalogue(path, cat)
    base = {"dataset": SHOP, "catalogue": str(path), "evaluate_every": 2, "factors": 8,
            "negatives": 2, "checkpoint": str(tmp_path / "server.db"), "sync": "delta"}
    parts = simulated_partitions(SHOP, "implicit-80-20", 0, "")
    run_in_process(server_app, client_app, parts.n_users,
                   RunSettings(num_rounds=2, **base).to_run_config())
    # Listed while the server was down: grown at the restart, old rows kept.
    write_catalogue(path, with_changes(cat, add=[{"sku": "NEW-1", "categories": "x"}]))
    out = tmp_path / "results"
    run_in_process(server_app, client_app, parts.n_users,
                   RunSettings(num_rounds=3, results_dir=str(out), **base).to_run_config())
    history = json.loads((out / "history.json").read_text())
    train = [r["train"] for r in history["rounds"] if "train" in r]
    assert len(train) == 3 and train[2]["items"] == 51
    assert np.load(out / "model.npz")["factors"].shape == (51, 8)
    # Each device's acknowledged table was checkpointed: after the restart, rows only.
    assert train[0]["first-contact-bytes"] > 0 and train[2]["first-contact-bytes"] == 0
    assert 0 < train[2]["download-bytes"] < train[0]["download-bytes"]
    # A catalogue whose first items are not the checkpoint's rows: refused by name.
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[2], lines[1], *lines[3:]]) + "\n")
    with pytest.raises(ValueError, match="are not the ones the checkpoint's rows"):
        run_in_process(server_app, client_app, parts.n_users,
                       RunSettings(num_rounds=4, **base).to_run_config())


def test_a_checkpoint_made_without_a_catalogue_is_not_resumed_with_one(tmp_path):
    path = tmp_path / "catalogue.csv"
    write_catalogue(path, dataset_catalogue(SHOP))
    base = {"dataset": SHOP, "evaluate_every": 1, "factors": 8, "negatives": 2,
            "checkpoint": str(tmp_path / "server.db")}
    parts = simulated_partitions(SHOP, "implicit-80-20", 0, "")
    run_in_process(server_app, client_app, parts.n_users,
                   RunSettings(num_rounds=1, **base).to_run_config())
    with pytest.raises(ValueError, match="not made with a catalogue file"):
        run_in_process(server_app, client_app, parts.n_users,
                       RunSettings(num_rounds=2, catalogue=str(path), **base).to_run_config())


def test_a_server_on_a_schedule_runs_until_stopped(tmp_path):
    """num-rounds=0 with round-every: rounds start on the schedule until the run is stopped
    (here: the grid fails at round 4), every finished round checkpointed."""
    path = tmp_path / "catalogue.csv"
    write_catalogue(path, dataset_catalogue(SHOP))
    settings = RunSettings(dataset=SHOP, catalogue=str(path), num_rounds=0, round_every=0.4,
                           evaluate_every=100, factors=8, negatives=2,
                           checkpoint=str(tmp_path / "server.db"))

    class Stop(Exception):
        pass

    def stop_at_round_4(direction: str, msg) -> None:
        if direction == "to-device" and msg.metadata.message_type == "train" \
                and _round(msg) == 4:
            raise Stop

    parts = simulated_partitions(SHOP, settings.protocol, 0, "")
    with pytest.raises(Stop):
        run_in_process(server_app, client_app, parts.n_users, settings.to_run_config(),
                       observer=stop_at_round_4)
    from fedrec.server.checkpoint import Checkpoint

    _, last, history, _ = Checkpoint(tmp_path / "server.db").load()
    assert last == 3
    starts = [r["train"]["started-at"] for r in history if "train" in r]
    assert len(starts) == 3 and all(b - a >= 0.4 for a, b in pairwise(starts))
    with pytest.raises(ValueError, match="num-rounds=0"):
        RunSettings(num_rounds=0, privacy="dp")
    with pytest.raises(ValueError, match="round_every"):
        RunSettings(round_every=-1.0)
