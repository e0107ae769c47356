"""The in-process engine: Flower's ServerApp and ClientApp, many devices, one process.

:class:`InProcessGrid` implements Flower's public ``Grid`` interface by calling the ClientApp
directly, with one ``Context`` (and so one private ``state``) per simulated device. Every
message is delivered as a copy whose records are new objects, so neither side can change
the other's; the array payloads (immutable bytes) are shared rather than copied, which is
what lets ten thousand devices receive the item table in one round.

With ``workers=W > 1`` the devices live in W worker processes instead
(:mod:`fedrec.simulations.engines.workers`), which deliver a round's messages in parallel; the
ClientApp is then given as a picklable factory. Replies, and so results, are the same for
any number of workers.

It is the default engine for one machine and for tests; Flower's own simulation engine
(Ray) runs the same two apps (:mod:`fedrec.simulations.engines.ray_engine`).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable
from copy import copy
from uuid import uuid4

from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from fedrec.simulations.engines.workers import ClientAppFactory, DeviceWorkers

CLIENT_APP_ERROR = 0  # Error code of a reply whose ClientApp raised
FIRST_NODE = 1001  # the node id of partition 0; partition p is node FIRST_NODE + p

Observer = Callable[[str, Message], None]  # ("to-device" | "to-server", message)


def isolate(content: RecordDict) -> RecordDict:
    """A copy of ``content`` whose records are new objects: adding, replacing or removing an
    entry on one side never shows on the other. The ``Array`` entries, whose payload is
    immutable bytes, are shared. Entries were type-checked when first set, so the copies take
    the checked mappings as they are."""
    out = _shallow(content)
    for key, record in content.items():
        if isinstance(record, ArrayRecord | ConfigRecord | MetricRecord):
            out.__dict__["_data"][key] = _shallow(record)
        else:
            raise TypeError(f"unexpected record type {type(record).__name__} at {key!r}")
    return out


def _shallow(typed: object) -> object:
    """A new Flower typed dict holding the same (already checked) entries."""
    out = copy(typed)
    out.__dict__["_data"] = dict(typed.__dict__["_data"])
    return out


class InProcessGrid(Grid):
    """A Grid whose nodes are ClientApp calls in this process (see the module docstring)."""

    def __init__(self, client_app: ClientApp | ClientAppFactory, num_nodes: int,
                 run_config: dict, run_id: int = 1, observer: Observer | None = None,
                 workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1. Found {workers}.")
        if workers > 1 and isinstance(client_app, ClientApp):
            raise TypeError("with workers > 1, pass a picklable factory that returns the "
                            "ClientApp (such as fedrec.client.app.build_client_app), not "
                            "the ClientApp itself")
        self._run = Run.create_empty(run_id)
        # The server's identity, as Flower's runtime sets it for a ServerApp process:
        # Message() reads it, so whoever drives this grid can build messages at once.
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = (
            run_id, SUPERLINK_NODE_ID, 1)
        self.contexts: dict[int, Context] = {
            node_id: Context(run_id=run_id, node_id=node_id,
                             node_config={"partition-id": pid, "num-partitions": num_nodes},
                             state=RecordDict(), run_config=dict(run_config))
            for pid, node_id in enumerate(range(FIRST_NODE, FIRST_NODE + num_nodes))}
        self.observer = observer
        self._inbox: dict[str, Message] = {}
        self._replies: dict[str, Message] = {}
        self.messages_delivered = 0
        self._nodes = list(self.contexts)
        self.workers: DeviceWorkers | None = None
        self.client_app: ClientApp | None = None
        if workers > 1:
            # The workers own the devices' contexts (and their private state) from here on.
            self.workers = DeviceWorkers(client_app, self.contexts, workers, deliver)
            self.contexts = {}
        else:
            self.client_app = (client_app if isinstance(client_app, ClientApp)
                               else client_app())

    def close(self) -> None:
        """Stop the worker processes, if any."""
        if self.workers is not None:
            self.workers.close()

    def __enter__(self) -> InProcessGrid:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- Grid interface ------------------------------------------------------------------
    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._nodes)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids, known = [], set(self._nodes)
        for msg in messages:
            if msg.metadata.dst_node_id not in known:
                raise ValueError(f"no node {msg.metadata.dst_node_id} in this grid")
            msg.metadata.__dict__["_message_id"] = uuid4().hex
            self._inbox[msg.metadata.message_id] = msg
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        """Deliver each message in turn; messages not started by ``timeout`` get no reply
        (a partial round), as on a real SuperLink."""
        ids = list(self.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        pending = [self._inbox.pop(msg_id) for msg_id in ids]
        if self.workers is not None:
            if self.observer:  # what each device is handed: an isolated copy
                for msg in pending:
                    self.observer("to-device", Message(content=isolate(msg.content),
                                                       metadata=copy(msg.metadata)))
            for reply in self.workers.deliver(pending, deadline):
                self._received(reply)
        else:
            observe = (lambda m: self.observer("to-device", m)) if self.observer else None
            for msg in pending:
                if deadline is not None and time.monotonic() > deadline:
                    continue  # not started before the timeout: no reply (a partial round)
                self._received(deliver(self.client_app,
                                       self.contexts[msg.metadata.dst_node_id], msg, observe))
        return self.pull_messages(ids)

    def _received(self, reply: Message) -> None:
        self._replies[reply.metadata.reply_to_message_id] = reply
        self.messages_delivered += 1
        if self.observer:
            self.observer("to-server", reply)


def deliver(client_app: ClientApp, context: Context, msg: Message,
            observe: Callable[[Message], None] | None = None) -> Message:
    """Hand one device an isolated copy of ``msg``; returns its isolated reply (an error
    reply if the ClientApp raised). ``observe`` sees the copy the device is handed."""
    delivered = Message(content=isolate(msg.content), metadata=copy(msg.metadata))
    if observe:
        observe(delivered)
    try:
        reply = client_app(delivered, context)
    except Exception as exc:  # a failing ClientApp is an error reply, not a crash
        reason = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
        reply = Message(Error(CLIENT_APP_ERROR, reason), reply_to=delivered)
    if reply.has_content():
        reply = Message(content=isolate(reply.content), metadata=copy(reply.metadata))
    reply.metadata.__dict__["_message_id"] = uuid4().hex
    return reply


def run_in_process(server_app: ServerApp, client_app: ClientApp | ClientAppFactory,
                   num_nodes: int, run_config: dict, observer: Observer | None = None,
                   workers: int = 1) -> InProcessGrid:
    """Run ``server_app`` against ``num_nodes`` in-process devices; returns the grid (its
    worker processes, if any, stopped)."""
    grid = InProcessGrid(client_app, num_nodes, run_config, observer=observer,
                         workers=workers)
    context = Context(run_id=grid.run.run_id, node_id=SUPERLINK_NODE_ID, node_config={},
                      state=RecordDict(), run_config=dict(run_config))
    try:
        server_app(grid, context)
    finally:
        grid.close()
    return grid
