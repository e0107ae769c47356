"""The ``secagg`` privacy mode: the server sees only sums of devices' vectors.

Flower's SecAgg+ runs on its legacy workflow only (``DefaultWorkflow`` with a
``SecAggPlusWorkflow`` for the fit stage, a legacy ``Strategy``). :class:`SecAggFedRec` is
that strategy for fedrec: it samples devices, sends them the item table and the round's
config, and receives one thing per round — the unmasked *sum* of every device's dense
vector (:mod:`fedrec.common.secagg`; SecAgg+ hands every result the same aggregate). From
it the same per-item weighted means the plain fold computes are read and applied to the
:class:`~fedrec.server.item_model.ItemModel`. μ comes from a mean query before round 1,
one secure sum per bucket of devices (:class:`MeanFirst`).

What the server cannot do here: validate one device's update (it never sees one), and a
malicious device need not clip or even quantise what it adds. What it checks instead is
each sum against what the round's devices could honestly produce: touched counts whole and
at most the number of devices, weights at most the count, weighted rows within the norm
bound times the weight; items failing are refused and counted (``secagg-sum:CHECK``). Within
those bounds one device can still move an item's row by up to the bound times the slack
(the honest weight it could claim); only secure aggregation with input validation (range
proofs) closes that. Federated evaluation replies, as in ``plain``, carry each device's
held-out error sums, each checked.
"""

from __future__ import annotations

import random
from collections import Counter
from logging import INFO, WARNING

import numpy as np
from flwr.app import ConfigRecord, Context, RecordDict
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
from flwr.server.compat.app_utils import start_update_client_manager_thread
from flwr.server.strategy import Strategy
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.default_workflows import default_init_params_workflow
from flwr.serverapp import Grid

from fedrec.common.replies import Bounds, evaluate_schema
from fedrec.common.schema import InvalidReplyError, TrainConfig
from fedrec.common.secagg import Block, BucketMean, read_mean_sum, read_sum
from fedrec.common.weighting import check_weighting
from fedrec.server.aggregate import Aggregate
from fedrec.server.item_model import ItemModel
from fedrec.server.mean import trimmed_mean
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
                 explicit: bool = False, max_norm: float = 10.0, block_size: int = 0,
                 similarity: float = 0.0) -> None:
        check_weighting(weighting)
        self.model, self.train_config = model, train_config
        self.similarity = similarity  # how devices rank (common.ranking), told every round
        self.fraction_train, self.fraction_evaluate = fraction_train, fraction_evaluate
        self.min_available_nodes = max(MIN_DEVICES, min_available_nodes)
        self.weighting, self.cap, self.seed = weighting, cap, seed
        self.rating_range, self.explicit = rating_range, explicit
        self.evaluate_every, self.num_rounds = evaluate_every, num_rounds
        self.history: list[dict] = []
        self.bounds = Bounds(rating_range)
        self.max_norm = max_norm
        self.block_size = max(0, int(block_size))  # rows per round's sum (0: the catalogue)
        self.block: Block | None = None  # this round's
        self.rejected: Counter[str] = Counter()
        self.epsilon = None
        # The mean query (explicit runs, before round 1): one secure sum per bucket.
        self.bucket: list[int] | None = None  # the nodes of the bucket being summed
        self.buckets: list[BucketMean] = []

    def __repr__(self) -> str:
        return f"SecAggFedRec(weighting={self.weighting!r})"

    # ---- what goes out -----------------------------------------------------------------
    def _parameters(self) -> Parameters:
        return ndarrays_to_parameters([self.model.params.factors, self.model.params.bias])

    def _config(self, server_round: int) -> dict[str, Scalar]:
        low, high = self.rating_range
        return {**self.train_config.to_dict(), "privacy": "secagg",
                "mean": float(self.model.params.mean),
                "seed": self.seed, "server-round": server_round, "rating-min": float(low),
                "rating-max": float(high), "secagg-weighting": self.weighting,
                "secagg-cap": float(self.cap),
                **({"similarity": float(self.similarity)} if self.similarity else {})}

    def _sample(self, client_manager: ClientManager, fraction: float) -> list[ClientProxy]:
        available = client_manager.num_available()
        n = max(int(available * fraction), MIN_DEVICES)
        return client_manager.sample(num_clients=n, min_num_clients=self.min_available_nodes)

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return self._parameters()

    def configure_fit(self, server_round: int, parameters: Parameters,
                      client_manager: ClientManager) -> list[tuple[ClientProxy, FitIns]]:
        if self.bucket is not None:  # the mean query: no table, one bucket's devices
            low, high = self.rating_range
            ins = FitIns(ndarrays_to_parameters([]), {
                "privacy": "secagg", "secagg-query": "mean", "rating-min": float(low),
                "rating-max": float(high)})
            proxies = {proxy.node_id: proxy for proxy in client_manager.all().values()}
            return [(proxies[node], ins) for node in self.bucket if node in proxies]
        self.block = Block.of_round(server_round, self.block_size, self.model.n_items)
        config = {**self._config(server_round), "secagg-block-start": self.block.start,
                  "secagg-block-size": self.block.size}
        ins = FitIns(self._parameters(), config)
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
        total = [a * n for a in parameters_to_ndarrays(results[0][1].parameters)]
        if self.bucket is not None:
            self._bucket_sum(total, n)
            return None, {}
        block, self.block = self.block, None
        try:
            if block is None or len(total) != 4 or len(total[3]) != block.size:
                raise ValueError(f"the sum does not cover the round's block of "
                                 f"{block.size if block else '?'} rows")
            dense = read_sum(total, self.weighting, devices=n, max_norm=self.max_norm)
        except ValueError as exc:  # no honest round sums to that shape
            self.rejected["secagg-sum:shape"] += 1
            log(WARNING, "round %s: refused the secure sum (%s)", server_round, exc)
            return None, {}
        for check, items in dense.refused.items():
            self.rejected[f"secagg-sum:{check}"] += items
            log(WARNING, "round %s: refused %s items whose secure sums fail the %s check "
                "(no honest round produces them)", server_round, items, check)
        ids = block.ids[dense.ids]  # catalogue rows (a block wrapping the end: unsorted)
        order = np.argsort(ids)
        agg = Aggregate(ids[order], dense.rows[order], dense.bias[order],
                        dense.weight[order], dense.devices[order].astype(np.float64))
        applied = self.model.apply(agg, server_round)
        # Upload per device is one dense vector: estimated by the aggregate's size (the
        # masked integers have as many values; `bench privacy` counts the real bytes).
        summary = {"accepted": float(n), "rejected": float(sum(dense.refused.values())),
                   "failed": float(len(failures)),
                   "rows-updated": float(len(agg.ids)) if applied else 0.0,
                   "upload-bytes": float(sum(len(t) for t in results[0][1].parameters.tensors)
                                         * n)}
        self.history.append({"round": server_round, "train": summary})
        log(INFO, "round %s: secure sum of %s devices, %s rows updated", server_round, n,
            len(agg.ids))
        return self._parameters(), summary

    def _bucket_sum(self, total: list[np.ndarray], devices: int) -> None:
        try:
            self.buckets.append(read_mean_sum(total, devices, self.rating_range))
        except ValueError as exc:
            self.rejected["query:secagg-sum"] += 1
            log(WARNING, "refused a bucket's mean-query sum: %s", exc)

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


def split_buckets(nodes: list[int], size: int, seed: int = 0) -> list[list[int]]:
    """``nodes`` split at random (seeded) into buckets of at least ``size`` (all in one
    when there are fewer)."""
    order = np.random.default_rng([seed, 11]).permutation(len(nodes))
    shuffled = np.asarray(sorted(nodes), dtype=np.int64)[order]
    return [b.tolist() for b in np.array_split(shuffled, max(1, len(nodes) // size))]


class MeanFirst:
    """The fit stage of each round: SecAgg+ over the round's devices, and before round 1 of
    an explicit run the mean query, one SecAgg+ per bucket of ``bucket_size`` devices.

    One device can put anything in the sum it is part of, so μ is not read from one sum:
    each bucket's sum is checked (:func:`~fedrec.common.secagg.read_mean_sum`) and gives
    that bucket's mean of users' means, and μ is their trimmed mean
    (:func:`~fedrec.server.mean.trimmed_mean`): a hostile device moves one bucket, which is
    trimmed or weighs one bucket's share."""

    def __init__(self, secagg: SecAggPlusWorkflow, strategy: SecAggFedRec, bucket_size: int,
                 seed: int = 0) -> None:
        self.secagg, self.strategy = secagg, strategy
        self.bucket_size, self.seed = max(MIN_DEVICES, bucket_size), seed

    def __call__(self, grid: Grid, context: Context) -> None:
        s = self.strategy
        if s.explicit and s.bucket is None and not s.buckets:
            s.model.params.mean = self.query(grid, context)
        self.secagg(grid, context)

    def query(self, grid: Grid, context: Context) -> float:
        """μ: one secure sum per bucket, each checked, their trimmed mean."""
        s = self.strategy
        nodes = [p.node_id for p in context.client_manager.all().values()]
        for bucket in split_buckets(nodes, self.bucket_size, self.seed):
            s.bucket = bucket
            self.secagg(grid, context)
        s.bucket = None
        mean = trimmed_mean(s.buckets, s.rating_range)
        log(INFO, "global mean %.4f from %s buckets of about %s devices", mean,
            len(s.buckets), self.bucket_size)
        return mean


def legacy_context(grid: Grid, strategy: SecAggFedRec, num_rounds: int, timeout: float,
            context: Context | None, seed: int) -> LegacyContext:
    """The legacy context Flower's SecAgg+ workflow runs in (seeded: the legacy client
    manager and SecAgg+ draw from ``random``)."""
    random.seed(seed)
    if context is None:
        context = Context(run_id=grid.run.run_id, node_id=0, node_config={},
                          state=RecordDict(), run_config={})
    return LegacyContext(context=context,
                         config=ServerConfig(num_rounds=num_rounds, round_timeout=timeout),
                         strategy=strategy)


def secagg_mean(grid: Grid, strategy: SecAggFedRec, num_shares: float, threshold: float,
                timeout: float, seed: int = 0, bucket_size: int = 16) -> float:
    """The secagg mode's μ query alone (what :class:`MeanFirst` runs before round 1), on
    the grid's connected devices; the buckets' sums stay in ``strategy.buckets``."""
    legacy = legacy_context(grid, strategy, 1, timeout, None, seed)
    thread, stop, done = start_update_client_manager_thread(grid, legacy.client_manager)
    try:
        done.wait()
        default_init_params_workflow(grid, legacy)
        legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
            {WorkflowKey.CURRENT_ROUND: 0})
        fit = MeanFirst(secagg_workflow(num_shares, threshold, timeout), strategy,
                        bucket_size, seed)
        return fit.query(grid, legacy)
    finally:
        stop.set()
        thread.join()


def run_secagg(grid: Grid, strategy: SecAggFedRec, num_rounds: int, num_shares: float,
               threshold: float, timeout: float, context: Context | None = None,
               seed: int = 0, bucket_size: int = 16) -> SecAggFedRec:
    """Train ``num_rounds`` rounds with SecAgg+ on ``grid``; returns the strategy."""
    legacy = legacy_context(grid, strategy, num_rounds, timeout, context, seed)
    fit = MeanFirst(secagg_workflow(num_shares, threshold, timeout), strategy, bucket_size,
                    seed)
    DefaultWorkflow(fit_workflow=fit)(grid, legacy)
    return strategy
