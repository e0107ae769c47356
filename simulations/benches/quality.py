"""``fedrec bench quality``: the centralized model beside simple baselines, on one protocol.

Every model is fitted on the same training rows and scored on the same held-out rows of
:func:`fedrec.common.split.split`, in one run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from fedrec.common.data.interactions import Interactions
from fedrec.common.mf import MatrixFactorization, MFConfig
from fedrec.common.split import Split, is_explicit, split
from fedrec.simulations.benches.simulate import simulate
from fedrec.simulations.models.centralized import evaluate, fit, make_model
from fedrec.simulations.models.presets import mf_config, preset_settings

EXPLICIT_MODELS = ("global-mean", "bias", "centralized-mf", "federated-mf")
IMPLICIT_MODELS = ("popularity", "centralized-mf", "federated-mf", "centralized-pairs")
DEFAULT_MODELS = ("global-mean", "bias", "popularity", "centralized-mf")

Progress = Callable[[str, int, int], None]  # (what, done, total)


def models_for(protocol: str) -> tuple[str, ...]:
    """Every model the protocol can score."""
    return EXPLICIT_MODELS if is_explicit(protocol) else IMPLICIT_MODELS


def default_models(protocol: str) -> tuple[str, ...]:
    """What runs without --models: the baselines and the centralized model (federated runs
    take minutes; ask for them with --models)."""
    return tuple(m for m in models_for(protocol) if m in DEFAULT_MODELS)


def federated(data: Interactions, s: Split, data_dir: str | None,
              progress: Progress | None = None) -> dict[str, float]:
    """The federated model's metrics on split ``s``: a full simulation (preset settings) on
    the split's training rows, scored by the devices on their held-out rows."""
    settings = replace(preset_settings(data.name, s.protocol), fold=s.fold,
                       data_dir=str(data_dir or ""))
    record = simulate(settings, progress=progress, centralized=False)
    metrics = dict(record["models"]["federated-mf"])
    metrics.pop("num-examples", None)
    metrics.pop("num-users", None)
    metrics["rounds"] = settings.num_rounds
    return metrics


def bench_quality(data: Interactions, protocol: str, models: tuple[str, ...] | None = None,
                  config: MFConfig | None = None, progress: Progress | None = None,
                  data_dir: str | None = None) -> dict:
    """Fit and score each model on every split of ``protocol``; returns the bench record
    (without ``env``)."""
    models = models or default_models(protocol)
    config = config or mf_config(protocol)
    splits = list(split(data, protocol))
    per_model: dict[str, list[dict[str, float]]] = {m: [] for m in models}
    total = len(splits) * len(models)
    done = 0
    for s in splits:
        for name in models:
            label = f"{name} fold {s.fold}" if len(splits) > 1 else name
            if name == "federated-mf":
                def sub(what: str, _d: int, _t: int, label: str = label,
                        done: int = done) -> None:
                    if progress:
                        progress(f"{label} {what}", done, total)

                per_model[name].append(federated(data, s, data_dir, sub if progress else None))
                done += 1
                continue
            model = make_model(name, config)
            epochs = config.epochs if isinstance(model, MatrixFactorization) else 0

            def tick(epoch: int, _loss: float, label: str = label, epochs: int = epochs,
                     done: int = done) -> None:
                if progress:
                    progress(f"{label} epoch {epoch + 1}/{epochs}", done, total)

            if progress:
                progress(label, done, total)
            start = time.perf_counter()
            fit(model, s.train, tick)
            fit_s = time.perf_counter() - start
            start = time.perf_counter()
            metrics = evaluate(model, s)
            metrics.update(fit_s=fit_s, eval_s=time.perf_counter() - start)
            per_model[name].append(metrics)
            done += 1
    if progress:
        progress("done", done, total)
    out: dict[str, dict] = {}
    for name, rows in per_model.items():
        summary = {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
        if len(rows) > 1:
            summary["folds"] = rows
        out[name] = summary
    return {
        "bench": "quality",
        "dataset": data.name,
        "protocol": protocol,
        "data": {"rows": len(data), "users": data.n_users, "items": data.n_items},
        "split": {"splits": len(splits), "train": len(splits[0].train),
                  "test": len(splits[0].test)},
        "config": {"centralized-mf": config.to_dict()},
        "models": out,
    }
