"""``fedrec bench privacy``: each privacy mode's quality, cost, ε and attack resistance, on
the same split, in one run.

For ``plain`` and for ``dp`` at each target ε (the noise multiplier calibrated so the run's
ε at δ meets the target: ε ∈ {1, 2, 4, 8} by default), one federated simulation on the
in-process engine, recording the held-out quality, upload bytes per device and round,
seconds per round, ε, and the curious server's attacks on every device's last reply
(:mod:`fedrec.simulations.attacker`): membership-inference AUC, and for explicit data the
RMSE of the ratings it reads off the reply. The centralized model on the same
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
from fedrec.simulations.attacker import infer_ratings, membership_auc
from fedrec.simulations.results import save_figure
from fedrec.simulations.simulate import headline, simulate

Progress = Callable[[str, int, int], None]
FIRST_NODE = 1001  # the in-process engine's node id of partition 0


def _run(settings: RunSettings, centralized: bool, progress: Progress | None) -> dict:
    parts = simulated_partitions(settings.dataset, settings.protocol, settings.fold,
                                 settings.data_dir)
    last: dict[int, dict[str, np.ndarray]] = {}
    sent: dict[int, tuple[dict, object, dict]] = {}  # the table and config each device got

    def observe(direction: str, msg: Message) -> None:
        if msg.metadata.message_type != "train" or msg.has_error():
            return
        if direction == "to-device":
            config, extra = records.record_to_config(msg.content[records.CONFIG])
            sent[msg.metadata.dst_node_id] = (
                records.record_to_arrays(msg.content[records.ITEMS]), config, extra)
            return
        node = msg.metadata.src_node_id
        arrays = records.record_to_arrays(msg.content[records.UPDATE])
        if not all(np.isfinite(a).all() for a in arrays.values()):
            return  # a reply the server refuses tells the attacker nothing either
        last[node] = {k: np.array(v) for k, v in arrays.items()}
        last[node]["sent"] = sent[node]

    record = simulate(settings, progress=progress, centralized=centralized, observer=observe)
    replies = [(r["ids"], r["bias"], np.unique(parts.user(node - FIRST_NODE).train_items))
               for node, r in last.items()]
    fed = record["models"]["federated-mf"]
    rounds = max(1, len(record["rounds"]["train"]))
    out = {**{k: v for k, v in fed.items() if k != "fit_s"},
           "seconds_per_round": fed["fit_s"] / rounds,
           "upload_bytes_per_device_round": record["upload_bytes_per_device_round"],
           "epsilon": record.get("epsilon"), "delta": record.get("delta"),
           "attack": membership_auc(replies, parts.n_items)}
    if settings.explicit:
        out["attack"]["ratings"] = _rating_attack(last, parts)
    if centralized:
        out["centralized"] = record["models"].get("centralized-mf")
    return out


def _rating_attack(last: dict[int, dict], parts: object) -> dict[str, float]:
    """How well the server reads each device's training ratings off its last reply (RMSE),
    beside guessing every rating as the global mean."""
    errors, baseline = [], []
    for node, r in last.items():
        rows = parts.user(node - FIRST_NODE)
        if len(np.unique(rows.train_items)) != len(rows.train_items) or not len(r["ids"]):
            continue  # repeated ratings of an item: no single rating per row
        table, config, extra = r["sent"]
        truth = rows.train_values[np.argsort(rows.train_items)]
        guess = infer_ratings(r["rows"], r["bias"], table["factors"][r["ids"]],
                              table["bias"][r["ids"]], float(extra["mean"]), config.lr,
                              config.reg, config.reg_bias, config.local_epochs,
                              (float(extra["rating-min"]), float(extra["rating-max"])))
        errors.append((guess - truth) ** 2)
        baseline.append((float(extra["mean"]) - truth) ** 2)
    if not errors:
        return {"rmse": float("nan"), "mean_guess_rmse": float("nan")}
    return {"rmse": float(np.sqrt(np.mean(np.concatenate(errors)))),
            "mean_guess_rmse": float(np.sqrt(np.mean(np.concatenate(baseline))))}


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
    dp = [m for name, m in record["modes"].items()
          if name.startswith("dp") and np.isfinite(m[key]) and m["epsilon"]]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if dp:
        ax.plot([m["epsilon"] for m in dp], [m[key] for m in dp], marker="o",
                label="federated, dp")
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
