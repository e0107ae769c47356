"""``fedrec bench stream``: every model on the same timeline, each event scored before any
model learns from it. The federated replay (:mod:`fedrec.simulations.engines.replay`, or on Ray
:mod:`fedrec.simulations.engines.ray_replay`) beside the centralized incremental model, periodic
retraining, static models and a simple baseline (:mod:`fedrec.simulations.models.stream`).
"""

from __future__ import annotations

import re
import time
from dataclasses import replace

import numpy as np

from fedrec.client.stream import MODES
from fedrec.common.neighbours import check_catalogue
from fedrec.common.settings import RunSettings
from fedrec.simulations.attacks.stream_freeze import TINY
from fedrec.simulations.attacks.stream_freeze import check as check_freezers
from fedrec.simulations.benches.results import save_figure
from fedrec.simulations.engines.ray_replay import replay_on_ray
from fedrec.simulations.engines.replay import (
    FederatedStream,
    Progress,
    StreamSettings,
    load_timeline,
    rating_range,
)
from fedrec.simulations.models import stream as sb
from fedrec.simulations.models.presets import mf_config


def _centralized_config(s: StreamSettings) -> dict:
    r = s.run
    bias_rule, bias_rule_lr = r.server_bias_step
    return {"n_factors": r.factors, "lr": r.lr, "reg": r.reg, "reg_bias": r.reg_bias,
            "negatives": r.negatives, "negative_weight": r.negative_weight,
            "init_std": r.init_std, "seed": r.seed,
            "item_rule": r.server_optimizer, "item_rule_lr": r.server_lr,
            "bias_rule": bias_rule, "bias_rule_lr": bias_rule_lr,
            "halving": r.server_step_halving, "neighbours": s.neighbours,
            "neighbour_history": s.neighbour_history}


ENGINES = ("inprocess", "ray")
VARIANT_NAME = re.compile(r"[A-Za-z0-9_-]+")


def bench_stream(s: StreamSettings, models: tuple[str, ...] | None = None,
                 progress: Progress | None = None, workers: int = 1,
                 engines: tuple[str, ...] = ("inprocess",),
                 variants: dict[str, RunSettings] | None = None, freezers: int = 0,
                 freeze_norm: float = TINY) -> dict:
    """Every model of the stream bench on the same stream; the record (without ``env``).
    The federated models run on each of ``engines`` (named ``NAME@ray`` on Ray beside
    the in-process engine), and again with each of ``variants``' run settings (named
    ``NAME+VARIANT``), so that two settings are compared in one run. ``freezers``: extra
    devices in every round of the federated models' replays, moving every row at
    ``freeze_norm`` (:mod:`~fedrec.simulations.attacks.stream_freeze`; in process
    only)."""
    unknown = set(engines) - set(ENGINES)
    if unknown or not engines:
        raise ValueError(f"engines must be among {', '.join(ENGINES)}. Found {engines}.")
    check_freezers(freezers, freeze_norm, s.run.max_norm)
    if freezers and ("ray" in engines or workers != 1):
        raise ValueError(f"freezers run on the in-process engine with one worker. Found "
                         f"{freezers} freezers, engines {engines}, workers={workers}.")
    variants = dict(variants or {})
    for key in variants:
        if not VARIANT_NAME.fullmatch(key):
            raise ValueError(f"variant name {key!r}: letters, digits, '-' and '_' only")
    timeline = load_timeline(s)
    ticks = s.ticks(timeline)
    explicit = s.explicit
    rr = rating_range(timeline, explicit)
    n = ticks[-1].stop if ticks else 0  # the events replayed (a prefix, or all)
    window_ticks = max(1, round(len(ticks) * s.window_events / max(1, n)))
    warm_tick = next((t.index for t in ticks if t.start >= s.warmup * n), len(ticks))
    after = slice(warm_tick, None)
    models = models or default_models(explicit, bool(s.neighbours))
    if s.neighbours:
        check_catalogue(timeline.n_items, s.dataset)
    wrong = {"online-bias": "implicit", "recent-popularity": "explicit"}
    for name in models:
        if wrong.get(name) == s.kind:
            raise ValueError(f"model {name!r} does not apply to {s.kind} streams")
    out: dict = {"bench": "stream", "dataset": s.dataset, "kind": s.kind,
                 "events": n, "users": timeline.n_users, "items": timeline.n_items,
                 "ticks": len(ticks), "settings": s.to_dict(),
                 "freezers": {"devices": freezers, "norm": freeze_norm},
                 "after_warmup_from_event": ticks[warm_tick].start if warm_tick < len(ticks)
                 else n, "models": {}, "curves": {}}

    def report(done: int) -> None:
        if progress is not None:
            progress(current[0], done, n)

    current = [""]
    runs = [(name, engine, key) for name in models
            for key in ((None, *variants) if name.startswith("federated") else (None,))
            for engine in (engines if name.startswith("federated") else ("inprocess",))]
    for name, engine, key in runs:
        label = name if engine == "inprocess" or engines == ("ray",) else f"{name}@{engine}"
        label = label if key is None else f"{label}+{key}"
        current[0] = label
        start = time.perf_counter()
        extra: dict = {}
        if name.startswith("federated"):
            variant = _variant(s if key is None else replace(s, run=variants[key]), name)
            if engine == "ray":
                fed = replay_on_ray(variant, progress)
                sums = fed.sums
            else:
                fed = FederatedStream(variant, workers=workers, freezers=freezers,
                                      freeze_norm=freeze_norm)
                sums = fed.replay(progress)
            extra = fed.summary()
            extra["mode"], extra["init"], extra["engine"] = variant.mode, variant.init, engine
            if key is not None:
                extra["variant"] = {"name": key, "run": variant.run.to_run_config()}
        elif name in ("centralized-incremental", "centralized-incremental-mf"):
            plain = replace(s, neighbours=0) if name.endswith("-mf") else s
            sums = sb.centralized_incremental(timeline, ticks, explicit, rr, s.new_days,
                                              _centralized_config(plain), report,
                                              s.neighbour_refresh)
        elif name == "online-bias":
            sums = sb.online_bias(timeline, ticks, rr, s.new_days, report)
        elif name == "recent-popularity":
            sums = sb.recent_popularity(timeline, ticks, s.new_days, s.window_events, report)
        elif name in ("static", "static-foldin", "periodic-retrain"):
            cfg = mf_config("explicit-80-20" if explicit else "implicit-80-20",
                            epochs=s.retrain_epochs, seed=s.run.seed)
            if name.startswith("static"):
                fit_at = [int(s.warmup * n)]
            else:
                step = max(1, int(s.retrain_every * n))
                fit_at = list(range(step, n, step))
            sums, fit_s = sb.frozen_replay(timeline, ticks, explicit, rr, s.new_days, cfg,
                                           fit_at, 0.0 if name == "static" else s.run.lr,
                                           s.run.negatives, report,
                                           negative_weight=s.run.negative_weight)
            extra = {"fit_s": fit_s, "fits": len(fit_at),
                     "first_fit_tick": next((t.index for t in ticks if t.start >= fit_at[0]),
                                            len(ticks))}
        else:
            raise ValueError(f"unknown stream model {name!r}; choose from "
                             f"{', '.join(ALL_MODELS)}")
        out["models"][label] = {**sums.totals(explicit=explicit),
                               "after_warmup": sums.totals(after, explicit),
                               "compute_s": time.perf_counter() - start, **extra}
        curve = sums.curve(window_ticks, explicit)
        if "first_fit_tick" in extra:  # no model before its first fit: no curve either
            first = extra["first_fit_tick"] + window_ticks - 1
            curve = [None if k < first else v for k, v in enumerate(curve)]
        out["curves"][label] = curve
    out["curve_events"] = [t.stop for t in ticks]
    return out


ALL_MODELS = ("federated-incremental", "federated-incremental-mf",
              "federated-incremental-neutral", "federated-recursive",
              "centralized-incremental", "centralized-incremental-mf", "periodic-retrain",
              "static", "static-foldin", "online-bias", "recent-popularity")


def default_models(explicit: bool, neighbours: bool = False) -> tuple[str, ...]:
    """Every model that applies; with the neighbours part on (ratings), also the
    incremental models without it (``-mf``: factors and biases alone), so its gain is
    measured in the same run."""
    mf = ("federated-incremental-mf",) if neighbours else ()
    base = ("federated-incremental", *mf, "federated-incremental-neutral",
            "federated-recursive", "centralized-incremental",
            *(("centralized-incremental-mf",) if neighbours else ()), "periodic-retrain",
            "static", "static-foldin")
    return base + (("online-bias",) if explicit else ("recent-popularity",))


def _variant(s: StreamSettings, name: str) -> StreamSettings:
    """The settings behind a federated model's name (``-mf``: without the neighbours
    part)."""
    parts = name.split("-")[1:]
    mode = parts[0] if parts and parts[0] in MODES else s.mode
    init = "neutral" if "neutral" in parts else s.init
    return replace(s, mode=mode, init=init,
                   neighbours=0 if "mf" in parts else s.neighbours)


def plot(record: dict, path: str) -> str:
    """The headline metric over a sliding window, every model on one chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    explicit = record["kind"] == "explicit"
    x = record["curve_events"]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for name, values in record["curves"].items():
        ax.plot(x, [np.nan if v is None else v for v in values], label=name)
    ax.set_xlabel("events replayed")
    ax.set_ylabel(("RMSE" if explicit else "HR@10") +
                  f" (last {record['settings']['window_events']:,} events)")
    ax.set_title(f"{record['dataset']} · prequential {record['kind']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
