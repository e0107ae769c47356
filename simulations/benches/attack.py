"""``fedrec bench attack``: poisoning attacks by malicious simulated devices, with the
server's defences off and on, on the in-process engine with fedrec's real ServerApp.

The honest devices are the dataset's users, running fedrec's ClientApp. The malicious
ones are extra devices (``fraction`` × the honest users, at least one), sampled like the
others, each answering train messages with its attack's reply
(:mod:`fedrec.simulations.attacks`) and failing evaluation (they are not scored).

What is measured, over honest users only, each evaluation round, from the vectors their
own devices score with (refitted as in a federated evaluation):

* ``er@10``: the share of honest users who never touched the target (neither in training
  nor held out) with the target in their top 10 (among the items they did not train on);
* ``target_rank``: its median 0-based rank for those users;
* ``ndcg@10`` and ``hr@10`` of honest users on their held-out items;
* ratings: ``rmse`` on honest users' held-out ratings, and ``target_rating``: the mean
  rating predicted for the target for untouched users (its shift is read against the run
  without attack).
"""

from __future__ import annotations

import itertools
import json
import logging
import multiprocessing
import tempfile
from collections import defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.logger import FLOWER_LOGGER

from fedrec.client import app as device_app
from fedrec.common import records
from fedrec.common.defences import DEFAULT, OFF, defence_names
from fedrec.common.metrics import rank_among
from fedrec.common.partition import Partitions, simulated_partitions
from fedrec.common.round_config import RoundConfig
from fedrec.common.secagg import Block, densify, mean_vector
from fedrec.common.settings import RunSettings
from fedrec.server.app import app as server_app
from fedrec.simulations.attacks import ATTACKS, Attack, Request, attack, knowledge_of
from fedrec.simulations.engines.inprocess import run_in_process

Progress = Callable[[str, int, int], None]
TARGETS = {"tail": 0.1, "middle": 0.5}  # popularity percentile of the target
MODES = ("plain", "secagg")  # the privacy modes the malicious devices can speak


def pick_target(parts: Partitions, where: str) -> int:
    """The item at the popularity percentile ``TARGETS[where]`` among items with training
    events (ties by id): a tail item or one in the middle."""
    if where not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}. Found {where!r}.")
    counts = np.bincount(parts.split.train.item, minlength=parts.n_items)
    seen = np.flatnonzero(counts)
    order = seen[np.argsort(counts[seen], kind="stable")]
    return int(order[int(TARGETS[where] * (len(order) - 1))])


@dataclass
class Observations:
    """What honest devices' evaluations showed, per round."""

    target: int
    explicit: bool
    rows: dict[int, list[tuple[float, ...]]] = field(default_factory=lambda: defaultdict(list))

    def add(self, server_round: int, values: tuple[float, ...]) -> None:
        self.rows[server_round].append(values)

    def summary(self) -> list[dict[str, float]]:
        """Per round: er@10, target rank, ndcg/hr@10 (ratings: rmse, target rating)."""
        out = []
        for rnd in sorted(self.rows):
            a = np.array(self.rows[rnd], dtype=np.float64)
            touched, has_test = a[:, 0] > 0, a[:, 1] > 0
            free = ~touched
            row: dict[str, float] = {"round": rnd, "honest_users": float(len(a))}
            if self.explicit:  # (touched, n_test, sq_err, target_rating)
                row["rmse"] = float(np.sqrt(a[has_test, 2].sum() / a[has_test, 1].sum()))
                row["target_rating"] = float(a[free, 3].mean())
            else:  # (touched, has_test, ndcg, hr, target_rank)
                rank = a[free, 4]
                row["er@10"] = float((rank < 10).mean())
                row["target_rank"] = float(np.median(rank))
                row["ndcg@10"] = float(a[has_test, 2].mean())
                row["hr@10"] = float(a[has_test, 3].mean())
            out.append(row)
        return out


def attack_client_app(n_honest: int, bad: Attack | None, seen: Observations,
                      run_config: Mapping) -> ClientApp:
    """fedrec's ClientApp for partitions below ``n_honest`` (evaluation also recorded in
    ``seen``); the attack's devices above."""
    client = ClientApp()
    config = dict(run_config)

    def malicious(context: Context) -> int | None:
        pid = int(context.node_config["partition-id"])
        return pid - n_honest if pid >= n_honest else None

    @client.train(mods=[device_app.secagg_when_asked])
    def _train(msg: Message, context: Context) -> Message:
        device = malicious(context)
        if device is None or bad is None:
            return device_app.train(msg, context, config)
        legacy = "fitins.parameters" in msg.content.array_records  # secagg
        content = device_app.from_legacy(msg, "fit") if legacy else msg.content
        train_config, extra = records.record_to_config(content[records.CONFIG])
        rc = RoundConfig.parse(extra)
        if legacy and rc.secagg_query == "mean":  # μ: its invented history's mean
            return device_app.secagg_reply(msg, mean_vector(bad.history(device)[1],
                                                            rc.rating_range))
        table = records.record_to_arrays(content[records.ITEMS])
        request = Request(table["factors"], table["bias"], float(rc.need("mean")),
                          train_config, int(rc.server_round or 0))
        update, metrics = bad.craft(request, device)
        if legacy:  # the crafted rows, densified as an honest device's would be
            n = len(request.bias)
            block = Block(rc.secagg_block_start or 0,
                          n if rc.secagg_block_size is None else rc.secagg_block_size, n)
            return device_app.secagg_reply(msg, densify(
                update, n, str(rc.need("secagg_weighting")), float(rc.need("secagg_cap")),
                block))
        return Message(RecordDict({records.UPDATE: records.update_to_record(update),
                                   records.METRICS: records.metrics_to_record(metrics)}),
                       reply_to=msg)

    @client.evaluate()
    def _evaluate(msg: Message, context: Context) -> Message:
        if malicious(context) is not None:
            raise RuntimeError("malicious devices are not scored")
        p = device_app.refitted(device_app.evaluation_content(msg), context, config)
        mean, t = float(p.round.need("mean")), seen.target
        touched = float(t in p.rows.train_items or t in p.rows.test_items)
        if p.config.explicit:
            metrics = p.device.evaluate_ratings(p.factors, p.bias, mean, p.rows.test_items,
                                                p.rows.test_values, p.round.rating_range)
            rating = p.device.predict(p.factors, p.bias, mean, np.array([t]),
                                      p.round.rating_range)[0]
            seen.add(int(p.round.server_round or 0),
                     (touched, metrics["num-examples"], metrics["sq-err"], float(rating)))
        else:
            ranking = device_app.ranking_arguments(p.table, p.round)  # (as devices rank)
            metrics = p.device.evaluate_ranking(p.factors, p.bias, p.rows.test_items,
                                                **ranking)
            scores = p.device.ranking_scores(p.factors, p.bias, **ranking)
            excluded = np.zeros(len(scores), dtype=bool)
            excluded[p.device.items] = True
            excluded[t] = False
            seen.add(int(p.round.server_round or 0),
                     (touched, metrics["num-users"], metrics.get("ndcg@10", 0.0),
                      metrics.get("hr@10", 0.0), float(rank_among(scores, t, excluded))))
        return device_app.evaluation_reply(msg, metrics)

    @client.query()
    def _query(msg: Message, context: Context) -> Message:
        device = malicious(context)
        if device is None or bad is None:
            return device_app.query(msg, context, config)
        _, values = bad.history(device)
        return Message(RecordDict({records.METRICS: MetricRecord(
            {"rated": 1.0, "rating-mean": float(values.mean())})}), reply_to=msg)

    return client


def malicious_count(n_honest: int, fraction: float) -> int:
    """Malicious devices for ``fraction`` of the honest ones (at least one when > 0)."""
    return 0 if fraction <= 0 else max(1, round(fraction * n_honest))


def quiet_run(settings: RunSettings, n_nodes: int, client: Callable[[dict], ClientApp]
              ) -> tuple[dict, dict[str, np.ndarray]]:
    """One in-process run of fedrec's ServerApp against ``n_nodes`` devices of the app
    ``client(run_config)`` makes, Flower's log quiet below errors; the run's history and
    its saved model's arrays."""
    level = FLOWER_LOGGER.level
    FLOWER_LOGGER.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = {**settings.to_run_config(), "min-nodes": n_nodes, "results-dir": tmp}
            run_in_process(server_app, client(config), n_nodes, config)
            history = json.loads((Path(tmp) / "history.json").read_text())
            with np.load(Path(tmp) / "model.npz") as saved:
                model = {k: saved[k] for k in saved.files}
    finally:
        FLOWER_LOGGER.setLevel(level)
    return history, model


def run_attack(settings: RunSettings, name: str | None, fraction: float, target: int,
               seed: int = 0) -> dict:
    """One federated run with ``fraction`` malicious devices of attack ``name`` (None or
    fraction 0: no attack); returns per-round observations and the server's refusals."""
    parts = simulated_partitions(settings.dataset, settings.protocol, settings.fold,
                                 settings.data_dir)
    n_bad = malicious_count(parts.n_users, fraction) if name else 0
    bad = None
    if n_bad:
        bad = attack(name, knowledge_of(parts, target, settings.max_norm, settings.explicit,
                                        seed=seed), seed)
    seen = Observations(target, settings.explicit)
    history, _ = quiet_run(settings, parts.n_users + n_bad,
                           lambda config: attack_client_app(parts.n_users, bad, seen, config))
    rounds = seen.summary()
    for row in rounds:  # what the server set aside up to each evaluation
        row["set_aside"] = float(sum(r["train"].get("set-aside", 0.0)
                                     for r in history["rounds"]
                                     if "train" in r and r["round"] <= row["round"]))
    return {"attack": name or "none", "fraction": fraction if n_bad else 0.0,
            "malicious": n_bad, "target": target, "rounds": rounds,
            "set_aside": history.get("set_aside", {}), "rejected": history["rejected"]}


def defence_sets(value: str) -> list[str]:
    """``--defences``: comma-free names of defence settings, ``off`` and ``default``
    (:data:`fedrec.common.defences.DEFAULT`) or one defence's name, separated by ``/``."""
    out = []
    for item in value.split("/"):
        item = item.strip()
        setting = DEFAULT if item == "default" else item
        defence_names(setting)  # refuses unknown names, naming them
        out.append(setting)
    return out


def bench_attack(settings: RunSettings, attacks: list[str], fractions: list[float],
                 targets: list[str], defences: list[str], progress: Progress | None = None,
                 seed: int = 0, on_run: Callable[[dict], None] | None = None,
                 jobs: int = 1) -> dict:
    """Every attack × fraction × target under each defence setting, beside the run with no
    attack under the same setting; returns the record (runs, table, honest cost).

    ``on_run`` is handed the record so far (``complete`` false) after every run, so a long
    bench can be written as it goes and read before it ends. ``jobs`` > 1 runs that many at
    once, each in a process of its own (each run is a whole federation and seeded, so the
    record is the one a single process gives, in the same order)."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1. Found {jobs}.")
    if settings.privacy not in MODES:
        raise ValueError(f"bench attack runs privacy {' or '.join(MODES)}; "
                         f"{settings.privacy} is not measured yet")
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise ValueError(f"attacks must be among {', '.join(ATTACKS)}. Found "
                         f"{', '.join(unknown)}.")
    for f in fractions:
        if not 0 < f <= 1:
            raise ValueError(f"fractions must be in (0, 1]. Found {f}.")
    parts = simulated_partitions(settings.dataset, settings.protocol, settings.fold,
                                 settings.data_dir)
    where = {w: pick_target(parts, w) for w in targets}
    # every setting's run without attack first, then each attack under every setting in
    # turn, so a record read before the end holds whole off/on pairs
    plan = [(d, None, 0.0, targets[0]) for d in defences]
    for name in attacks:
        for f in fractions:
            for w in (targets if ATTACKS[name].targeted else targets[:1]):
                plan.extend((d, name, f, w) for d in defences)
    events = np.bincount(parts.split.train.item, minlength=parts.n_items)

    def record(runs: list[dict], complete: bool) -> dict:
        return {"bench": "attack", "dataset": settings.dataset,
                "protocol": settings.protocol, "fold": settings.fold,
                "settings": settings.to_run_config(),
                "targets": {w: {"item": t, "train_events": int(events[t])}
                            for w, t in where.items()},
                "knows": {name: ATTACKS[name].knows for name in attacks},
                "planned": len(plan), "complete": complete,
                "runs": runs, "table": table(runs, settings.explicit)}

    done: dict[int, dict] = {}

    def finished(i: int, run: dict) -> None:
        done[i] = run
        if progress:
            d, name, f, w = plan[i]
            progress(f"{d}: {name or 'no attack'} {f:g} {w} done", len(done), len(plan))
        # the runs so far, in the plan's order, up to the first still running
        ready = list(itertools.takewhile(lambda j: j in done, range(len(plan))))
        if on_run and len(done) < len(plan):
            on_run(record([done[j] for j in ready], complete=False))

    if progress:
        progress(f"{len(plan)} runs, {jobs} at a time", 0, len(plan))
    if jobs == 1:
        for i in range(len(plan)):
            finished(i, _run_planned(settings, plan[i], where[plan[i][3]], seed))
    else:
        context = multiprocessing.get_context("spawn")  # Flower's threads do not fork
        with ProcessPoolExecutor(jobs, mp_context=context) as pool:
            futures = {pool.submit(_run_planned, settings, plan[i], where[plan[i][3]],
                                   seed): i for i in range(len(plan))}
            for future in as_completed(futures):
                finished(futures[future], future.result())
    return record([done[i] for i in range(len(plan))], complete=True)


def _run_planned(settings: RunSettings, step: tuple, target: int, seed: int) -> dict:
    """One step of a bench's plan, in a worker process."""
    d, name, f, w = step
    return {**run_attack(replace(settings, defences=d), name, f, target, seed),
            "defences": d, "target_at": w}


def table(runs: list[dict], explicit: bool) -> list[dict]:
    """One row per run, at its last evaluation, with the change against the run without
    attack under the same defences."""
    base = {r["defences"]: r["rounds"][-1] for r in runs if r["attack"] == "none"}
    off = base.get(OFF)
    rows = []
    for r in runs:
        last, ref = r["rounds"][-1], base[r["defences"]]
        row = {"defences": r["defences"], "attack": r["attack"], "fraction": r["fraction"],
               "target": r["target_at"], "malicious": r["malicious"],
               "set_aside": sum(r["set_aside"].values())}
        if explicit:
            row.update(rmse=last["rmse"], target_rating=last["target_rating"],
                       rating_shift=last["target_rating"] - ref["target_rating"])
            if off is not None:
                row["rmse_vs_off"] = last["rmse"] / off["rmse"] - 1
        else:
            row.update({k: last[k] for k in ("er@10", "target_rank", "ndcg@10", "hr@10")})
            row["ndcg_change"] = last["ndcg@10"] / ref["ndcg@10"] - 1
            if off is not None:
                row["ndcg_vs_off"] = last["ndcg@10"] / off["ndcg@10"] - 1
        rows.append(row)
    return rows


def table_lines(record: dict) -> list[str]:
    """The table as text: attacks × fraction × defences."""
    explicit = record["protocol"].startswith("explicit")
    head = (f"{'defences':<20} {'attack':<15} {'frac':>6} {'target':<7}"
            + (f" {'rmse':>7} {'rating':>7} {'shift':>7}" if explicit else
               f" {'ER@10':>7} {'rank':>7} {'NDCG@10':>8} {'change':>7}") + f" {'aside':>6}")
    lines = [head]
    for r in record["table"]:
        cells = (f"{r['defences']:<20} {r['attack']:<15} {r['fraction']:>6.3g} "
                 f"{r['target']:<7}")
        if explicit:
            cells += (f" {r['rmse']:>7.4f} {r['target_rating']:>7.3f} "
                      f"{r['rating_shift']:>+7.3f}")
        else:
            cells += (f" {r['er@10']:>7.3f} {r['target_rank']:>7.0f} {r['ndcg@10']:>8.4f} "
                      f"{r['ndcg_change']:>+7.1%}")
        lines.append(cells + f" {r['set_aside']:>6.0f}")
    return lines


def plot(record: dict, path: Path) -> Path:
    """Exposure (ER@10; ratings: the target's predicted rating) per round, one panel per
    attack, a line per fraction, defences off solid and on dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    explicit = record["protocol"].startswith("explicit")
    key = "target_rating" if explicit else "er@10"
    attacks = list(dict.fromkeys(r["attack"] for r in record["runs"] if r["attack"] != "none"))
    cols = min(3, max(1, len(attacks)))
    rows_n = max(1, -(-len(attacks) // cols))
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 3.2 * rows_n), dpi=110,
                             squeeze=False)
    fractions = sorted({r["fraction"] for r in record["runs"] if r["attack"] != "none"})
    colours = dict(zip(fractions, plt.cm.viridis(np.linspace(0, 0.85, len(fractions))),
                       strict=True))
    for ax, name in zip(axes.ravel(), attacks, strict=False):
        # an untargeted attack's panel shows what it aims at: honest NDCG@10
        key = key if ATTACKS[name].targeted or explicit else "ndcg@10"
        for r in record["runs"]:
            if r["attack"] not in (name, "none") or r["target_at"] != record["runs"][0][
                    "target_at"]:
                continue
            style = "-" if r["defences"] == OFF else "--"
            colour = "grey" if r["attack"] == "none" else colours[r["fraction"]]
            label = (f"{'no attack' if r['attack'] == 'none' else format(r['fraction'], '.1%')}"
                     f" · {'off' if r['defences'] == OFF else 'on'}")
            ax.plot([x["round"] for x in r["rounds"]], [x[key] for x in r["rounds"]],
                    style, color=colour, marker=".", label=label)
        ax.set_title(name)
        ax.set_xlabel("round")
        ax.set_ylabel({"target_rating": "target's predicted rating", "er@10":
                       "ER@10 of the target", "ndcg@10": "honest NDCG@10"}[key])
        key = "target_rating" if explicit else "er@10"
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(attacks):]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=6)
    fig.suptitle(f"{record['dataset']} · {record['protocol']} · defences off (solid) / on "
                 "(dashed)")
    fig.tight_layout()
    from fedrec.simulations.benches.results import save_figure

    return save_figure(fig, path)


def markdown(record: dict) -> str:
    """The table as Markdown: one line per attack and fraction, defence settings side by
    side (ER@10 of the target, its median rank, honest NDCG@10's change against the run
    without attack under the same defences; ratings: the target's predicted rating shift
    and RMSE)."""
    explicit = record["protocol"].startswith("explicit")
    rows = record["table"]
    settings = list(dict.fromkeys(r["defences"] for r in rows))
    cells = ("rating shift", "RMSE") if explicit else ("ER@10", "rank", "NDCG Δ")
    head = ["attack", "share"] + [f"{c} ({s})" for s in settings for c in cells]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = list(dict.fromkeys((r["attack"], r["fraction"], r["target"]) for r in rows))
    for attack_name, fraction, target in keys:
        line = [attack_name if len({k[2] for k in keys}) == 1 else f"{attack_name} ({target})",
                f"{fraction:.1%}" if fraction else "—"]
        for s in settings:
            r = next((r for r in rows if (r["attack"], r["fraction"], r["target"],
                                          r["defences"]) == (attack_name, fraction, target,
                                                             s)), None)
            if r is None:
                line += ["—"] * len(cells)
            elif explicit:
                line += [f"{r['rating_shift']:+.3f}", f"{r['rmse']:.4f}"]
            else:
                line += [f"{r['er@10']:.3f}", f"{r['target_rank']:.0f}",
                         f"{r['ndcg_change']:+.1%}"]
        out.append("| " + " | ".join(line) + " |")
    return "\n".join(out)
