"""Timeline replays on Flower's Ray engine: users found through their nodes' own answers,
and the same figures as the in-process engine on the same stream.

Needs the ``ray`` extra; skips without it unless ``FEDREC_REQUIRE_RAY=1`` (as CI sets it)."""

from __future__ import annotations

import pytest
from flwr.app import Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedrec.common import records
from fedrec.simulations.benches.stream import bench_stream
from fedrec.simulations.engines.inprocess import InProcessGrid
from fedrec.simulations.engines.ray_replay import node_of_user
from fedrec.simulations.engines.replay import StreamSettings

SHOP = "synthetic:n_users=60,n_items=50,n_events=2500,rating_share=1.0"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["explicit"])  # (implicit: the same replay code)
def test_a_replay_on_ray_gives_the_in_process_figures(ray_installed, kind):
    s = StreamSettings(dataset=SHOP, kind=kind, tick_events=50)
    record = bench_stream(s, ("federated-incremental",), engines=("inprocess", "ray"))
    here, ray = (record["models"][n] for n in ("federated-incremental",
                                               "federated-incremental@ray"))
    assert ray["engine"] == "ray" and here["engine"] == "inprocess"
    key = "rmse" if kind == "explicit" else "hr@10"
    assert ray[key] == pytest.approx(here[key], abs=1e-4)
    assert ray["after_warmup"][key] == pytest.approx(here["after_warmup"][key], abs=1e-4)
    assert ray["messages"] == here["messages"] and ray["rounds"] == here["rounds"]


def _answering(pid_of) -> ClientApp:
    app = ClientApp()

    @app.query()
    def _query(msg: Message, context) -> Message:
        pid = pid_of(int(context.node_config["partition-id"]))
        return Message(RecordDict({records.METRICS: MetricRecord({"partition-id": pid})}),
                       reply_to=msg)

    return app


def test_users_are_found_by_their_nodes_answers_and_wrong_answers_are_refused():
    grid = InProcessGrid(_answering(lambda p: p), 5, {})
    assert node_of_user(grid, 5, 5.0) == list(grid.get_node_ids())
    for wrong, problem in ((lambda p: 0, "one another node named"),
                           (lambda p: p + 10, "not a user of the stream")):
        with pytest.raises(ValueError, match=problem):
            node_of_user(InProcessGrid(_answering(wrong), 5, {}), 5, 5.0)
    with pytest.raises(ValueError, match="3 nodes connected"):
        node_of_user(InProcessGrid(_answering(lambda p: p), 3, {}), 5, 0.2)
    from fedrec.client.app import app as client_app

    grid = InProcessGrid(client_app, 4, {})  # fedrec's own devices answer it
    assert node_of_user(grid, 4, 5.0) == list(grid.get_node_ids())
