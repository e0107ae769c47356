"""``fedrec bench tune``: choose a federated run's settings on the validation split.

Every combination of a grid of run settings runs as a full federated simulation
(:func:`~fedrec.simulations.benches.simulate.simulate`) on the *validation* split (the
training events split again by the same protocol: no test event is seen), beside the same
split's simple baseline; the best by the protocol's headline metric is what a preset may
take. Figures are then reported on the test split, which no choice saw. Each trial also
records the imbalance segments (light and heavy users, the tail), so a choice can be made
for them too.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import fields, replace

from fedrec.common.mf import MFConfig
from fedrec.common.settings import RunSettings
from fedrec.simulations.benches.simulate import (
    baseline_name,
    centralized_reference,
    headline,
    simulate,
)

Progress = Callable[[str, int, int], None]
KEPT = ("ndcg@10", "hr@10", "rmse", "mae", "light-ndcg@10", "heavy-ndcg@10",
        "tail-share@10", "tail-recall@10")


def tune(settings: RunSettings, grid: dict[str, tuple], progress: Progress | None = None
         ) -> dict:
    """Every combination of ``grid`` (setting → values) over ``settings``, each on the
    validation split; the record: every trial's figures and the best combination."""
    combos = _combinations(grid, set(RunSettings.__dataclass_fields__), "settings")
    metric = headline(settings.explicit)
    base = baseline_name(settings.explicit)  # (the same split for every trial: fitted once)
    baseline = centralized_reference(replace(settings, validation=True), (base,))[base]
    trials = []
    for i, chosen in enumerate(combos):
        trial = replace(settings, validation=True, **chosen)
        run = simulate(trial, centralized=False)
        fed = run["models"]["federated-mf"]
        curve = [[e["round"], e[metric]] for e in run["rounds"]["evaluate"] if metric in e]
        trials.append({**chosen, **{k: v for k, v in fed.items() if k in KEPT},
                       "fit_s": fed["fit_s"], "curve": curve,
                       "best_round": _best_round(curve, metric)})
        if progress:
            progress(f"tuning on the validation split: {chosen}", i + 1, len(combos))
    best = _best(trials, metric)
    return {"metric": metric, "best": {name: best[name] for name in grid},
            "validation": best[metric], "trials": trials,
            "baseline": {"name": base, **{k: v for k, v in baseline.items() if k in KEPT}}}


def tune_centralized(settings: RunSettings, grid: dict[str, tuple],
                     progress: Progress | None = None) -> dict:
    """Every combination of ``grid`` (a field of :class:`~fedrec.common.mf.MFConfig` →
    values) over the protocol's centralized preset (with the run's factors, as
    ``fedrec simulate`` fits it), each fitted on the validation split's training events and
    scored on its held-out ones; the record, as :func:`tune`'s."""
    allowed = {f.name for f in fields(MFConfig)} - {"loss", "seed"}
    combos = _combinations(grid, allowed, "centralized-mf settings")
    metric = headline(settings.explicit)
    validation = replace(settings, validation=True)
    base = baseline_name(settings.explicit)
    baseline = centralized_reference(validation, (base,))[base]
    trials = []
    for i, chosen in enumerate(combos):
        fit = centralized_reference(validation, ("centralized-mf",), chosen)["centralized-mf"]
        trials.append({**chosen, **{k: v for k, v in fit.items() if k in KEPT},
                       "fit_s": fit["fit_s"]})
        if progress:
            progress(f"tuning centralized-mf on the validation split: {chosen}", i + 1,
                     len(combos))
    best = _best(trials, metric)
    return {"metric": metric, "model": "centralized-mf",
            "best": {name: best[name] for name in grid}, "validation": best[metric],
            "trials": trials,
            "baseline": {"name": base, **{k: v for k, v in baseline.items() if k in KEPT}}}


def parse_mf_value(key: str, text: str) -> object:
    """A grid value for the :class:`~fedrec.common.mf.MFConfig` field ``key`` (the
    command line's spelling, dashes or underscores), typed as the field is."""
    name = key.replace("-", "_")
    kinds = {f.name: f.type for f in fields(MFConfig)}
    if name not in kinds:
        raise ValueError(f"unknown centralized-mf setting {key!r}")
    declared = kinds[name]
    kind = {"int": int, "float": float}.get(getattr(declared, "__name__", declared), str)
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{key!r}: {text!r} is not a {kind.__name__}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{key!r}: {text!r} is not a finite number")
    return value


def _combinations(grid: dict[str, tuple], allowed: set[str], what: str) -> list[dict]:
    """Every combination of ``grid`` as one mapping each, in the grid's order; a setting
    with no values or outside ``allowed`` refused by name."""
    empty = [name for name, values in grid.items() if not len(values)]
    if not grid or empty:
        raise ValueError(f"tune: every grid setting needs at least one value; "
                         f"{', '.join(empty) or 'the grid'} has none")
    unknown = sorted(set(grid) - allowed)
    if unknown:
        raise ValueError(f"tune: unknown {what} {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(allowed))})")
    names = list(grid)
    return [dict(zip(names, values, strict=True))
            for values in itertools.product(*(grid[name] for name in names))]


def _sign(metric: str) -> float:
    return -1.0 if metric in ("rmse", "mae") else 1.0


def _best(trials: list[dict], metric: str) -> dict:
    """The trial with the best ``metric``; a trial whose figure is NaN (a diverged model)
    is never best unless every one is."""
    def key(t: dict) -> float:
        value = t.get(metric, float("nan"))
        return _sign(metric) * value if math.isfinite(value) else -math.inf
    return max(trials, key=key)


def _best_round(curve: list[list], metric: str) -> int | None:
    """The evaluated round with the best ``metric`` on the validation split (how many
    rounds a preset should run), or None when no round was evaluated."""
    finite = [(r, v) for r, v in curve if math.isfinite(v)]
    if not finite:
        return None
    return max(finite, key=lambda rv: _sign(metric) * rv[1])[0]
