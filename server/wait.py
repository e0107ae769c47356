"""Waiting for a grid's devices to connect, within a bound."""

from __future__ import annotations

import time

from flwr.serverapp import Grid


def wait_for_nodes(grid: Grid, count: int, timeout: float, poll: float = 0.2) -> list[int]:
    """The connected nodes, once at least ``count`` are (or ``timeout`` seconds passed)."""
    deadline = time.monotonic() + timeout
    while len(nodes := list(grid.get_node_ids())) < count and time.monotonic() < deadline:
        time.sleep(poll)
    return nodes
