"""fedrec's Flower ServerApp: set up the item model, learn μ, run the FedRec strategy.

``run(grid, settings)`` is the whole server side of a run, callable on any Flower ``Grid``
(Flower's simulation or deployment runtime, or fedrec's in-process engine). With
``results-dir`` set, it writes the final item table (``model.npz``) and the per-round
history (``history.json``) there, atomically.
"""

from __future__ import annotations

import json
from logging import INFO
from pathlib import Path

import numpy as np
from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from fedrec.common.atomic import atomic_open
from fedrec.common.keyfile import read_key_file
from fedrec.common.models import PAIRS, model_kind
from fedrec.common.params import ItemParams
from fedrec.common.partition import simulated_partitions
from fedrec.common.segments import Segments
from fedrec.common.settings import RunSettings
from fedrec.server.checkpoint import Checkpoint
from fedrec.server.defences import build_defences
from fedrec.server.item_model import ItemModel
from fedrec.server.layers import build_layers
from fedrec.server.listings import Listings
from fedrec.server.mean import fallback_mean, query_mean
from fedrec.server.pairs import PairsRun, run_pairs
from fedrec.server.rounds import RoundLoop
from fedrec.server.secagg import SecAggFedRec, run_secagg
from fedrec.server.secagg_dp import DdpConfig, SecAggDpFedRec, run_secagg_dp
from fedrec.server.stopping import EarlyStop
from fedrec.server.strategy import FedRec
from fedrec.server.wait import wait_for_nodes

app = ServerApp()
UNTIL_STOPPED = 2**40  # rounds a num-rounds=0 server runs: until `flwr stop` or a signal


@app.main()
def main(grid: Grid, context: Context) -> None:
    run(grid, RunSettings.from_run_config(dict(context.run_config)), context)


def catalogue(settings: RunSettings) -> tuple[int, tuple[float, float]]:
    """The catalogue size and rating scale the server needs (public shop metadata; in
    simulation read from the dataset, of which the server uses nothing else)."""
    parts = simulated_partitions(settings.dataset, settings.protocol, settings.fold,
                                 settings.data_dir)
    return parts.n_items, parts.rating_range


def item_categories(settings: RunSettings) -> np.ndarray | None:
    """Each item's category, when the catalogue gives items one category each (the
    synthetic shop); None otherwise (MovieLens items have several genres). Devices get it
    with the table, for the app's category filter."""
    parts = simulated_partitions(settings.dataset, settings.protocol, settings.fold,
                                 settings.data_dir)
    features = parts.split.train.item_features
    if features is None or not len(features.matrix):
        return None
    m = features.matrix
    if not ((m != 0).sum(axis=1) == 1).all():
        return None
    category = m.argmax(axis=1)
    return category.astype(np.int16 if category.max() < 2**15 else np.int64)


def training_segments(settings: RunSettings) -> Segments | None:
    """The imbalance segments a simulation's evaluation reports (light and heavy users,
    the tail: :mod:`fedrec.common.segments`), drawn up from the dataset's training split
    as the centralized model's are, so both are measured alike; None for ratings (they
    report errors, not rankings) and in padded modes (a segment tells activity)."""
    if settings.explicit or settings.mode.padded:  # (a padded mode hides activity)
        return None
    parts = simulated_partitions(settings.dataset, settings.protocol, settings.fold,
                                 settings.data_dir, settings.validation)
    return Segments.of(parts.split.train)


def open_checkpoint(settings: RunSettings) -> Checkpoint | None:
    """The run's checkpoint (None without one), with the operator's key when given."""
    if not settings.checkpoint:
        if settings.checkpoint_key_file or settings.checkpoint_fresh:
            raise ValueError("checkpoint-key-file and checkpoint-fresh need a checkpoint")
        return None
    key = read_key_file(settings.checkpoint_key_file) if settings.checkpoint_key_file else None
    return Checkpoint(settings.checkpoint, key=key, fresh=settings.checkpoint_fresh)


def new_model(settings: RunSettings, n_items: int, mean: float) -> ItemModel:
    """A fresh item model: the run's seed, size, initial spread and server step rule."""
    rng = np.random.default_rng(settings.seed)
    params = ItemParams.init(n_items, settings.factors, rng, settings.init_std, mean=mean)
    return ItemModel(params, settings.server_optimizer, settings.server_lr,
                     *settings.server_bias_step, halving=settings.server_step_halving)


def build_strategy(settings: RunSettings, n_items: int, mean: float,
                   rating_range: tuple[float, float], checkpoint: Checkpoint | None = None,
                   model: ItemModel | None = None, round_offset: int = 0,
                   history: list[dict] | None = None) -> FedRec:
    """The run's strategy around a new item model (or ``model``, resumed)."""
    model = model or new_model(settings, n_items, mean)
    return FedRec(model, settings.train_config(), fraction_train=settings.fraction_train,
                  fraction_evaluate=settings.fraction_evaluate,
                  min_available_nodes=settings.min_nodes, weighting=settings.weighting,
                  cap=settings.cap, max_norm=settings.max_norm, seed=settings.seed,
                  rating_range=rating_range, evaluate_every=settings.evaluate_every,
                  num_rounds=settings.num_rounds, wait_timeout=settings.round_timeout,
                  layers=build_layers(settings, n_items), checkpoint=checkpoint,
                  round_offset=round_offset, history=history, sync=settings.sync,
                  sync_threshold=settings.sync_threshold, privacy=settings.privacy,
                  defences=build_defences(settings.defences, settings.seed),
                  round_every=settings.round_every,
                  pool_rounds=settings.negative_pool_rounds,
                  similarity=settings.ranked_similarity)


def resume_strategy(settings: RunSettings, saved: tuple, rating_range: tuple[float, float],
                    checkpoint: Checkpoint) -> FedRec:
    """The strategy of a run resumed from its checkpoint: the saved model (table, versions,
    optimiser state, μ), its rounds counted on, its history and privacy spend kept."""
    model, last_round, history, run = saved
    if model.params.n_factors != settings.factors:
        raise ValueError(f"{checkpoint.path}: the checkpoint has {model.params.n_factors} "
                         f"factors, the run asks {settings.factors}")
    strategy = build_strategy(settings, model.n_items, model.params.mean, rating_range,
                              checkpoint, model, last_round, history)
    strategy.rejected.update(run.get("rejected", {}))
    strategy.set_aside.update(run.get("set-aside", {}))
    strategy.load_sync_state(run)
    for layer in strategy.layers:
        layer.load(run)
    for defence in strategy.defences:
        defence.load(run)
    return strategy


def run(grid: Grid, settings: RunSettings, context: Context | None = None,
        clear_sum: bool = False) -> FedRec | SecAggFedRec | SecAggDpFedRec | PairsRun:
    """Run a whole federated training on ``grid``; returns the strategy (model + history).
    ``clear_sum`` (simulations only, never from a run config): secagg+dp sums the devices'
    noisy vectors as SecAgg+ would, without masks."""
    import random

    random.seed(settings.seed)  # FedAvg's node sampling draws from `random`
    if model_kind(settings.model) is PAIRS:
        run = run_pairs(grid, settings, catalogue(settings)[0], training_segments(settings))
        if settings.results_dir:
            run.save(Path(settings.results_dir), settings)
        return run
    runner = settings.mode.runner
    if runner == "fedrec":
        strategy = run_fedrec(grid, settings)
    elif runner == "secagg":
        strategy = run_secagg_mode(grid, settings, context)
    elif runner == "secagg+dp":
        strategy = run_secagg_dp_mode(grid, settings, context, clear_sum)
    else:
        raise ValueError(f"privacy={settings.privacy} names an unknown runner {runner!r}")
    if settings.results_dir:
        save_results(strategy, Path(settings.results_dir), settings)
    return strategy


def open_listings(settings: RunSettings) -> Listings | None:
    """The run's catalogue file, read and checked (None without one)."""
    if not settings.catalogue:
        return None
    return Listings(settings.catalogue, explicit=settings.explicit,
                    init_std=settings.init_std, seed=settings.seed)


def shop_rating_range(settings: RunSettings) -> tuple[float, float]:
    """The rating scale of a shop run from its catalogue file (no dataset to read it
    from): the run's ``rating-min``/``rating-max`` for ratings, 1 for implicit events."""
    return (settings.rating_min, settings.rating_max) if settings.explicit else (1.0, 1.0)


def run_fedrec(grid: Grid, settings: RunSettings) -> FedRec:
    """The sparse modes (plain and its layers: decoy, dp): the FedRec strategy, resumed
    from its checkpoint when there is one; with a catalogue file, over the shop's items,
    watched for new listings between rounds."""
    listings = open_listings(settings)
    if listings is None:
        n_items, rating_range = catalogue(settings)
    else:
        n_items, rating_range = listings.n_items, shop_rating_range(settings)
    checkpoint = open_checkpoint(settings)
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is None:
        strategy = build_strategy(settings, n_items, 0.0, rating_range, checkpoint)
        if settings.explicit:  # (the query's refusals are counted with the run's)
            strategy.model.params.mean = query_mean(grid, strategy.bounds,
                                                    settings.round_timeout,
                                                    strategy.refusals, settings.min_nodes)
    else:
        strategy = resume_strategy(settings, saved, rating_range, checkpoint)
        if listings is not None:
            listings.check_resumed(saved[3], strategy.model.n_items, str(checkpoint.path))
    if listings is not None:
        strategy.listings = listings  # (items listed while the server was down: grown now)
        listings.refresh(strategy.model, strategy.static, strategy.round_offset)
        n_items = strategy.model.n_items
    else:
        categories = item_categories(settings)
        if categories is not None and len(categories) == strategy.model.n_items:
            strategy.static["category"] = categories
        strategy.segments = training_segments(settings)
    if settings.stop_patience:
        strategy.stopper = EarlyStop.for_run(settings.stop_patience, settings.explicit)
        if saved is not None:
            try:
                strategy.load_stop_state(saved[3], saved[1])
            except ValueError as exc:
                raise ValueError(f"{checkpoint.path}: {exc}") from None
    log(INFO, "fedrec: %s items, %s factors, global mean %.4f, from round %s", n_items,
        settings.factors, strategy.model.params.mean, strategy.round_offset + 1)
    remaining = settings.num_rounds - strategy.round_offset if settings.num_rounds \
        else UNTIL_STOPPED
    if strategy.stopper is not None and strategy.stopper.stopped:
        log(INFO, "early stopping: the run stopped at round %s (best round %s); it trains "
            "no further", strategy.round_offset, strategy.stopper.best_round)
        remaining = 0
    if remaining > 0:
        RoundLoop(strategy, grid, settings.round_timeout).run(remaining)
    return strategy


def secagg_strategy(settings: RunSettings, n_items: int,
                    rating_range: tuple[float, float]) -> SecAggFedRec:
    """The secagg mode's strategy around a new item model."""
    return SecAggFedRec(new_model(settings, n_items, fallback_mean(rating_range)
                                  if settings.explicit else 0.0),
                        settings.train_config(), fraction_train=settings.fraction_train,
                        fraction_evaluate=settings.fraction_evaluate,
                        min_available_nodes=settings.min_nodes,
                        weighting=settings.weighting, cap=settings.cap, seed=settings.seed,
                        rating_range=rating_range, evaluate_every=settings.evaluate_every,
                        num_rounds=settings.num_rounds, explicit=settings.explicit,
                        max_norm=settings.max_norm, block_size=settings.secagg_rows,
                        similarity=settings.ranked_similarity)


def run_secagg_mode(grid: Grid, settings: RunSettings, context: Context | None
                    ) -> SecAggFedRec:
    """The secagg mode: Flower's SecAgg+ workflow around :class:`SecAggFedRec`. μ (explicit
    runs) comes from the bucketed mean query before round 1: no device reports its own
    statistics, and no device's sum decides it."""
    n_items, rating_range = catalogue(settings)
    strategy = secagg_strategy(settings, n_items, rating_range)
    wait_for_nodes(grid, settings.min_nodes, settings.round_timeout)
    return run_secagg(grid, strategy, settings.num_rounds, settings.secagg_shares,
                      settings.secagg_threshold, settings.round_timeout, context, settings.seed,
                      settings.secagg_bucket)


def ddp_config(settings: RunSettings, rating_range: tuple[float, float] = (1.0, 5.0)
               ) -> DdpConfig:
    """The secagg+dp mode's settings."""
    return DdpConfig(epsilon=settings.dp_epsilon, delta=settings.dp_delta,
                     rounds=settings.num_rounds, rows=settings.ddp_rows,
                     select_share=settings.ddp_select_share, bits=settings.ddp_bits,
                     provisioned=settings.ddp_provisioned, user_reg=settings.ddp_user_reg,
                     item_reg=settings.ddp_item_reg, ratings=settings.explicit,
                     select_values=settings.ddp_select_values,
                     rating_range=rating_range)


def ddp_strategy(settings: RunSettings, n_items: int,
                 rating_range: tuple[float, float] = (1.0, 5.0)) -> SecAggDpFedRec:
    """The secagg+dp strategy of a run, its table fresh from the run's seed; the server's
    step sets the rows it solves (SGD with rate 1 on old − new)."""
    rng = np.random.default_rng(settings.seed)
    params = ItemParams.init(n_items, settings.factors, rng, settings.init_std)
    return SecAggDpFedRec(ItemModel(params, "sgd", 1.0), ddp_config(settings, rating_range),
                          fraction_train=settings.fraction_train,
                          min_available_nodes=settings.min_nodes, seed=settings.seed)


def run_secagg_dp_mode(grid: Grid, settings: RunSettings, context: Context | None,
                       clear_sum: bool = False) -> SecAggDpFedRec:
    """The secagg+dp mode: user-level DP over SecAgg+ (:mod:`fedrec.server.secagg_dp`).
    The server's step sets the rows it solves (SGD with rate 1 on old − new)."""
    n_items, rating_range = catalogue(settings)
    strategy = ddp_strategy(settings, n_items, rating_range)
    wait_for_nodes(grid, settings.min_nodes, settings.round_timeout)
    return run_secagg_dp(grid, strategy, settings.secagg_shares, settings.secagg_threshold,
                         settings.round_timeout, context, settings.seed, clear_sum)


def ranking_arrays(strategy: FedRec | SecAggFedRec | SecAggDpFedRec, n_items: int
                   ) -> dict[str, np.ndarray]:
    """How the run's devices rank (:mod:`fedrec.common.ranking`), for an app that fetches
    ``model.npz`` without a SuperNode (``EdgeClient.set_table(..., head=, tail_bonus=,
    similarity=)``): the head as a mask over the items (all False: none), the tail bonus
    and the similarity's weight (0: not used)."""
    layer = strategy.layer("head") if isinstance(strategy, FedRec) else None
    head = np.zeros(n_items, dtype=bool)
    if layer is not None:
        counted = layer.head()[:n_items]
        head[:len(counted)] = counted
    bonus = float(layer.bonus) if layer is not None and head.any() else 0.0
    return {"head": head, "tail_bonus": np.array(bonus),
            "similarity": np.array(float(getattr(strategy, "similarity", 0.0)))}


def save_results(strategy: FedRec | SecAggFedRec | SecAggDpFedRec, folder: Path,
                 settings: RunSettings) -> None:
    """Write ``model.npz`` and ``history.json`` into ``folder`` through temp files."""
    folder.mkdir(parents=True, exist_ok=True)
    p = strategy.model.params
    with atomic_open(folder / "model.npz", "wb") as out:
        np.savez(out, factors=p.factors, bias=p.bias, mean=np.array(p.mean),
                 version=strategy.model.version, **ranking_arrays(strategy, p.n_items))
    history = {"settings": settings.to_run_config(), "rounds": strategy.history,
               "rejected": dict(strategy.rejected),
               "defences": [d.name for d in getattr(strategy, "defences", [])],
               "set_aside": dict(getattr(strategy, "set_aside", {})),
               "epsilon": strategy.epsilon,
               "delta": settings.dp_delta if settings.mode.noised else None}
    with atomic_open(folder / "history.json") as out:
        json.dump(history, out, indent=1)
