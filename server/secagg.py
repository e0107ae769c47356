"""The ``secagg`` privacy mode: the server sees only the sum of a round's updates.

Flower's SecAgg+ runs on its legacy workflow only (``DefaultWorkflow`` with a
``SecAggPlusWorkflow`` for the fit stage, a legacy ``Strategy``). :class:`SecAggFedRec` is
that strategy for fedrec: it samples devices, sends them the item table and the round's
config, and receives one thing per round — the unmasked *sum* of every device's dense
vector (:mod:`fedrec.common.secagg`; SecAgg+ hands every result the same aggregate). From
it the same per-item weighted means the plain fold computes are read and applied to the
:class:`~fedrec.server.item_model.ItemModel`; μ comes from the summed rating statistics.

What the server cannot do here: validate one device's update (it never sees one). SecAgg+
clips each value to its clipping range before quantisation, which bounds what any one
device can add. Federated evaluation replies, as in ``plain``, carry each device's
held-out error sums.
"""

from __future__ import annotations

import random
from collections import Counter
from logging import INFO, WARNING

import numpy as np
from flwr.app import Context, RecordDict
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.logger import log
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid

from fedrec.common.replies import Bounds, evaluate_schema
from fedrec.common.schema import InvalidReplyError, TrainConfig
from fedrec.common.secagg import read_sum
from fedrec.common.weighting import check_weighting
from fedrec.server.aggregate import Aggregate
from fedrec.server.item_model import ItemModel
from fedrec.server.strategy import pool_evaluation

MIN_DEVICES = 2  # SecAgg+ needs at least two devices in a round


class SecAggFedRec(Strategy):
    """fedrec's item model behind Flower's legacy strategy interface, for SecAgg+."""

    def __init__(self, model: ItemModel, train_config: TrainConfig, *,
                 fraction_train: float = 1.0, fraction_evaluate: float = 1.0,
                 min_available_nodes: int = MIN_DEVICES, weighting: str = "uniform",
                 cap: float = 10.0, seed: int = 0,
                 rating_range: tuple[float, float] = (-np.inf, np.inf),
                 evaluate_every: int = 1, num_rounds: int | None = None,
                 explicit: bool = False) -> None:
        check_weighting(weighting)
        self.model, self.train_config = model, train_config
        self.fraction_train, self.fraction_evaluate = fraction_train, fraction_evaluate
        self.min_available_nodes = max(MIN_DEVICES, min_available_nodes)
        self.weighting, self.cap, self.seed = weighting, cap, seed
        self.rating_range, self.explicit = rating_range, explicit
        self.evaluate_every, self.num_rounds = evaluate_every, num_rounds
        self.history: list[dict] = []
        self.bounds = Bounds(rating_range)
        self.rejected: Counter[str] = Counter()
        self.epsilon = None

    def __repr__(self) -> str:
        return f"SecAggFedRec(weighting={self.weighting!r})"

    # ---- what goes out -----------------------------------------------------------------
    def _parameters(self) -> Parameters:
        return ndarrays_to_parameters([self.model.params.factors, self.model.params.bias])

    def _config(self, server_round: int) -> dict[str, Scalar]:
        low, high = self.rating_range
        return {**self.train_config.to_dict(), "mean": float(self.model.params.mean),
                "seed": self.seed, "server-round": server_round, "rating-min": float(low),
                "rating-max": float(high), "secagg-weighting": self.weighting,
                "secagg-cap": float(self.cap)}

    def _sample(self, client_manager: ClientManager, fraction: float) -> list[ClientProxy]:
        available = client_manager.num_available()
        n = max(int(available * fraction), MIN_DEVICES)
        return client_manager.sample(num_clients=n, min_num_clients=self.min_available_nodes)

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return self._parameters()

    def configure_fit(self, server_round: int, parameters: Parameters,
                      client_manager: ClientManager) -> list[tuple[ClientProxy, FitIns]]:
        ins = FitIns(self._parameters(), self._config(server_round))
        return [(client, ins) for client in self._sample(client_manager, self.fraction_train)]

    def configure_evaluate(self, server_round: int, parameters: Parameters,
                           client_manager: ClientManager
                           ) -> list[tuple[ClientProxy, EvaluateIns]]:
        if server_round % self.evaluate_every and server_round != self.num_rounds:
            return []
        ins = EvaluateIns(self._parameters(), self._config(server_round))
        return [(c, ins) for c in self._sample(client_manager, self.fraction_evaluate)]

    # ---- what comes back ---------------------------------------------------------------
    def aggregate_fit(self, server_round: int,
                      results: list[tuple[ClientProxy, FitRes]],
                      failures: list) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Apply the round's summed update. Every result carries the same aggregate: the
        *mean* of the devices' vectors (SecAgg+ divides by the total weight, one per
        device), so the sum is that times the number of devices."""
        if not results:
            log(WARNING, "round %s: no secure sum (%s failures)", server_round, len(failures))
            return None, {}
        n = len(results)
        mean_vector = parameters_to_ndarrays(results[0][1].parameters)
        dense = read_sum([a * n for a in mean_vector], self.weighting)
        agg = Aggregate(dense.ids, dense.rows, dense.bias, dense.weight,
                        dense.devices.astype(np.float64))
        applied = self.model.apply(agg, server_round)
        if self.explicit and dense.rating_count > 0:
            self.model.params.mean = dense.rating_sum / dense.rating_count
        # Upload per device is one dense vector: estimated by the aggregate's size (the
        # masked integers have as many values; `bench privacy` counts the real bytes).
        summary = {"accepted": float(n), "rejected": 0.0, "failed": float(len(failures)),
                   "rows-updated": float(len(agg.ids)) if applied else 0.0,
                   "upload-bytes": float(sum(len(t) for t in results[0][1].parameters.tensors)
                                         * n)}
        self.history.append({"round": server_round, "train": summary})
        log(INFO, "round %s: secure sum of %s devices, %s rows updated", server_round, n,
            len(agg.ids))
        return self._parameters(), summary

    def aggregate_evaluate(self, server_round: int,
                           results: list[tuple[ClientProxy, EvaluateRes]],
                           failures: list) -> tuple[float | None, dict[str, Scalar]]:
        schema = evaluate_schema(self.explicit)
        rows = []
        for proxy, res in results:  # every value checked, as in the plain mode
            try:
                rows.append(schema.validate(res.metrics, self.bounds))
            except InvalidReplyError as exc:
                self.rejected["evaluate:" + exc.reason] += 1
                log(WARNING, "Refused the evaluation of node %s: %s", proxy.node_id, exc)
        result = pool_evaluation(rows) if rows else {}
        if not result:
            return None, {}
        if self.history and self.history[-1]["round"] == server_round:
            self.history[-1]["evaluate"] = result
        else:
            self.history.append({"round": server_round, "evaluate": result})
        loss = result.get("rmse", result.get("ndcg@10"))
        return (float(loss) if loss is not None else None), result

    def evaluate(self, server_round: int, parameters: Parameters
                 ) -> tuple[float, dict[str, Scalar]] | None:
        return None  # no server-side data


def secagg_workflow(num_shares: float, threshold: float, timeout: float | None
                    ) -> SecAggPlusWorkflow:
    """Flower's SecAgg+ with fedrec's share settings: ``num_shares`` above 1 is a count of
    shares per device (odd; it includes the device's own), at most 1 a fraction of the
    round's devices; ``threshold`` is the fraction of shares that rebuild a key."""
    shares: int | float = int(num_shares) if num_shares > 1 else float(num_shares)
    return SecAggPlusWorkflow(num_shares=shares, reconstruction_threshold=float(threshold),
                              max_weight=1.0, timeout=timeout)


def run_secagg(grid: Grid, strategy: SecAggFedRec, num_rounds: int, num_shares: float,
               threshold: float, timeout: float, context: Context | None = None,
               seed: int = 0) -> SecAggFedRec:
    """Train ``num_rounds`` rounds with SecAgg+ on ``grid``; returns the strategy."""
    random.seed(seed)  # the legacy client manager and SecAgg+ draw from `random`
    if context is None:
        context = Context(run_id=grid.run.run_id, node_id=0, node_config={},
                          state=RecordDict(), run_config={})
    legacy = LegacyContext(context=context,
                           config=ServerConfig(num_rounds=num_rounds, round_timeout=timeout),
                           strategy=strategy)
    DefaultWorkflow(fit_workflow=secagg_workflow(num_shares, threshold, timeout))(grid, legacy)
    return strategy
