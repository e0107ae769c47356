"""The in-process engine with devices in worker processes: same results, same failure
handling, every message still observable."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from flwr.app import Message, MessageType, RecordDict
from flwr.common.logger import FLOWER_LOGGER

from fedrec.client.app import app as client_app
from fedrec.client.app import build_client_app
from fedrec.common.data.csvlog import write_csv_log
from fedrec.common.data.synthetic import ShopConfig, generate_shop
from fedrec.common.partition import simulated_partitions
from fedrec.common.settings import RunSettings
from fedrec.server.app import app as server_app
from fedrec.simulations.engines.inprocess import InProcessGrid, TaskIdentity, run_in_process
from tests.simulations.apps import failing_client_app

FLOWER_LOGGER.setLevel(logging.WARNING)


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    path = tmp_path_factory.mktemp("shop") / "shop.csv"
    return write_csv_log(generate_shop(ShopConfig(n_users=50, n_items=40, n_events=2_500,
                                                  seed=2)), path)


@pytest.mark.parametrize("protocol", ["implicit-80-20", "explicit-80-20"])
def test_two_workers_end_with_the_same_model_and_messages_as_one(shop, tmp_path, protocol):
    n = simulated_partitions(f"csv:{shop}", protocol, 0, "").n_users
    s = RunSettings(dataset=f"csv:{shop}", protocol=protocol, num_rounds=3,
                    evaluate_every=3, factors=4, negatives=2, fraction_train=0.6,
                    min_nodes=n)
    seen: dict[int, list] = {1: [], 2: []}
    for workers in (1, 2):
        run_in_process(server_app, client_app if workers == 1 else build_client_app, n,
                       {**s.to_run_config(), "results-dir": str(tmp_path / str(workers))},
                       observer=lambda d, m, w=workers: seen[w].append(
                           (d, m.metadata.message_type, m.metadata.dst_node_id)),
                       workers=workers)
    a, b = np.load(tmp_path / "1" / "model.npz"), np.load(tmp_path / "2" / "model.npz")
    assert not np.allclose(a["factors"], 0)
    for key in ("factors", "bias", "version"):
        np.testing.assert_array_equal(a[key], b[key])  # bit-identical
    assert sorted(seen[1]) == sorted(seen[2]) and len(seen[1]) > 4 * n


def test_a_failing_device_and_a_timeout_in_a_worker_do_not_stall_the_run():
    s = RunSettings()
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    with InProcessGrid(failing_client_app, 5, s.to_run_config(), workers=2) as grid:
        def requests() -> list[Message]:
            return [Message(RecordDict(), dst_node_id=node, message_type=MessageType.TRAIN)
                    for node in grid.get_node_ids()]

        replies = list(grid.send_and_receive(requests(), timeout=120))
        assert len(replies) == 5 and all(r.has_error() for r in replies)
        assert "battery" in replies[0].error.reason
        assert list(grid.send_and_receive(requests(), timeout=-1)) == []  # none in time
        assert grid.messages_delivered == 5


def test_a_clientapp_object_cannot_be_sent_to_workers():
    with pytest.raises(TypeError, match="picklable factory"):
        InProcessGrid(client_app, 3, RunSettings().to_run_config(), workers=2)
