"""Flower's simulation engine (Ray) running fedrec's ServerApp and ClientApp.

Needs the ``ray`` extra (``pip install "fedrec[ray]"``). Flower's Python entry point takes
no run config, so the run's settings are bound to both apps: the ServerApp runs
:func:`fedrec.server.app.run` with them, and the ClientApp is built by
:func:`fedrec.client.app.build_client_app` with them.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager

from flwr.app import Context
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedrec.client.app import build_client_app
from fedrec.common.settings import RunSettings
from fedrec.server.app import run


class RayUnavailableError(RuntimeError):
    """Flower's Ray engine is not installed."""


def configured_apps(run_config: dict) -> tuple[ServerApp, ClientApp]:
    """fedrec's two apps, bound to ``run_config``."""
    settings = RunSettings.from_run_config(run_config)
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        run(grid, settings, context)

    return server, build_client_app(run_config)


def run_ray(num_nodes: int, run_config: dict, cpus_per_client: int = 1) -> None:
    """Run a whole federated training under Flower's Ray simulation engine."""
    if importlib.util.find_spec("ray") is None:
        raise RayUnavailableError(
            "Flower's Ray engine is not installed: pip install 'fedrec[ray]'")
    server, client = configured_apps(run_config)
    with restored_environment():
        from flwr.simulation import run_simulation  # its import sets variables too

        run_simulation(server_app=server, client_app=client, num_supernodes=num_nodes,
                       backend_config={"client_resources": {"num_cpus": cpus_per_client,
                                                            "num_gpus": 0}})


@contextmanager
def restored_environment() -> Iterator[None]:
    """Undo what Ray writes into ``os.environ`` (it sets PYTHONPATH to the driver's
    ``sys.path``, which then leaks into every subprocess the caller starts)."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
