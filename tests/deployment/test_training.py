"""fedrec deployed as its users run it, on 127.0.0.1: a SuperLink with TLS and node
authentication, three SuperNodes each with its own encrypted device store that an edge app
recorded into, and fedrec's ServerApp submitted with ``flwr run``. The server checkpoints
its model; each device ends with the synced table and its user vector in its store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedrec.client.edge import EdgeClient
from fedrec.client.store import DeviceStore
from fedrec.server.checkpoint import Checkpoint
from fedrec.server.keys import write_credentials
from tests.deployment.conftest import flwr, free_port, tls_superlink, wait_online

ROOT = Path(__file__).resolve().parents[2]
N_ITEMS = 50


def example_app(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedrec.client.example_app",
                           *map(str, args)], capture_output=True, text=True, timeout=120)


def _device(folder: Path, i: int, rng: np.random.Generator) -> tuple[Path, Path]:
    """A device whose shopper used the example edge app: a key, then purchases."""
    key_file, path = folder / f"device-{i}.key", folder / f"device-{i}.db"
    assert example_app(path, key_file, "new-key").returncode == 0
    for item in rng.choice(N_ITEMS, 12 if i == 1 else 4, replace=False):
        if i == 1:  # through the example app's command line, as a shopper's app would
            made = example_app(path, key_file, "record", int(item), "purchase")
            assert made.returncode == 0, made.stderr
        else:
            with DeviceStore(path, key=bytes.fromhex(key_file.read_text())) as store:
                EdgeClient(store).record(int(item), "purchase")
    before = example_app(path, key_file, "recommend")
    assert "no recommendations yet" in before.stdout  # nothing synced before training
    return path, key_file


@pytest.mark.slow
def test_three_supernodes_with_encrypted_stores_train_over_tls(processes):
    folder = processes.folder
    keys = write_credentials(folder / "keys", ["127.0.0.1"], nodes=3)
    port = free_port()
    tls_superlink(processes, keys, port)
    rng = np.random.default_rng(0)
    stores = []
    for i, node_key in enumerate(keys.node_keys, start=1):
        assert flwr(processes, "supernode", "register", f"{node_key}.pub",
                    "local").returncode == 0
        store, key_file = _device(folder, i, rng)
        stores.append((store, key_file))
        processes.start(f"node-{i}", "flower-supernode", "--superlink", f"127.0.0.1:{port}",
                        "--root-certificates", str(keys.ca_cert),
                        "--auth-supernode-private-key", str(node_key),
                        "--port", str(free_port()),
                        "--node-config", f'store="{store}" store-key-file="{key_file}"')
    assert wait_online(processes, 3).count("online") == 3
    results, checkpoint = folder / "results", folder / "server.db"
    config = (f'dataset="synthetic:n_users=3,n_items={N_ITEMS},n_events=100" num-rounds=2 '
              f'min-nodes=3 evaluate-every=2 factors=8 negatives=2 '
              f'results-dir="{results}" checkpoint="{checkpoint}"')
    run = flwr(processes, "run", str(ROOT), "local", "--run-config", config, "--stream")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    history = json.loads((results / "history.json").read_text())
    assert [r["train"]["accepted"] for r in history["rounds"] if "train" in r] == [3, 3]
    model, last, _, _ = Checkpoint(checkpoint).load()
    assert last == 2 and model.version.max() == 2
    np.testing.assert_array_equal(model.params.factors, np.load(results / "model.npz")["factors"])
    for store, key_file in stores:
        with DeviceStore(store, key=bytes.fromhex(key_file.read_text())) as opened:
            app = EdgeClient(opened)
            assert app.factors.shape == (N_ITEMS, 8) and app.user is not None
            assert len(app.recommend(k=5).items) == 5
    shown = example_app(*stores[0], "recommend", "--k", "5")  # the app, after training
    assert shown.returncode == 0 and len(shown.stdout.strip().splitlines()) == 5
