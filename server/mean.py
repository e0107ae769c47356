"""The global mean μ of an explicit model, from aggregate-only statistics every device
reports, each checked and each device weighing the same.

Every device answers a query message with whether its user has training ratings
(``rated``) and their mean (``rating-mean``): :data:`fedrec.common.replies.QUERY`. μ is
the mean of the rated devices' means. A reply whose fields fail the schema (a mean outside
the rating scale, a count where a flag belongs, a list, NaN) is refused and counted; a
reply that passes carries one device's weight, whatever it claims, so among ``n`` rated
devices one device moves μ by at most ``(high − low) / n``: 0.0042 on ML-100K's 943.

In the ``secagg`` mode the server never sees one device's statistics: each bucket of
devices is summed securely, and μ is the trimmed mean of the buckets' means
(:func:`trimmed_mean`), so a hostile device, which can put anything in its bucket's sum,
moves one bucket.
"""

from __future__ import annotations

import math
from logging import INFO

import numpy as np
from flwr.app import Message, MessageType, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from fedrec.common import records
from fedrec.common.replies import QUERY, Bounds
from fedrec.common.schema import InvalidReplyError
from fedrec.common.secagg import BucketMean
from fedrec.server.replies import Outbox, Refusals
from fedrec.server.wait import wait_for_nodes


def fallback_mean(rating_range: tuple[float, float]) -> float:
    """μ before any device reported: the middle of the scale (0 if it is unbounded)."""
    low, high = rating_range
    return float((low + high) / 2) if np.isfinite(low) and np.isfinite(high) else 0.0


def pooled_mean(replies: list[Message], bounds: Bounds, refusals: Refusals) -> float:
    """μ from query replies already matched to the messages sent (errors skipped)."""
    means = []
    for reply in replies:
        if reply.has_error():
            continue
        try:
            got = records.reply_records(reply.content, {records.METRICS: MetricRecord})
            values = QUERY.validate(got[records.METRICS], bounds)
        except InvalidReplyError as exc:
            refusals.refuse(0, "query", reply, exc.reason, str(exc))
            continue
        if values["rated"]:
            means.append(values["rating-mean"])
    return float(np.mean(means)) if means else fallback_mean(bounds.rating_range)


def query_mean(grid: Grid, bounds: Bounds, timeout: float, refusals: Refusals,
               min_nodes: int = 1) -> float:
    """Ask every connected device for its statistics and pool them into μ; refused
    replies go to ``refusals``."""
    nodes = wait_for_nodes(grid, min_nodes, timeout)
    outbox = Outbox([Message(RecordDict(), dst_node_id=node, message_type=MessageType.QUERY)
                     for node in nodes], "query")
    replies = outbox.match(grid.send_and_receive(outbox.messages, timeout=timeout), refusals)
    mean = pooled_mean(replies, bounds, refusals)
    log(INFO, "global mean %.4f from %s replies", mean, len(replies))
    return mean


def trimmed_mean(buckets: list[BucketMean], rating_range: tuple[float, float],
                 trim: float = 0.1) -> float:
    """μ from buckets' means of users' means: the ``trim`` share of buckets with the
    lowest and the highest means left out (at least one each side, when at least three
    buckets have ratings), the rest averaged by their rated devices."""
    rated = [b for b in buckets if b.rated > 0]
    if not rated:
        return fallback_mean(rating_range)
    rated.sort(key=lambda b: b.mean)
    cut = max(1, math.ceil(trim * len(rated))) if len(rated) >= 3 else 0
    kept = rated[cut:len(rated) - cut]
    return float(sum(b.mean * b.rated for b in kept) / sum(b.rated for b in kept))
