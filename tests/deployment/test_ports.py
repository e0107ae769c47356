"""The deployment tests' port allocation: every port free when handed out, never handed
out twice by one worker, and workers drawing from disjoint blocks."""

from __future__ import annotations

import itertools
import socket

from tests.deployment import conftest
from tests.deployment.conftest import free_port, free_ports


def test_a_port_in_use_is_passed_over_and_none_is_handed_out_twice():
    first = free_port()
    block = conftest._worker_block()
    assert first in block and block.stop <= 32768  # under the kernel's ephemeral range
    taken = block.start + (first - block.start + 1) % len(block)  # the next in line
    with socket.socket() as held:
        held.bind(("127.0.0.1", taken))
        held.listen()
        more = free_ports(3)
    assert taken not in more and first not in more and len(set(more)) == 3
    for port in more:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free, as promised


def test_each_worker_draws_from_its_own_block(monkeypatch):
    blocks = []
    for worker in ("gw0", "gw1", "gw2"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        blocks.append(set(conftest._worker_block()))
        assert free_port() in blocks[-1]
    assert not (blocks[0] & blocks[1]) and not (blocks[1] & blocks[2])


def test_a_block_with_exactly_enough_free_ports_is_enough(monkeypatch):
    """The last free port of a walk through the block still counts (the walk used to
    stop one short of it)."""
    monkeypatch.setattr(conftest, "PORT_BLOCK", 3)
    monkeypatch.setattr(conftest, "PORT_BASE", 29000)
    monkeypatch.setattr(conftest, "_next_port", itertools.count())
    block = conftest._worker_block()
    with socket.socket() as held:
        held.bind(("127.0.0.1", block[0]))
        assert sorted(free_ports(2)) == [block[1], block[2]]
