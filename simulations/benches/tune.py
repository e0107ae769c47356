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
from collections.abc import Callable
from dataclasses import replace

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
    empty = [name for name, values in grid.items() if not len(values)]
    if not grid or empty:
        raise ValueError(f"tune: every grid setting needs at least one value; "
                         f"{', '.join(empty) or 'the grid'} has none")
    unknown = sorted(set(grid) - set(RunSettings.__dataclass_fields__))
    if unknown:
        raise ValueError(f"tune: unknown settings {', '.join(unknown)}")
    names = list(grid)
    combos = list(itertools.product(*(grid[name] for name in names)))
    metric = headline(settings.explicit)
    base = baseline_name(settings.explicit)  # (the same split for every trial: fitted once)
    baseline = centralized_reference(replace(settings, validation=True), (base,))[base]
    trials = []
    for i, values in enumerate(combos):
        chosen = dict(zip(names, values, strict=True))
        trial = replace(settings, validation=True, **chosen)
        fed = simulate(trial, centralized=False)["models"]["federated-mf"]
        trials.append({**chosen, **{k: v for k, v in fed.items() if k in KEPT},
                       "fit_s": fed["fit_s"]})
        if progress:
            progress(f"tuning on the validation split: {chosen}", i + 1, len(combos))
    sign = -1.0 if metric in ("rmse", "mae") else 1.0
    best = max(trials, key=lambda t: sign * t[metric])
    return {"metric": metric, "best": {name: best[name] for name in names},
            "validation": best[metric], "trials": trials,
            "baseline": {"name": base, **{k: v for k, v in baseline.items() if k in KEPT}}}
