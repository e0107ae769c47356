"""The server's round loop: one loop for a deployment and for a timeline replay.

A round is the same five steps wherever it runs:

1. **open**: the privacy layers may stop the run (a spent budget); a server on a schedule
   waits for its turn (``round-every``); the server waits until enough devices have checked
   in (``min-nodes``);
2. **the catalogue**: the strategy's listings are refreshed at the loop's clock: new items
   grow the table (content starts), hidden items are recomputed;
3. **who trains**: the devices a driver names (a replay: those with new events in the
   tick), or a sample of the connected ones (Flower's FedAvg rule: ``fraction-train``);
4. **send**: the round's config (the strategy's, the round's number, a driver's own keys)
   and each device's table (whole, or its delta);
5. **fold**: the replies checked, screened and folded into the item table, the round's
   history written and checkpointed (:meth:`FedRec.aggregate_train`).

:meth:`RoundLoop.run` drives it in a deployment with the real clock (``time.time``) and
federated evaluation every ``evaluate-every`` rounds; the timeline replay
(:mod:`fedrec.simulations.engines.replay`) calls :meth:`RoundLoop.train` once per tick, with a
simulated clock and the tick's devices. Steps 1–4 are
:meth:`FedRec.open_round <fedrec.server.strategy.FedRec.open_round>`, which is also what
Flower's strategy API (``configure_train``) runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from logging import INFO

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid

from fedrec.server.strategy import ConfigValue, FedRec


class RoundLoop:
    """Rounds of a :class:`~fedrec.server.strategy.FedRec` strategy on a Flower ``grid``
    (see the module docstring). ``before_send`` sees the strategy after the catalogue is
    refreshed and before any message is built (a replay's table archive takes the version
    it is about to send there)."""

    def __init__(self, strategy: FedRec, grid: Grid, timeout: float | None = None, *,
                 before_send: Callable[[FedRec], None] | None = None) -> None:
        self.strategy, self.grid = strategy, grid
        self.timeout = strategy.wait_timeout if timeout is None else float(timeout)
        self.before_send = before_send

    # ---- one round -------------------------------------------------------------------
    def train(self, server_round: int, nodes: Iterable[int] | None = None,
              extra: Mapping[str, ConfigValue] | None = None,
              round_events: int | None = None) -> MetricRecord:
        """One training round (steps 1–5); its summary. ``round_events`` bounds how many
        new events a device may claim this round (a replay's tick)."""
        messages = self.strategy.open_round(server_round, self.grid, nodes, extra,
                                            self.before_send)
        replies = self.grid.send_and_receive(messages, timeout=self.timeout)
        s = self.strategy
        if round_events is not None:
            s.bounds = replace(s.bounds, round_events=max(1, int(round_events)))
        return s.aggregate_train(server_round, replies)[1]

    def evaluate(self, server_round: int) -> MetricRecord | None:
        """Federated evaluation, on the strategy's schedule (``evaluate-every``)."""
        s = self.strategy
        messages = list(s.configure_evaluate(server_round, ArrayRecord(), ConfigRecord(),
                                             self.grid))
        if not messages:
            return None
        replies = self.grid.send_and_receive(messages, timeout=self.timeout)
        return s.aggregate_evaluate(server_round, replies)

    # ---- a run -----------------------------------------------------------------------
    def run(self, num_rounds: int) -> None:
        """``num_rounds`` rounds of training and evaluation (the deployment's loop); with
        early stopping (the strategy's ``stopper``), the scheduled evaluations score the
        devices' validation slices, the run stops when they stop improving, and the best
        table is scored on the test rows at the end."""
        s = self.strategy
        start = time.time()
        server_round = 0  # (the last round run: none when num_rounds is 0)
        for server_round in range(1, num_rounds + 1):
            log(INFO, "[ROUND %s]", server_round + s.round_offset)
            self.train(server_round)
            if s.stopper is None:
                self.evaluate(server_round)
            elif self._validate(server_round, last=server_round == num_rounds):
                break
        if s.stopper is not None and server_round:
            self._finish_stopped(server_round)
        log(INFO, "rounds finished in %.2f s", time.time() - start)

    def _validate(self, server_round: int, last: bool) -> bool:
        """A scheduled validation round; whether the stopping rule says stop."""
        s = self.strategy
        absolute = server_round + s.round_offset
        if absolute % s.evaluate_every and not last:
            return False
        replies = self.grid.send_and_receive(s.evaluation(absolute, self.grid, "validation"),
                                             timeout=self.timeout)
        result = s.aggregate_evaluate(server_round, replies)
        stop = s.stopper.observe(absolute, dict(result) if result else None, s.model)
        s.save_checkpoint(absolute)  # (the rule's new state: a restart goes on from it)
        if stop:
            log(INFO, "early stopping: no better %s on validation for %s evaluations "
                "(best %.4f at round %s)", s.stopper.metric, s.stopper.patience,
                s.stopper.best, s.stopper.best_round)
        return stop

    def _finish_stopped(self, server_round: int) -> None:
        """Put the best validated table back and score it on the test rows."""
        s = self.strategy
        absolute = server_round + s.round_offset
        restored = s.stopper.restore(s.model, absolute)
        stopping = {**s.stopper.summary(), "restored-rows": restored}
        if s.history and s.history[-1]["round"] == absolute:  # (one entry per round)
            s.history[-1]["stopping"] = stopping
        else:
            s.history.append({"round": absolute, "stopping": stopping})
        replies = self.grid.send_and_receive(s.evaluation(absolute, self.grid),
                                             timeout=self.timeout)
        s.aggregate_evaluate(server_round, replies)
        s.save_checkpoint(absolute)  # the table the run ends with is its best
