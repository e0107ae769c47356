"""Failures of a deployment on 127.0.0.1: the server killed with SIGKILL mid-run and
restarted resumes from its checkpoint (nothing applied twice, nothing lost); a SuperNode
killed mid-run does not stall it."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from fedrec.client.edge import EdgeClient
from fedrec.client.store import DeviceStore
from fedrec.server.checkpoint import Checkpoint
from fedrec.server.keys import write_credentials
from tests.deployment.conftest import flwr, free_port, tls_superlink, wait_online

ROOT = Path(__file__).resolve().parents[2]
N_ITEMS = 40


def _federation(processes, nodes: int = 3):
    folder = processes.folder
    keys = write_credentials(folder / "keys", ["127.0.0.1"], nodes=nodes)
    port = free_port()
    link = tls_superlink(processes, keys, port)
    rng = np.random.default_rng(1)
    supernodes = []
    for i, node_key in enumerate(keys.node_keys, start=1):
        assert flwr(processes, "supernode", "register", f"{node_key}.pub",
                    "local").returncode == 0
        key = rng.bytes(32)
        (folder / f"device-{i}.key").write_text(key.hex())
        with DeviceStore(folder / f"device-{i}.db", key=key) as store:
            app = EdgeClient(store)
            for item in rng.choice(N_ITEMS, 8, replace=False):
                app.record(int(item), "purchase")
        supernodes.append(processes.start(
            f"node-{i}", "flower-supernode", "--superlink", f"127.0.0.1:{port}",
            "--root-certificates", str(keys.ca_cert),
            "--auth-supernode-private-key", str(node_key), "--port", str(free_port()),
            "--node-config", f'store="{folder / f"device-{i}.db"}" '
                             f'store-key-file="{folder / f"device-{i}.key"}"'))
    assert wait_online(processes, nodes).count("online") == nodes
    return keys, port, link, supernodes


def _config(folder: Path, rounds: int, **extra: str) -> str:
    base = {"dataset": f'"synthetic:n_users=3,n_items={N_ITEMS},n_events=100"',
            "num-rounds": str(rounds), "min-nodes": "2", "evaluate-every": str(rounds),
            "factors": "6", "negatives": "2", "results-dir": f'"{folder / "results"}"',
            "checkpoint": f'"{folder / "server.db"}"', **extra}
    return " ".join(f"{k}={v}" for k, v in base.items())


def _checkpoint_round(path: Path) -> int:
    try:
        saved = Checkpoint(path).load()
    except ValueError:
        return 0
    return 0 if saved is None else saved[1]


@pytest.mark.slow
def test_the_server_killed_mid_run_resumes_from_its_checkpoint(processes):
    folder = processes.folder
    keys, port, link, _ = _federation(processes)
    run = processes.start("run-1", "flwr", "run", str(ROOT), "local", "--stream",
                          "--run-config", _config(folder, 6))
    deadline = time.monotonic() + 240
    while _checkpoint_round(folder / "server.db") < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    os.killpg(link.pid, signal.SIGKILL)  # the SuperLink, its SuperExec and ServerApp
    link.wait(timeout=30)
    run.wait(timeout=60)
    saved_model, saved_round, _, _ = Checkpoint(folder / "server.db").load()
    assert 2 <= saved_round < 6
    # Restart with the same state database; registered nodes reconnect by themselves.
    link = tls_superlink(processes, keys, port)
    assert wait_online(processes, 3, timeout=120).count("online") == 3
    again = flwr(processes, "run", str(ROOT), "local", "--stream", "--run-config",
                 _config(folder, 6))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    history = json.loads((folder / "results" / "history.json").read_text())
    rounds = [r["round"] for r in history["rounds"] if "train" in r]
    assert rounds == list(range(1, 7))  # each round once: none lost, none twice
    model, last, _, _ = Checkpoint(folder / "server.db").load()
    assert last == 6
    # Rows untouched since the kill are exactly as checkpointed then.
    kept = model.version <= saved_round
    np.testing.assert_array_equal(model.params.factors[kept],
                                  saved_model.params.factors[kept])
    assert (model.version > saved_round).any()


@pytest.mark.slow
def test_a_supernode_killed_mid_run_does_not_stall_it(processes):
    folder = processes.folder
    _, _, _, supernodes = _federation(processes)
    run = processes.start("run-1", "flwr", "run", str(ROOT), "local", "--stream",
                          "--run-config", _config(folder, 4, **{"round-timeout": "40.0"}))
    deadline = time.monotonic() + 240
    while _checkpoint_round(folder / "server.db") < 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    os.killpg(supernodes[2].pid, signal.SIGKILL)
    assert run.wait(timeout=600) == 0, processes.log("run-1")[-3000:]
    history = json.loads((folder / "results" / "history.json").read_text())
    accepted = [r["train"]["accepted"] for r in history["rounds"] if "train" in r]
    assert len(accepted) == 4 and accepted[0] == 3 and min(accepted) == 2
