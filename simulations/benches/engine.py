"""``fedrec bench engine``: what fedrec's ClientApp costs per device message, and its bytes.

In one run and one engine, the same train messages (the item table and the round's config)
go to every simulated device twice: once handled by fedrec's ClientApp (local training, a
sparse update) and once by a trivial ClientApp (it answers at once with one metric), so the
ratio isolates what fedrec adds to Flower's own cost. Each figure is the best of
``repeats`` passes. Also measured: one whole federated round (sampling, delivery,
validation, aggregation, the server step) and the upload bytes per device and round, beside
the rows-times-factors lower bound and the dense table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
from flwr.app import Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.logger import FLOWER_LOGGER
from flwr.serverapp import Grid, ServerApp

from fedrec.client.app import build_client_app
from fedrec.common import records
from fedrec.common.partition import simulated_partitions
from fedrec.common.settings import RunSettings
from fedrec.server.app import build_strategy
from fedrec.server.wait import wait_for_nodes
from fedrec.simulations.engines.inprocess import InProcessGrid

Progress = Callable[[str, int, int], None]


def trivial_client_app() -> ClientApp:
    """A ClientApp that does nothing but answer (Flower's own per-message cost)."""
    app = ClientApp()

    @app.train()
    def _train(msg: Message, context: Context) -> Message:
        return Message(RecordDict({records.METRICS: MetricRecord({records.WEIGHT_KEY: 1.0})}),
                       reply_to=msg)

    return app


def _train_content(settings: RunSettings, n_items: int, rating_range: tuple) -> RecordDict:
    strategy = build_strategy(settings, n_items, 3.5, rating_range)
    return RecordDict({records.ITEMS: strategy.items_record(),
                       records.CONFIG: strategy.round_config(1)})


def _timed_pass(grid: Grid, content: RecordDict, nodes: list[int]) -> tuple[float, list]:
    messages = [Message(content, dst_node_id=n, message_type=MessageType.TRAIN) for n in nodes]
    start = time.perf_counter()
    replies = list(grid.send_and_receive(messages))
    return time.perf_counter() - start, replies


def upload_bytes(replies: list[Message], n_factors: int, n_items: int) -> dict[str, float]:
    """Mean upload per device (update arrays) against its lower bound and the dense table."""
    sizes, bounds = [], []
    for reply in replies:
        if reply.has_error() or records.UPDATE not in reply.content.array_records:
            continue
        arrays = records.record_to_arrays(reply.content[records.UPDATE])
        m = len(arrays["ids"])
        sizes.append(sum(len(a.data) for a in reply.content[records.UPDATE].values()))
        bounds.append(m * (n_factors + 1) * 4 + m * 8)
    dense = n_items * (n_factors + 1) * 4
    mean = float(np.mean(sizes)) if sizes else 0.0
    return {"bytes_per_device": mean,
            "lower_bound_bytes": float(np.mean(bounds)) if bounds else 0.0,
            "ratio_to_lower_bound": mean / float(np.mean(bounds)) if bounds else 0.0,
            "dense_table_bytes": float(dense),
            "ratio_to_dense": mean / dense if dense else 0.0}


def _round_seconds(settings: RunSettings, n_users: int, n_items: int, rating_range: tuple,
                   workers: int) -> float:
    """One whole round as the ServerApp runs it (sampling, delivery, validation, the fold
    and the server step), with the devices in ``workers`` processes."""
    strategy = build_strategy(settings, n_items, 3.5, rating_range)
    with InProcessGrid(build_client_app, n_users, settings.to_run_config(),
                       workers=workers) as grid:
        if workers > 1:  # workers start (spawn, imports, the data) before the clock does
            warm = [Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY)
                    for n in grid.get_node_ids()]
            list(grid.send_and_receive(warm))
        start = time.perf_counter()
        messages = strategy.configure_train(1, strategy.items_record(),
                                            strategy.round_config(1), grid)
        strategy.aggregate_train(1, grid.send_and_receive(messages))
        return time.perf_counter() - start


def bench_inprocess(settings: RunSettings, repeats: int = 3,
                    workers: tuple[int, ...] = (1,)) -> dict:
    parts = simulated_partitions(settings.dataset, settings.protocol, settings.fold,
                                 settings.data_dir)
    config = settings.to_run_config()
    content = _train_content(settings, parts.n_items, parts.rating_range)
    ours = InProcessGrid(build_client_app(), parts.n_users, config)
    trivial = InProcessGrid(trivial_client_app(), parts.n_users, config)
    nodes = list(ours.get_node_ids())
    best = {"fedrec": np.inf, "trivial": np.inf}
    replies: list[Message] = []
    for _ in range(repeats):  # interleaved, so a busy moment hits both
        dt, got = _timed_pass(ours, content, nodes)
        if dt < best["fedrec"]:
            best["fedrec"], replies = dt, got
        best["trivial"] = min(best["trivial"], _timed_pass(trivial, content, nodes)[0])
    round_s = {str(w): _round_seconds(settings, parts.n_users, parts.n_items,
                                      parts.rating_range, w) for w in workers}
    n = len(nodes)
    return {
        "devices": n,
        "fedrec_ms_per_message": 1000 * best["fedrec"] / n,
        "trivial_ms_per_message": 1000 * best["trivial"] / n,
        "ratio": best["fedrec"] / best["trivial"],
        "round_s": round_s,
        "upload": upload_bytes(replies, settings.factors, parts.n_items),
    }


def bench_ray(settings: RunSettings, rounds: int = 3) -> dict:
    """Per-message cost under Flower's Ray engine: steady state (rounds after the first,
    which pays Ray's start-up), fedrec's ClientApp and the trivial one in two simulations."""
    from fedrec.simulations.engines.ray_engine import restored_environment

    parts = simulated_partitions(settings.dataset, settings.protocol, settings.fold,
                                 settings.data_dir)
    n = parts.n_users
    out: dict[str, float] = {}
    for name, client in (("fedrec", build_client_app(settings.to_run_config())),
                         ("trivial", trivial_client_app())):
        times: list[float] = []
        server = ServerApp()

        @server.main()
        def _main(grid: Grid, context: Context, times: list[float] = times) -> None:
            wait_for_nodes(grid, n, timeout=600.0)
            content = _train_content(settings, parts.n_items, parts.rating_range)
            for _ in range(rounds):
                times.append(_timed_pass(grid, content, list(grid.get_node_ids()))[0])

        with restored_environment():
            from flwr.simulation import run_simulation

            run_simulation(server_app=server, client_app=client, num_supernodes=n,
                           backend_config={"client_resources": {"num_cpus": 1,
                                                                "num_gpus": 0}})
        steady = min(times[1:]) if len(times) > 1 else times[0]
        out[f"{name}_ms_per_message"] = 1000 * steady / n
        out[f"{name}_first_round_s"] = times[0]
    out["ratio"] = out["fedrec_ms_per_message"] / out["trivial_ms_per_message"]
    out["devices"] = n
    return out


def bench_engine(settings: RunSettings, engines: tuple[str, ...] = ("inprocess",),
                 repeats: int = 3, workers: tuple[int, ...] = (1,)) -> dict:
    """The engine bench record (without ``env``)."""
    level = FLOWER_LOGGER.level
    FLOWER_LOGGER.setLevel(logging.WARNING)
    try:
        result: dict = {"bench": "engine", "dataset": settings.dataset,
                        "protocol": settings.protocol, "settings": settings.to_run_config(),
                        "engines": {}}
        if "inprocess" in engines:
            result["engines"]["inprocess"] = bench_inprocess(settings, repeats, workers)
        if "ray" in engines:
            result["engines"]["ray"] = bench_ray(settings)
        return result
    finally:
        FLOWER_LOGGER.setLevel(level)


