"""``secagg+dp`` runs for the privacy bench: the federated run on the in-process engine
(through real SecAgg+, or its arithmetic without masks for runs too large for one
machine), its quality measured the way a device would score, and the choice of its
settings on the validation split.

Nothing leaves a device in this mode but the noisy sums, so there is no federated
evaluation to read: the simulation, which holds every user's held-out events, scores the
final table as each device would (its user vector solved against the table, every item
it has not trained on ranked) and averages over users with a held-out item, as
:func:`~fedrec.server.strategy.pool_evaluation` does.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
from flwr.app import Context
from flwr.common.logger import FLOWER_LOGGER
from flwr.serverapp import Grid, ServerApp

from fedrec.client.app import app as client_app
from fedrec.client.device import Device, UserState
from fedrec.common import als
from fedrec.common.params import ItemParams
from fedrec.common.partition import Partitions, simulated_partitions
from fedrec.common.settings import RunSettings
from fedrec.server.app import run
from fedrec.server.secagg_dp import SecAggDpFedRec
from fedrec.simulations.engines.inprocess import Observer, run_in_process

Progress = Callable[[str, int, int], None]

# What tune() tries, at the run's ε, on the validation split.
TUNING_GRID = {"factors": (8, 16), "ddp_rows": (150, 300, 600), "num_rounds": (1, 2, 3),
               "ddp_item_reg": (3.0, 10.0), "ddp_user_reg": (0.3, 1.0)}
RATING_GRID = {"factors": (1, 2), "ddp_rows": (100_000,), "num_rounds": (1, 2),
               "ddp_item_reg": (0.3, 1.0, 3.0), "ddp_user_reg": (5.0, 50.0)}


def partitions(settings: RunSettings) -> Partitions:
    return simulated_partitions(settings.dataset, settings.protocol, settings.fold,
                                settings.data_dir, settings.validation)


def evaluate_solved(params: ItemParams, parts: Partitions, user_reg: float,
                    k: int = 10, explicit: bool = False) -> dict[str, float]:
    """Held-out metrics of ``params`` with each user's vector solved as its device solves it
    (:func:`~fedrec.common.als.user_solve`; for ratings
    :func:`~fedrec.common.als.rating_user_solve`, then RMSE and MAE over every held-out
    rating, predictions clipped to the scale)."""
    rows = []
    for uid in range(parts.n_users):
        user = parts.user(uid)
        if not len(user.test_items):
            continue
        if explicit:
            vector, bias = als.rating_user_solve(params.factors, params.bias, params.mean,
                                                 user.train_items, user.train_values,
                                                 user_reg)
            device = Device(user.train_items, user.train_values,
                            state=UserState(vector.astype(np.float32), bias))
            rows.append(device.evaluate_ratings(params.factors, params.bias, params.mean,
                                                user.test_items, user.test_values,
                                                parts.rating_range))
            continue
        vector = als.user_solve(params.factors, params.bias, np.unique(user.train_items),
                                user_reg)
        device = Device(user.train_items, state=UserState(vector.astype(np.float32), 0.0))
        rows.append(device.evaluate_ranking(params.factors, params.bias, user.test_items, k))
    if explicit:
        n = sum(r["num-examples"] for r in rows)
        return {"rmse": float(np.sqrt(sum(r["sq-err"] for r in rows) / n)),
                "mae": float(sum(r["abs-err"] for r in rows) / n), "num-examples": float(n)}
    keys = [key for key in rows[0] if "@" in key] if rows else []
    out = {key: float(np.mean([r[key] for r in rows])) for key in keys}
    out["num-users"] = float(len(rows))
    return out


def federate(settings: RunSettings, clear: bool, observer: Observer | None = None
             ) -> tuple[SecAggDpFedRec, float]:
    """One secagg+dp run of every device of the dataset on the in-process engine; the
    strategy (model, releases, history) and the run's seconds."""
    if settings.privacy != "secagg+dp":
        raise ValueError(f"this runs secagg+dp; found {settings.privacy!r}")
    parts = partitions(settings)
    held: list[SecAggDpFedRec] = []
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        held.append(run(grid, settings, context, clear_sum=clear))

    config = {**settings.to_run_config(), "min-nodes": parts.n_users}
    start = time.perf_counter()
    level = FLOWER_LOGGER.level
    FLOWER_LOGGER.setLevel(logging.WARNING)
    try:
        run_in_process(server, client_app, parts.n_users, config, observer=observer)
    finally:
        FLOWER_LOGGER.setLevel(level)
    return held[0], time.perf_counter() - start


def run_ddp(settings: RunSettings, clear: bool, observer: Observer | None = None
            ) -> dict:
    """One secagg+dp run (:func:`federate`): its quality, ε and cost."""
    strategy, seconds = federate(settings, clear, observer)
    rounds = len(strategy.history)
    return {**evaluate_solved(strategy.model.params, partitions(settings),
                              settings.ddp_user_reg, explicit=settings.explicit),
            "epsilon": strategy.epsilon, "delta": settings.dp_delta,
            "sum": "clear (SecAgg+'s arithmetic, no masks)" if clear else "SecAgg+",
            "rounds": rounds, "seconds_per_round": seconds / max(1, rounds),
            "noise": strategy.noise, "rows": len(strategy.layout.rows),
            "rejected": dict(strategy.rejected), "history": strategy.history}


def tune(settings: RunSettings, grid: dict[str, tuple] | None = None,
         progress: Progress | None = None, metric: str | None = None,
         fast: bool = False) -> dict:
    """The best settings of ``grid`` at the run's ε by ``metric`` (NDCG@10, or RMSE for a
    rating protocol) on the validation split (clear sums: the arithmetic is SecAgg+'s, bit
    for bit, and 20× faster; ``fast``: the vectorised run of
    :mod:`~fedrec.simulations.models.ddp_fast`, implicit models only)."""
    if grid is None:
        grid = RATING_GRID if settings.explicit else TUNING_GRID
    if metric is None:
        metric = "rmse" if settings.explicit else "ndcg@10"
    empty = [name for name, values in grid.items() if not len(values)]
    if not grid or empty:
        raise ValueError(f"tune-ddp: every grid setting needs at least one value; "
                         f"{', '.join(empty) or 'the grid'} has none")
    names = list(grid)
    trials = []
    combos = list(itertools.product(*(grid[name] for name in names)))
    for i, values in enumerate(combos):
        trial = replace(settings, validation=True, **dict(zip(names, values, strict=True)))
        if fast:
            from fedrec.simulations.models.ddp_fast import evaluate_fast, fast_run

            result = evaluate_fast(fast_run(trial).model.params, partitions(trial),
                                   trial.ddp_user_reg)
        else:
            result = run_ddp(trial, clear=True)
        trials.append({**dict(zip(names, values, strict=True)), metric: result[metric]})
        if progress:
            progress(f"tuning secagg+dp at epsilon {settings.dp_epsilon:g}", i + 1,
                     len(combos))
    sign = -1.0 if metric in ("rmse", "mae") else 1.0
    best = max(trials, key=lambda t: sign * t[metric])
    return {"best": {name: best[name] for name in names}, "validation": best[metric],
            "trials": trials, "run": "fast (simulations.ddp_fast)" if fast else "clear sums"}
