"""Simulated devices in worker processes, so the in-process engine uses several cores.

Each worker hosts a fixed share of the nodes (node ``i`` of the grid goes to worker
``i mod W``): their Contexts, so each device's private state stays in one process across
rounds, and one ClientApp built there from a picklable factory. A round sends each worker
its messages in one pickle (messages that share a content share it in the pickle, so the
item table crosses once per worker, not once per device) and brings the replies back in
one. Workers start with the ``spawn`` method: nothing is inherited from a parent that may
hold Flower's, Ray's or BLAS's threads.

Delivery inside a worker is the same function the single-process grid uses, so results do
not depend on the number of workers.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

ClientAppFactory = Callable[[], ClientApp]  # picklable: a module-level function or partial
Deliver = Callable[[ClientApp, Context, Message], Message]


def _serve(conn: Connection, factory: ClientAppFactory, contexts: dict[int, Context],
           deliver: Deliver) -> None:
    """A worker's loop: a batch of messages in, their replies out, until told to stop."""
    client_app = factory()
    while True:
        try:
            job = conn.recv()
        except EOFError:  # the parent has gone
            return
        if job is None:
            return
        messages, deadline = job
        replies = []
        for msg in messages:
            if deadline is not None and time.monotonic() > deadline:
                continue  # not started before the round's timeout: no reply
            replies.append(deliver(client_app, contexts[msg.metadata.dst_node_id], msg))
        conn.send(replies)


class DeviceWorkers:
    """``n_workers`` processes hosting the given contexts (see the module docstring)."""

    def __init__(self, factory: ClientAppFactory, contexts: dict[int, Context],
                 n_workers: int, deliver: Deliver) -> None:
        if n_workers < 2:
            raise ValueError(f"DeviceWorkers needs at least 2 workers. Found {n_workers}.")
        ctx = multiprocessing.get_context("spawn")
        nodes = list(contexts)
        self.worker_of = {node: i % n_workers for i, node in enumerate(nodes)}
        self._conns: list[Connection] = []
        self._procs: list[multiprocessing.process.BaseProcess] = []
        for w in range(n_workers):
            mine = {node: contexts[node] for node in nodes[w::n_workers]}
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(child, factory, mine, deliver),
                               name=f"fedrec-devices-{w}", daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        self._finalizer = weakref.finalize(self, _stop, self._conns, self._procs)

    @property
    def n_workers(self) -> int:
        return len(self._procs)

    def deliver(self, messages: list[Message], deadline: float | None) -> list[Message]:
        """Deliver ``messages`` across the workers (all of them working at once); returns
        the replies, in no particular order. A worker that dies is an error, not a device
        failure: a failing ClientApp already comes back as an error reply."""
        batches: list[list[Message]] = [[] for _ in self._conns]
        for msg in messages:
            batches[self.worker_of[msg.metadata.dst_node_id]].append(msg)
        busy = [w for w, batch in enumerate(batches) if batch]
        for w in busy:
            self._conns[w].send((batches[w], deadline))
        replies: list[Message] = []
        for w in busy:
            try:
                replies.extend(self._conns[w].recv())
            except EOFError as exc:
                raise RuntimeError(
                    f"device worker {w} exited (code {self._procs[w].exitcode}); its "
                    f"{len(batches[w])} devices did not answer") from exc
        return replies

    def close(self) -> None:
        """Stop the workers (also done when the object is collected or at exit)."""
        self._finalizer()


def _stop(conns: list[Connection], procs: list) -> None:
    for conn in conns:
        with contextlib.suppress(OSError):  # a worker that already exited
            conn.send(None)
    for proc in procs:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
    for conn in conns:
        conn.close()
