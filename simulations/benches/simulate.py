"""``fedrec simulate``: a federated run on one machine, beside the centralized model.

Runs fedrec's ServerApp and ClientApp on the in-process engine (or Flower's Ray engine),
one simulated device per user of the dataset, then fits the centralized model on the same
training rows and scores both on the same held-out rows. Results go to JSON, and the
metric per round to a PNG with the centralized figure drawn beside it.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from flwr.common.logger import FLOWER_LOGGER

from fedrec.client.app import app as client_app
from fedrec.client.app import build_client_app
from fedrec.common.models import DEFAULT_MODEL, MF, PAIRS, model_kind
from fedrec.common.params import ItemParams
from fedrec.common.partition import simulated_partitions
from fedrec.common.settings import RunSettings
from fedrec.server.app import app as server_app
from fedrec.simulations.benches.results import save_figure
from fedrec.simulations.engines.inprocess import Observer, run_in_process
from fedrec.simulations.models.centralized import evaluate, fit, make_model
from fedrec.simulations.models.presets import mf_config

ENGINES = ("inprocess", "ray")
Progress = Callable[[str, int, int], None]


def headline(protocol_explicit: bool) -> str:
    return "rmse" if protocol_explicit else "ndcg@10"


def simulate(settings: RunSettings, engine: str = "inprocess",
             progress: Progress | None = None, centralized: bool = True,
             workers: int = 1, observer: Observer | None = None) -> dict:
    """Run the federated simulation and the centralized reference; returns the record."""
    if not settings.num_rounds:
        raise ValueError("num-rounds=0 runs until stopped: that is for a deployed server; "
                         "a simulation needs a number of rounds")
    parts = simulated_partitions(settings.dataset, settings.protocol, settings.fold,
                                 settings.data_dir)
    kind = model_kind(settings.model)
    n_devices = parts.n_users
    per_round = max(1, int(n_devices * settings.fraction_train))
    total = settings.num_rounds * per_round
    done = [0]

    def observe(direction: str, msg: object) -> None:
        if observer is not None:
            observer(direction, msg)
        if direction == "to-server" and msg.metadata.message_type == "train" and progress:
            done[0] += 1
            if done[0] % max(1, per_round // 20) == 0 or done[0] == total:
                rnd = min(settings.num_rounds, 1 + (done[0] - 1) // per_round)
                progress(f"round {rnd}/{settings.num_rounds}", done[0], total)

    # The centralized reference trains in a second process while the simulation runs.
    pool = central = None
    if centralized:
        pool = ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"))
        central = pool.submit(centralized_reference, settings)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            results_dir = settings.results_dir or tmp
            # Every simulated device takes part from round 1 (Ray registers nodes gradually).
            config = {**settings.to_run_config(), "results-dir": results_dir,
                      "min-nodes": n_devices}
            start = time.perf_counter()
            level = FLOWER_LOGGER.level
            FLOWER_LOGGER.setLevel(logging.WARNING)
            try:
                if engine == "inprocess":
                    devices = client_app if workers == 1 else build_client_app
                    run_in_process(server_app, devices, n_devices, config, observer=observe,
                                   workers=workers)
                elif engine == "ray":
                    from fedrec.simulations.engines.ray_engine import run_ray

                    run_ray(n_devices, config)
                else:
                    raise ValueError(f"engine must be one of {', '.join(ENGINES)}. "
                                     f"Found {engine!r}.")
            finally:
                FLOWER_LOGGER.setLevel(level)
            federated_s = time.perf_counter() - start
            history = json.loads((Path(results_dir) / "history.json").read_text())
            solved = None
            if settings.mode.runner == "secagg+dp":  # no federated evaluation: score the
                # final table as each device would (fedrec.simulations.benches.ddp_runs)
                from fedrec.simulations.benches.ddp_runs import evaluate_solved

                table = np.load(Path(results_dir) / "model.npz")
                solved = evaluate_solved(
                    ItemParams(table["factors"], table["bias"], float(table["mean"])), parts,
                    settings.ddp_user_reg, explicit=settings.explicit)
        rounds = history["rounds"]
        evals = [{"round": r["round"], **r["evaluate"]} for r in rounds if "evaluate" in r]
        valid = [{"round": r["round"], **r["validation"]} for r in rounds
                 if "validation" in r]
        stopping = next((r["stopping"] for r in rounds if "stopping" in r), None)
        train = [{"round": r["round"], **r["train"]} for r in rounds if "train" in r]
        record: dict = {
            "bench": "simulate", "dataset": settings.dataset, "protocol": settings.protocol,
            "engine": engine, "workers": workers, "devices": n_devices,
            "devices_per_round": per_round,
            "settings": settings.to_run_config(),
            "model": settings.model,
            "models": {kind.federated: {**(solved if solved is not None else
                                           _last_evaluation(evals, settings.explicit)),
                                        "fit_s": federated_s}},
            "rounds": {"evaluate": evals, "train": train,
                       **({"validation": valid} if valid else {})},
            **({"stopping": stopping} if stopping is not None else {}),
            **({"pairs": {"weight": history["weight"],
                          "validation": rounds[0].get("pairs-weights", {})}}
               if kind is PAIRS and rounds else {}),
            "rejected": history["rejected"],
            "privacy": settings.privacy, "epsilon": history.get("epsilon"),
            "delta": history.get("delta"),
            "upload_bytes_per_device_round": (
                sum(t.get("upload-bytes", 0) for t in train)
                / max(1, sum(t["accepted"] for t in train))),
        }
        if central is not None:
            if progress:
                progress("centralized model", total, total)
            record["models"].update(central.result())
            record["below_baseline"] = below_baseline(record)
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
    return record


def _last_evaluation(evals: list[dict], explicit: bool) -> dict[str, float]:
    """The last round's pooled metrics; the headline is NaN when no device could be scored
    (a diverged model: every device's metrics were non-finite)."""
    last = {k: v for k, v in evals[-1].items() if k != "round"} if evals else {}
    if headline(explicit) not in last:
        last[headline(explicit)] = float("nan")
    return last


def baseline_name(explicit: bool) -> str:
    """The simple baseline a federated model must beat: user+item biases for ratings,
    popularity for implicit feedback."""
    return "bias" if explicit else "popularity"


def centralized_reference(settings: RunSettings, names: tuple[str, ...] | None = None,
                          overrides: dict[str, object] | None = None
                          ) -> dict[str, dict[str, float]]:
    """The same model trained centrally on the same split (the protocol's centralized
    preset with the run's number of factors, and ``overrides`` of its fields) and the
    simple baseline (:func:`baseline_name`), or only the models ``names``. Returns each
    one's metrics and fit time."""
    parts = simulated_partitions(settings.dataset, settings.protocol, settings.fold,
                                 settings.data_dir, settings.validation)
    out = {}
    kind = model_kind(settings.model)
    for name in names or (kind.centralized, baseline_name(settings.explicit)):
        config = {"seed": settings.seed, "n_factors": settings.factors, **(overrides or {})}
        model = make_model(name, mf_config(settings.protocol, **config), settings.pairs_cap)
        start = time.perf_counter()
        fit(model, parts.split.train, None)
        fit_s = time.perf_counter() - start
        out[name] = {**evaluate(model, parts.split, settings.tail_bonus), "fit_s": fit_s}
    return out


def below_baseline(record: dict) -> str | None:
    """Why the federated model is worse than the simple baseline of the same run, or None
    when it is not (or there is no baseline to compare)."""
    explicit = record["protocol"].startswith("explicit")
    key = headline(explicit)
    kind = model_kind(record.get("model", DEFAULT_MODEL))
    fed = record["models"].get(kind.federated, {}).get(key)
    base = record["models"].get(baseline_name(explicit), {}).get(key)
    if fed is None or base is None or not np.isfinite(fed):
        return None
    worse = fed > base if explicit else fed < base
    if not worse:
        return None
    stopping = record.get("stopping")
    hint = ("early stopping kept the best validated round and it is still below: too few "
            "events per device for factors to beat counting them (--set model=pairs counts "
            "which items the same customers took)"
            if stopping else "try --set stop-patience=3 (a run that keeps its best "
            "validated round) or fewer rounds")
    if kind is not MF:
        hint = "the model's one choice was made on the held-out slice and it is still below"
    label = "federated" if kind is MF else f"federated {kind.label}"
    return (f"{label} {key} {fed:.4f} is worse than {baseline_name(explicit)}'s "
            f"{base:.4f} on the same split: {hint}")


def plot(record: dict, path: Path) -> Path:
    """The headline metric per round, with the centralized figure as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    explicit = record["protocol"].startswith("explicit")
    key = headline(explicit)
    evals = record["rounds"]["evaluate"]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    stopping = record.get("stopping")
    kind = model_kind(record.get("model", DEFAULT_MODEL))
    ax.plot([e["round"] for e in evals], [e[key] for e in evals], marker="o",
            label=f"federated {kind.label}" if not stopping else
            f"federated {kind.label}, test (round {stopping['best-round']}'s table, kept)")
    valid = record["rounds"].get("validation", [])
    if valid:
        ax.plot([e["round"] for e in valid], [e.get(key, np.nan) for e in valid],
                marker=".", linestyle=":", label=f"federated {kind.label}, validation slice")
    central = record["models"].get(kind.centralized, {}).get(key)
    if central is not None:
        ax.axhline(central, color="tab:red", linestyle="--",
                   label=f"centralized {kind.label}")
    base = record["models"].get(baseline_name(explicit), {}).get(key)
    if base is not None:
        ax.axhline(base, color="tab:gray", linestyle="--", label=baseline_name(explicit))
    ax.set_xlabel("round")
    ax.set_ylabel(key.upper() if explicit else key)
    ax.set_title(f"{record['dataset']} · {record['protocol']} · "
                 f"{record['devices_per_round']} of {record['devices']} devices per round")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)
