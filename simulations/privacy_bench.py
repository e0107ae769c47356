"""``fedrec bench privacy``: each privacy mode's quality, cost, ε and attack resistance, on
the same split, in one run.

For ``plain`` and for ``dp`` at each target ε (the noise multiplier calibrated so the run's
ε at δ meets the target: ε ∈ {1, 2, 4, 8} by default), one federated simulation on the
in-process engine, recording the held-out quality, upload bytes per device and round,
seconds per round, ε, and the curious server's membership-inference AUC against every
device's last reply (:mod:`fedrec.simulations.attacker`). The centralized model on the same
split is run once beside them. A PNG plots quality against ε.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
from flwr.app import Message

from fedrec.common import records
from fedrec.common.partition import simulated_partitions
from fedrec.common.settings import RunSettings
from fedrec.server.accountant import calibrate_noise
from fedrec.simulations.attacker import membership_auc
from fedrec.simulations.results import save_figure
from fedrec.simulations.simulate import headline, simulate

Progress = Callable[[str, int, int], None]
FIRST_NODE = 1001  # the in-process engine's node id of partition 0


def _run(settings: RunSettings, centralized: bool, progress: Progress | None) -> dict:
    parts = simulated_partitions(settings.dataset, settings.protocol, settings.fold,
                                 settings.data_dir)
    last: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def observe(direction: str, msg: Message) -> None:
        if direction != "to-server" or msg.metadata.message_type != "train" \
                or msg.has_error():
            return
        arrays = records.record_to_arrays(msg.content[records.UPDATE])
        last[msg.metadata.src_node_id] = (arrays["ids"].copy(), arrays["bias"].copy())

    record = simulate(settings, progress=progress, centralized=centralized, observer=observe)
    replies = [(ids, bias, np.unique(parts.user(node - FIRST_NODE).train_items))
               for node, (ids, bias) in last.items()]
    fed = record["models"]["federated-mf"]
    rounds = max(1, len(record["rounds"]["train"]))
    out = {**{k: v for k, v in fed.items() if k != "fit_s"},
           "seconds_per_round": fed["fit_s"] / rounds,
           "upload_bytes_per_device_round": record["upload_bytes_per_device_round"],
           "epsilon": record.get("epsilon"), "delta": record.get("delta"),
           "attack": membership_auc(replies, parts.n_items)}
    if centralized:
        out["centralized"] = record["models"].get("centralized-mf")
    return out


def bench_privacy(settings: RunSettings, epsilons: tuple[float, ...] = (1, 2, 4, 8),
                  progress: Progress | None = None) -> dict:
    """The privacy bench record (without ``env``)."""
    result: dict = {"bench": "privacy", "dataset": settings.dataset,
                    "protocol": settings.protocol, "metric": headline(settings.explicit),
                    "settings": settings.to_run_config(), "modes": {}}
    plain = _run(replace(settings, privacy="plain"), True, progress)
    result["centralized"] = plain.pop("centralized")
    result["modes"]["plain"] = plain
    for eps in epsilons:
        sigma = calibrate_noise(eps, settings.fraction_train, settings.num_rounds,
                                settings.dp_delta)
        run = replace(settings, privacy="dp", dp_noise=sigma, dp_epsilon=0.0)
        result["modes"][f"dp-eps{eps:g}"] = {**_run(run, False, progress),
                                             "target_epsilon": eps, "noise": sigma}
    return result


def plot(record: dict, path: str) -> str:
    """Quality against ε for dp, with plain and centralized as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    key = record["metric"]
    dp = [m for name, m in record["modes"].items() if name.startswith("dp")]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot([m["epsilon"] for m in dp], [m[key] for m in dp], marker="o", label="federated, dp")
    ax.axhline(record["modes"]["plain"][key], color="tab:green", linestyle="--",
               label="federated, plain")
    if record.get("centralized"):
        ax.axhline(record["centralized"][key], color="tab:red", linestyle=":",
                   label="centralized")
    ax.set_xscale("log", base=2)
    ax.set_xlabel(f"ε (δ = {record['settings']['dp-delta']:g})")
    ax.set_ylabel(key.upper() if key == "rmse" else key)
    ax.set_title(f"{record['dataset']} · {record['protocol']} · privacy–utility")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)
