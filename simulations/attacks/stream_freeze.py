"""Freezing a replay's model: extra devices, sampled in every round of a timeline replay,
each moving every row of the table it is sent (``fedrec bench stream --freezers N``).

The server's stateful step rules keep per-row state that devices' replies feed: Count's
counts of the devices that moved a row (:class:`~fedrec.common.optim.Count`), Adagrad's
sums of squared moves. Were every move counted, a device that moves every row in every
round would shrink every row's step for everyone, round after round, and the model would
stop learning. Each freezer's reply passes every check: every listed row, in order, each
moved in a random direction at ``norm`` (factors and bias together; the server's bound
at most), counts of 1, and training metrics that claim no event, so the replay's scores,
μ and stored-event figures are the honest devices' alone.

What the attacker knows: the table it is sent each round (its size) and the norm bound.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedrec.client import app as device_app
from fedrec.common import neighbours, records
from fedrec.common.replies import STREAM_TRAIN
from fedrec.common.schema import ItemUpdate

NAME = "freeze"
TINY = 1e-6  # a move's norm by default: the counts, not the moves, are the attack


def check(freezers: int, norm: float, max_norm: float) -> None:
    """Freezers a replay can run: a count >= 0 and a move the server's checks accept, in
    (0, ``max_norm``] (one it refuses would leave a run with no attack in it, silently).
    ValueError naming the value."""
    if isinstance(freezers, bool) or not isinstance(freezers, int) or freezers < 0:
        raise ValueError(f"freezers must be a whole number >= 0. Found {freezers!r}.")
    if freezers and not (isinstance(norm, int | float) and np.isfinite(norm)
                         and 0 < norm <= max_norm):
        raise ValueError(f"freeze-norm must be in (0, {max_norm:g}] (the server's "
                         f"max-norm). Found {norm!r}.")


def freeze_update(n_rows: int, n_factors: int, norm: float, rng: np.random.Generator
                  ) -> ItemUpdate:
    """Every one of ``n_rows`` rows moved in a random direction at ``norm`` (factors and
    bias together)."""
    if not (np.isfinite(norm) and norm > 0):
        raise ValueError(f"norm must be a finite number > 0. Found {norm!r}.")
    move = rng.normal(size=(n_rows, n_factors + 1))
    move *= norm / np.linalg.norm(move, axis=1, keepdims=True)
    sent = move.astype(np.float32)
    # float32 rounding can leave a row a hair over ``norm``; at the server's bound that
    # row would be refused (and the run would hold no attack): those rows a hair under.
    over = np.linalg.norm(sent.astype(np.float64), axis=1) > norm
    sent[over] = (move[over] * (1 - 1e-6)).astype(np.float32)
    return ItemUpdate(np.arange(n_rows, dtype=np.int64), np.ascontiguousarray(sent[:, :-1]),
                      np.ascontiguousarray(sent[:, -1]), np.ones(n_rows, dtype=np.float32))


def no_events() -> dict[str, float]:
    """A replay round's training metrics claiming no event: every field of the schema,
    at zero."""
    return dict.fromkeys(STREAM_TRAIN.keys, 0.0)


def freeze_client_app(n_honest: int, norm: float, run_config: Mapping, seed: int = 0
                      ) -> ClientApp:
    """fedrec's ClientApp for partitions below ``n_honest``; freezers above."""
    client = ClientApp()
    config = dict(run_config)
    rngs: dict[int, np.random.Generator] = {}

    def freezer(context: Context) -> int | None:
        pid = int(context.node_config["partition-id"])
        return pid - n_honest if pid >= n_honest else None

    @client.train()
    def _train(msg: Message, context: Context) -> Message:
        device = freezer(context)
        if device is None:
            return device_app.train(msg, context, config)
        table = records.record_to_arrays(msg.content[records.ITEMS])
        rng = rngs.setdefault(device, np.random.default_rng([seed, 59, device]))
        update = freeze_update(len(table["bias"]), table["factors"].shape[1], norm, rng)
        content = RecordDict({records.UPDATE: records.update_to_record(update),
                              records.METRICS: records.metrics_to_record(no_events())})
        if "neighbours-version" in msg.content[records.CONFIG]:  # (no rating: none to pair)
            content[neighbours.RECORD] = records.arrays_to_record(
                {"items": np.empty(0, np.int64), "residuals": np.empty(0, np.float32)})
        return Message(content, reply_to=msg)

    @client.query()
    def _query(msg: Message, context: Context) -> Message:
        if freezer(context) is not None:
            raise RuntimeError("a freezer answers train messages only")
        return device_app.query(msg, context, config)

    return client
