"""``fedrec bench mean-shift``: how far one hostile device moves the global mean μ of an
explicit model, in the ``plain`` and the ``secagg`` mode, measured on the real query paths.

* ``plain``: every device answers the query with its mean rating, one weight each
  (:mod:`fedrec.server.mean`). The worst a device can do is claim an end of the rating
  scale: the bench finds the device and end that move μ most (from every device's own
  mean), runs the query with that device lying, and with it sending garbage (refused).
* ``secagg``: each bucket of devices is summed by Flower's SecAgg+; a malicious device can
  add any integers to its masked vector, so it can set its bucket's sum to anything. The
  bench runs the query, then for every bucket the worst it could do (its mean at either
  end of the scale, the sum still passing every check), and runs the query again with the
  device that does the worst of these adding exactly what it takes to its masked vector,
  and once with it adding garbage.

Every figure is from the same run's honest query: the shift is the hostile μ minus it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common.logger import FLOWER_LOGGER
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.compat.common.parameter import bytes_to_ndarray, ndarray_to_bytes

from fedrec.client.app import app as client_app
from fedrec.client.app import train as client_train
from fedrec.common import records
from fedrec.common.partition import simulated_partitions
from fedrec.common.replies import Bounds
from fedrec.common.secagg import BucketMean
from fedrec.common.settings import RunSettings
from fedrec.server.app import new_model
from fedrec.server.mean import fallback_mean, query_mean, trimmed_mean
from fedrec.server.replies import Refusals
from fedrec.server.secagg import SecAggFedRec, secagg_mean, split_buckets
from fedrec.simulations.benches.hostile import raw_record
from fedrec.simulations.engines.inprocess import InProcessGrid

QUANTIZATION = 2**22  # SecAgg+'s defaults, which fedrec's workflow keeps
CLIPPING = 8.0
MODULUS = 2**32


class LyingQueryGrid(InProcessGrid):
    """The in-process engine with one node's query reply replaced."""

    def __init__(self, *args: object, liar: int, reply: dict, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.liar, self.reply = liar, reply

    def send_and_receive(self, messages: object, *, timeout: float | None = None) -> list:
        out = []
        for reply in super().send_and_receive(messages, timeout=timeout):
            if reply.metadata.src_node_id == self.liar:
                reply = Message(RecordDict({records.METRICS: raw_record(MetricRecord(),
                                                                         self.reply)}),
                                reply_to=_request_of(messages, self.liar))
            out.append(reply)
        return out


def _request_of(messages: list[Message], node: int) -> Message:
    return next(m for m in messages if m.metadata.dst_node_id == node)


def hostile_secagg_app(run_config: dict, hostile: int, add: Callable[[], np.ndarray]
                       ) -> ClientApp:
    """fedrec's ClientApp, but node ``hostile`` adds ``add()`` (integers) to the masked
    vector it uploads in SecAgg+ (what a device that does not run the protocol honestly
    can do)."""
    app = ClientApp()

    def mod(msg: Message, context: Context, call_next: object) -> Message:
        if RECORD_KEY_CONFIGS not in msg.content.config_records:
            return call_next(msg, context)
        reply = secaggplus_mod(msg, context, call_next)
        configs = reply.content.config_records.get(RECORD_KEY_CONFIGS)
        if context.node_id == hostile and configs and Key.MASKED_PARAMETERS in configs:
            vector = [bytes_to_ndarray(b) for b in configs[Key.MASKED_PARAMETERS]]
            vector[1] = (vector[1].astype(np.int64) + add()) % MODULUS
            configs[Key.MASKED_PARAMETERS] = [ndarray_to_bytes(v.astype(vector[0].dtype))
                                              for v in vector]
        return reply

    @app.train(mods=[mod])
    def _train(msg: Message, context: Context) -> Message:
        return client_train(msg, context, run_config)

    return app


def worst_over_bucketings(means: dict[int, float], nodes: list[int], bucket: int,
                          rating_range: tuple[float, float], seed: int = 0,
                          draws: int = 100) -> dict:
    """The secagg mode's arithmetic over ``draws`` other random bucketings of the same
    devices (bucket means from the devices' own means, as exact sums would give them):
    the worst shift one device's bucket at either end of the scale can cause."""
    lo, hi = rating_range
    worst, seed_of_worst = 0.0, 0
    for draw in range(seed + 1, seed + 1 + draws):  # (the run's own draw is ``seed``)
        buckets = []
        for part in split_buckets(nodes, bucket, draw):
            rated = [means[n] for n in part if n in means]
            buckets.append(BucketMean(len(part), float(len(rated)),
                                      float(np.mean(rated)) if rated else float("nan")))
        honest = trimmed_mean(buckets, rating_range)
        for g, b in enumerate(buckets):
            if not b.rated:
                continue
            for end in (lo, hi):
                moved = [*buckets[:g], BucketMean(b.devices, b.rated, end), *buckets[g + 1:]]
                shift = abs(trimmed_mean(moved, rating_range) - honest)
                if shift > worst:
                    worst, seed_of_worst = shift, draw
    return {"draws": draws, "shift": worst, "draw": seed_of_worst}


def _grid(app: ClientApp, n: int, config: dict, cls: type = InProcessGrid,
          **extra: object) -> InProcessGrid:
    grid = cls(app, n, config, **extra)
    return grid


def bench_mean_shift(dataset: str = "ml-100k", data_dir: str = "", bucket: int = 16,
                     shares: float = 5.0, seed: int = 0,
                     progress: Callable[[str, int, int], None] | None = None,
                     attacks: bool = True) -> dict:
    """The record: honest μ, and each hostile case's μ and shift, per mode. Without
    ``attacks``, the secagg mode's worst case is computed from the honest buckets only
    (what the attack runs reproduce)."""
    settings = RunSettings(dataset=dataset, protocol="explicit-80-20", data_dir=data_dir,
                           privacy="secagg", secagg_shares=shares, secagg_bucket=bucket,
                           seed=seed)
    parts = simulated_partitions(dataset, settings.protocol, 0, data_dir)
    n, rr = parts.n_users, parts.rating_range
    lo, hi = rr
    config = settings.to_run_config()
    nodes = list(range(1001, 1001 + n))
    means = {node: float(parts.user(pid).train_values.mean())
             for pid, node in enumerate(nodes) if len(parts.user(pid).train_values)}
    level = FLOWER_LOGGER.level
    FLOWER_LOGGER.setLevel(logging.ERROR)
    out: dict = {"bench": "mean-shift", "dataset": dataset, "devices": n,
                 "rated_devices": len(means), "rating_range": [lo, hi]}
    try:
        # ---- plain ------------------------------------------------------------------------
        step = (lambda label, i: progress(label, i, 4)) if progress else (lambda *_: None)
        step("plain", 0)
        honest = query_mean(_grid(client_app, n, config), Bounds(rr), 60.0, Refusals(), n)
        worst = max(((abs(end - m), node, end) for node, m in means.items()
                     for end in (lo, hi)))
        _, liar, end = worst
        lied = query_mean(_grid(client_app, n, config, LyingQueryGrid, liar=liar,
                                reply={"rated": 1.0, "rating-mean": end}),
                          Bounds(rr), 60.0, Refusals(), n)
        refusals = Refusals()
        garbage = query_mean(_grid(client_app, n, config, LyingQueryGrid, liar=liar,
                                   reply={"rated": 1.0, "rating-mean": 1e7}),
                             Bounds(rr), 60.0, refusals, n)
        out["plain"] = {
            "honest_mean": honest, "bound": (hi - lo) / len(means),
            "worst_liar": {"node": liar, "claims": end, "mean": lied,
                           "shift": abs(lied - honest)},
            "garbage": {"mean": garbage, "shift": abs(garbage - honest),
                        "refused": dict(refusals.counts)}}
        # ---- secagg -----------------------------------------------------------------------
        step("secagg: honest buckets", 1)

        def strategy() -> SecAggFedRec:
            return SecAggFedRec(new_model(settings, parts.n_items, fallback_mean(rr)),
                                settings.train_config(), rating_range=rr, explicit=True,
                                seed=seed)

        honest_s = strategy()
        mu = secagg_mean(_grid(client_app, n, config), honest_s, shares, 0.5, 120.0, seed,
                         bucket)
        buckets = honest_s.buckets
        members = split_buckets(nodes, bucket, seed)
        shifts = []
        for g, b in enumerate(buckets):
            for end in (lo, hi):
                moved = [*buckets[:g], BucketMean(b.devices, b.rated, end), *buckets[g + 1:]]
                shifts.append((abs(trimmed_mean(moved, rr) - mu), g, end))
        shift, g, end = max(shifts)
        hostile = members[g][0]
        # Its bucket's position sum must become rated × (end − lo) / width: add the gap.
        gap = buckets[g].rated * ((end - lo) / (hi - lo)) - buckets[g].rated * (
            (buckets[g].mean - lo) / (hi - lo))
        delta = np.array([0, round(gap * QUANTIZATION / (2 * CLIPPING))], np.int64)
        out["secagg"] = {
            "honest_mean": mu, "buckets": len(buckets), "bucket_size": bucket,
            "worst_over_buckets": {"shift": shift, "bucket": g, "claims": end},
            "worst_over_bucketings": worst_over_bucketings(means, nodes, bucket, rr, seed),
            "true_mean_of_means": float(np.mean(list(means.values())))}
        if not attacks:
            return out
        step("secagg: the worst hostile device", 2)
        attacked = strategy()
        mu_hostile = secagg_mean(_grid(hostile_secagg_app(config, hostile, lambda: delta),
                                       n, config), attacked, shares, 0.5, 120.0, seed, bucket)
        step("secagg: garbage", 3)
        rng = np.random.default_rng(seed)
        noisy = strategy()
        mu_garbage = secagg_mean(_grid(hostile_secagg_app(
            config, hostile, lambda: rng.integers(0, MODULUS, 2)), n, config), noisy,
            shares, 0.5, 120.0, seed, bucket)
        out["secagg"].update({
            "worst_hostile_device": {"node": int(hostile), "mean": mu_hostile,
                                     "shift": abs(mu_hostile - mu),
                                     "refused": dict(attacked.rejected)},
            "garbage": {"mean": mu_garbage, "shift": abs(mu_garbage - mu),
                        "refused": dict(noisy.rejected)}})
        step("done", 4)
    finally:
        FLOWER_LOGGER.setLevel(level)
    return out
