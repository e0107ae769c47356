"""Replies matched to what was sent: at most one per message, from the node it went to.

An :class:`Outbox` holds the messages of one exchange (a round's training, its evaluation,
the μ query). Flower's grids give each message its id when they push it; a reply names
the message it answers (``reply_to_message_id``) and its sender (``src_node_id``). Only the
first reply to a message of *this* exchange, from the node that message went to, is
kept. Everything else is refused with its reason:

* ``unsolicited``: it answers no message of this exchange (a replayed reply, a reply to an
  older round's message, a node that was not sampled making one up);
* ``wrong-node``: it answers a message sent to another node;
* ``duplicate``: the message was answered already (a second reply under one node id).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from logging import WARNING

from flwr.app import Message
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.common.logger import log


class Outbox:
    """The messages of one exchange and the replies matched to them so far."""

    def __init__(self, messages: Iterable[Message], kind: str = "train") -> None:
        self.messages = list(messages)
        self.kind = kind
        self._answered: set[str] = set()

    def match(self, replies: Iterable[Message], refused: Counter[str] | None = None,
              prefix: str = "") -> list[Message]:
        """The replies that answer this exchange's messages (errors included), in order;
        the others are logged and counted in ``refused`` (by ``prefix + reason``)."""
        sent = {m.metadata.message_id: m for m in self.messages if m.metadata.message_id}
        kept = []
        for reply in replies:
            reason = self._refusal(reply, sent)
            if reason is None:
                self._answered.add(reply.metadata.reply_to_message_id)
                kept.append(reply)
                continue
            if refused is not None:
                refused[prefix + reason] += 1
            log(WARNING, "Refused a %s reply from node %s: %s", self.kind,
                reply.metadata.src_node_id, reason)
        return kept

    def _refusal(self, reply: Message, sent: dict[str, Message]) -> str | None:
        to = reply.metadata.reply_to_message_id
        message = sent.get(to) if isinstance(to, str) else None
        if message is None:
            return "unsolicited"
        if to in self._answered:
            return "duplicate"
        src = reply.metadata.src_node_id
        # (An error reply may come from the runtime on the node's behalf: node unavailable.)
        if src != message.metadata.dst_node_id and not (reply.has_error()
                                                         and src == SUPERLINK_NODE_ID):
            return "wrong-node"
        return None
