"""Replies matched to what was sent, and every refusal counted with its reason.

An :class:`Outbox` holds the messages of one exchange (a round's training, its evaluation,
the μ query). Flower's grids give each message its id when they push it; a reply names
the message it answers (``reply_to_message_id``) and its sender (``src_node_id``). Only the
first reply to a message of *this* exchange, from the node that message went to, is
kept. Everything else is refused with its reason:

* ``unsolicited``: it answers no message of this exchange (a replayed reply, a reply to an
  older round's message or to another exchange's, a node that was not sampled making one up);
* ``wrong-node``: it answers a message sent to another node;
* ``duplicate``: the message was answered already (a second reply under one node id).

:class:`Refusals` is where every refused reply ends up, whatever refused it: counted by
reason (``evaluate:`` and ``query:`` prefixed; what the history and the checkpoint keep) and
the latest listed with their round and node, for an operator looking for a bad device.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from logging import WARNING

from flwr.app import Message
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.common.logger import log

KINDS = ("train", "evaluate", "query")


@dataclass(frozen=True)
class Refusal:
    """One refused reply."""

    round: int
    kind: str  # train, evaluate or query
    node: int
    reason: str


class Refusals:
    """Refused replies: counts by reason (``counts``) and the last ``keep`` of them."""

    def __init__(self, counts: Counter[str] | None = None, keep: int = 10_000) -> None:
        self.counts: Counter[str] = Counter() if counts is None else counts
        self.recent: deque[Refusal] = deque(maxlen=keep)

    def refuse(self, server_round: int, kind: str, reply: Message, reason: str,
               detail: str = "") -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}. Found {kind!r}.")
        node = int(reply.metadata.src_node_id)
        self.counts[reason if kind == "train" else f"{kind}:{reason}"] += 1
        self.recent.append(Refusal(server_round, kind, node, reason))
        log(WARNING, "Refused the %s reply of node %s: %s%s", kind, node, reason,
            f" ({detail})" if detail else "")

    def total(self) -> int:
        return sum(self.counts.values())


class Outbox:
    """The messages of one exchange and the replies matched to them so far."""

    def __init__(self, messages: Iterable[Message], kind: str = "train") -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}. Found {kind!r}.")
        self.messages = list(messages)
        self.kind = kind
        self._answered: set[str] = set()

    def match(self, replies: Iterable[Message], refusals: Refusals, server_round: int = 0
              ) -> list[Message]:
        """The replies that answer this exchange's messages (errors included), in order;
        the others go to ``refusals`` (as refused in ``server_round``)."""
        sent = {m.metadata.message_id: m for m in self.messages if m.metadata.message_id}
        kept = []
        for reply in replies:
            reason = self._refusal(reply, sent)
            if reason is None:
                self._answered.add(reply.metadata.reply_to_message_id)
                kept.append(reply)
            else:
                refusals.refuse(server_round, self.kind, reply, reason)
        return kept

    def _refusal(self, reply: Message, sent: dict[str, Message]) -> str | None:
        to = reply.metadata.reply_to_message_id
        message = sent.get(to) if isinstance(to, str) else None
        if message is None:
            return "unsolicited"
        src = reply.metadata.src_node_id
        # (An error reply may come from the runtime on the node's behalf: node unavailable.)
        if src != message.metadata.dst_node_id and not (reply.has_error()
                                                         and src == SUPERLINK_NODE_ID):
            return "wrong-node"
        if to in self._answered:
            return "duplicate"
        return None
