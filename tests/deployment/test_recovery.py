"""Failures of a deployment on 127.0.0.1: the server killed with SIGKILL mid-run and
restarted resumes from its checkpoint (nothing applied twice, nothing lost); a SuperNode
killed mid-run does not stall it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedrec.server.checkpoint import Checkpoint
from tests.deployment.conftest import ROOT, flwr

N_ITEMS = 40


def _federation(fed, nodes: int = 3) -> list:
    rng = np.random.default_rng(1)
    for _ in range(nodes):
        fed.add_device(rng.choice(N_ITEMS, 8, replace=False).tolist())
    assert fed.wait_online(nodes).count("online") == nodes
    return [fed.procs.running[f"node-{i}"] for i in range(1, nodes + 1)]


def _checkpoint_round(fed) -> int:
    try:
        saved = _checkpoint(fed).load()
    except ValueError:
        return 0
    return 0 if saved is None else saved[1]


def _checkpoint(fed) -> Checkpoint:
    key = bytes.fromhex((fed.keys / "checkpoint.key").read_text())
    return Checkpoint(fed.folder / "server.db", key=key)


@pytest.mark.slow
def test_the_server_killed_mid_run_resumes_from_its_checkpoint(federation):
    fed = federation
    _federation(fed)
    config = fed.config(6, sync='"delta"')
    run = fed.procs.start("run-1", "flwr", "run", str(ROOT), "local", "--stream",
                          "--run-config", config)
    fed.procs.finished("run-1")  # (it ends when the SuperLink is killed)
    fed.procs.wait_until("round 2 checkpointed", lambda: _checkpoint_round(fed) >= 2, 240)
    for name in ("superlink", "superexec"):  # the server: SuperLink, SuperExec, ServerApp
        fed.procs.stop(name)
    run.wait(timeout=60)
    saved_model, saved_round, _, _ = _checkpoint(fed).load()
    assert 2 <= saved_round < 6
    # Restart with the same state database; registered nodes reconnect by themselves.
    fed.start_superlink()
    assert fed.wait_online(3, timeout=120).count("online") == 3
    again = flwr(fed.procs, "run", str(ROOT), "local", "--stream", "--run-config", config)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    history = json.loads((fed.folder / "results" / "history.json").read_text())
    rounds = [r["round"] for r in history["rounds"] if "train" in r]
    assert rounds == list(range(1, 7))  # each round once: none lost, none twice
    # Delta sync: the restarted server knew each device's table, and sent rows, not tables.
    train = {r["round"]: r["train"] for r in history["rounds"] if "train" in r}
    assert train[1]["first-contact-bytes"] > 0
    assert all(train[r]["first-contact-bytes"] == 0 for r in range(2, 7)), train
    model, last, _, _ = _checkpoint(fed).load()
    assert last == 6
    # Rows untouched since the kill are exactly as checkpointed then.
    kept = model.version <= saved_round
    np.testing.assert_array_equal(model.params.factors[kept],
                                  saved_model.params.factors[kept])
    assert (model.version > saved_round).any()


@pytest.mark.slow
def test_a_supernode_killed_mid_run_does_not_stall_it(federation):
    fed = federation
    _federation(fed)
    run = fed.procs.start("run-1", "flwr", "run", str(ROOT), "local", "--stream",
                          "--run-config", fed.config(4, **{"round-timeout": "40.0"}))
    fed.procs.wait_until("round 1 checkpointed", lambda: _checkpoint_round(fed) >= 1, 240)
    for name in ("node-3", "superexec-3"):  # the device goes away, mid-run
        fed.procs.stop(name)
    assert run.wait(timeout=600) == 0, fed.procs.log("run-1")
    fed.procs.finished("run-1")
    history = json.loads((fed.folder / "results" / "history.json").read_text())
    accepted = [r["train"]["accepted"] for r in history["rounds"] if "train" in r]
    assert len(accepted) == 4 and accepted[0] == 3 and min(accepted) == 2
