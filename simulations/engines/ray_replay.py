"""Timeline replays on Flower's Ray simulation engine.

Flower's simulation runtime numbers its nodes itself and gives each a ``partition-id`` in
its node config; the replay addresses users, so before the first tick the ServerApp asks
every node which simulated user it is (a ``partition`` query that only simulated devices
answer), checks that the answers name every user once, and then drives the same
:class:`~fedrec.simulations.engines.replay.FederatedStream` as the in-process engine
over Ray's grid.
"""

from __future__ import annotations

import importlib.util

from flwr.app import ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedrec.client.app import PARTITION_QUERY, build_client_app
from fedrec.common import records
from fedrec.server.wait import wait_for_nodes
from fedrec.simulations.engines.ray_engine import RayUnavailableError, restored_environment
from fedrec.simulations.engines.replay import (
    FederatedStream,
    Progress,
    StreamSettings,
    load_timeline,
)


def node_of_user(grid: Grid, n_users: int, timeout: float) -> list[int]:
    """Each simulated user's node id on ``grid``, from the nodes' own answers (every user
    exactly once, or ValueError naming what is wrong)."""
    nodes = wait_for_nodes(grid, n_users, timeout)
    if len(nodes) != n_users:
        raise ValueError(f"{len(nodes)} nodes connected within {timeout} s; the stream has "
                         f"{n_users} users")
    messages = [Message(RecordDict({PARTITION_QUERY: ConfigRecord({})}), dst_node_id=node,
                        message_type=MessageType.QUERY) for node in nodes]
    found: dict[int, int] = {}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        node = int(reply.metadata.src_node_id)
        if reply.has_error():
            raise ValueError(f"node {node} did not say its partition: {reply.error.reason}")
        got = records.reply_records(reply.content, {records.METRICS: MetricRecord})
        pid = got[records.METRICS].get("partition-id")
        if not isinstance(pid, int) or not 0 <= pid < n_users or pid in found:
            raise ValueError(f"node {node} names partition {pid!r}: not a user of the "
                             f"stream, or one another node named")
        found[pid] = node
    if len(found) != n_users:
        raise ValueError(f"{n_users - len(found)} users' nodes did not answer")
    return [found[u] for u in range(n_users)]


def replay_on_ray(s: StreamSettings, progress: Progress | None = None,
                  cpus_per_client: int = 1) -> FederatedStream:
    """The federated replay of ``s`` on Flower's Ray engine; returns the finished replay
    (its sums, log and summary as on the in-process engine)."""
    if importlib.util.find_spec("ray") is None:
        raise RayUnavailableError(
            "Flower's Ray engine is not installed: pip install 'fedrec[ray]'")
    n_users = load_timeline(s).n_users
    config = s.run_settings().to_run_config()
    done: list[FederatedStream] = []
    failed: list[BaseException] = []
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        try:
            fed = FederatedStream(s, grid=grid, node_of_user=node_of_user(
                grid, n_users, s.run.round_timeout))
            fed.replay(progress)
            done.append(fed)
        except BaseException as exc:  # (Flower's runtime logs and swallows it)
            failed.append(exc)
            raise

    with restored_environment():
        from flwr.simulation import run_simulation

        run_simulation(server_app=server, client_app=build_client_app(config),
                       num_supernodes=n_users,
                       backend_config={"client_resources": {"num_cpus": cpus_per_client,
                                                            "num_gpus": 0}})
    if failed:
        raise failed[0]
    if not done:
        raise RuntimeError("the Ray replay ended without finishing (see Flower's log)")
    return done[0]
