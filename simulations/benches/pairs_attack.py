"""``fedrec bench pairs-attack``: pushes on the pairs model by malicious simulated devices
(:mod:`fedrec.simulations.attacks.pairs_push`), with its defence (``copies``) off and on,
on the in-process engine with fedrec's real ServerApp and ClientApp.

The honest devices are the dataset's users; the malicious ones are extra devices
(``fraction`` × the honest users, at least one), each answering the server's counts with
its claimed set (what it has not sent yet) and failing the scoring rounds (they are not
scored). Measured from the run's final table and the weight it chose, as each honest device
scores: ``er@10``, the share of honest users who never took the target with the target in
their top 10; the target's median rank for them; honest NDCG@10 on the test rows (the
run's own pooled figure); and the devices the defence set aside, honest and malicious.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedrec.client import app as device_app
from fedrec.common import pairs, records
from fedrec.common.defences import DEFAULT, OFF
from fedrec.common.partition import Partitions, simulated_partitions
from fedrec.common.settings import RunSettings
from fedrec.simulations.attacks.pairs_push import PAIRS_ATTACKS, claimed_sets
from fedrec.simulations.benches.attack import malicious_count, pick_target, quiet_run
from fedrec.simulations.engines.inprocess import FIRST_NODE

Progress = Callable[[str, int, int], None]


def pairs_attack_app(n_honest: int, claims: list[np.ndarray]) -> ClientApp:
    """fedrec's ClientApp for partitions below ``n_honest``; above, devices that claim
    ``claims[pid - n_honest]`` when counted and fail when asked to score."""
    client = ClientApp()

    @client.query()
    def _query(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        if pid < n_honest:
            return device_app.query(msg, context, context.run_config)
        cfg = msg.content.config_records[pairs.RECORD]
        if cfg["task"] != pairs.COUNT:
            raise RuntimeError("malicious devices are not scored")
        new = claims[pid - n_honest] if int(cfg["counted"]) == 0 else np.empty(0, np.int64)
        return Message(RecordDict({pairs.RECORD: records.arrays_to_record({"new": new})}),
                       reply_to=msg)

    return client


def exposure(parts: Partitions, counts: np.ndarray, weight: float, cap: int, target: int
             ) -> tuple[float, float]:
    """ER@10 and the median rank of ``target`` over honest users who never took it, each
    scored as its device scores (its distinct items, its trained items left out)."""
    hits, ranks, users = 0, [], 0
    prior = pairs.popularity_prior(counts)
    for u in range(parts.n_users):
        rows = parts.user(u)
        if target in rows.train_items or target in rows.test_items:
            continue
        users += 1
        trained = rows.train_items
        scores = pairs.scores(counts, pairs.latest_distinct(trained, cap), weight, prior)
        scores[trained] = -np.inf
        rank = int((scores > scores[target]).sum())
        ranks.append(rank)
        hits += rank < 10
    return hits / max(users, 1), float(np.median(ranks)) if ranks else float("nan")


def run_pairs_attack(settings: RunSettings, name: str | None, fraction: float,
                     target: int, seed: int = 0) -> dict:
    """One pairs run with ``fraction`` malicious devices of attack ``name`` (None: none)."""
    parts = simulated_partitions(settings.dataset, settings.protocol, settings.fold,
                                 settings.data_dir)
    n_bad = malicious_count(parts.n_users, fraction) if name else 0
    claims = claimed_sets(name, parts, target, n_bad, seed) if n_bad else []
    history, model = quiet_run(settings, parts.n_users + n_bad,
                               lambda config: pairs_attack_app(parts.n_users, claims))
    counts, weight = model["counts"], float(model["weight"])
    er, rank = exposure(parts, counts, weight, settings.pairs_cap, target)
    aside = [n - FIRST_NODE for n in history.get("set_aside_nodes", [])]  # partitions
    last = history["rounds"][-1].get("evaluate", {})
    return {"attack": name or "none", "fraction": fraction if n_bad else 0.0,
            "malicious": n_bad, "target": target, "defences": settings.defences,
            "er@10": er, "target_rank": rank, "ndcg@10": last.get("ndcg@10"),
            "weight": weight, "set_aside": history.get("set_aside", {}),
            "honest_set_aside": sum(p < parts.n_users for p in aside),
            "malicious_set_aside": sum(p >= parts.n_users for p in aside),
            "rejected": history["rejected"]}


def bench_pairs_attack(datasets: list[str], attacks: list[str], fractions: list[float],
                       defences: list[str], rounds: int = 2,
                       progress: Progress | None = None) -> dict:
    """Every dataset × attack × fraction × defence setting, beside each dataset's run with
    no attack; the mean over datasets per row."""
    unknown = [a for a in attacks if a not in PAIRS_ATTACKS]
    if unknown:
        raise ValueError(f"attacks must be among {', '.join(PAIRS_ATTACKS)}. Found "
                         f"{', '.join(unknown)}.")
    plan = [(d, None, 0.0, DEFAULT) for d in datasets] + [
        (d, a, f, s) for d in datasets for a in attacks for f in fractions for s in defences]
    runs = []
    for i, (dataset, name, fraction, setting) in enumerate(plan):
        settings = RunSettings(dataset=dataset, protocol="implicit-80-20", model="pairs",
                               num_rounds=rounds, evaluate_every=rounds, defences=setting)
        parts = simulated_partitions(dataset, settings.protocol)
        target = pick_target(parts, "tail")
        runs.append({"dataset": dataset, **run_pairs_attack(settings, name, fraction, target)})
        if progress:
            progress(f"{name or 'none'} {fraction:g} {setting}", i + 1, len(plan))
    return {"bench": "pairs-attack", "datasets": datasets, "attacks": attacks,
            "fractions": fractions, "defences": defences, "runs": runs,
            "table": table(runs)}


def table(runs: list[dict]) -> list[dict]:
    """Per attack, fraction and defence setting: means over datasets (and the largest
    ER@10), with the devices set aside, honest and malicious."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["attack"], r["fraction"], r["defences"]), []).append(r)
    out = []
    for (attack, fraction, setting), rs in groups.items():
        out.append({"attack": attack, "fraction": fraction,
                    "defences": "off" if setting == OFF else "default",
                    "runs": len(rs), "er@10": float(np.mean([r["er@10"] for r in rs])),
                    "er@10_max": float(np.max([r["er@10"] for r in rs])),
                    "target_rank": float(np.median([r["target_rank"] for r in rs])),
                    "ndcg@10": float(np.mean([r["ndcg@10"] for r in rs])),
                    "malicious": float(np.mean([r["malicious"] for r in rs])),
                    "malicious_set_aside": float(np.mean([r["malicious_set_aside"]
                                                          for r in rs])),
                    "honest_set_aside": float(np.sum([r["honest_set_aside"] for r in rs]))})
    return out


def table_lines(record: dict) -> list[str]:
    lines = [f"{'attack':12s} {'share':>6s} {'defences':9s} {'ER@10':>7s} {'max':>6s} "
             f"{'rank':>6s} {'NDCG@10':>8s} {'malicious set aside':>20s} {'honest':>6s}"]
    for row in record["table"]:
        lines.append(f"{row['attack']:12s} {row['fraction']:6.2f} {row['defences']:9s} "
                     f"{row['er@10']:7.3f} {row['er@10_max']:6.3f} {row['target_rank']:6.0f} "
                     f"{row['ndcg@10']:8.4f} "
                     f"{row['malicious_set_aside']:9.1f} of {row['malicious']:8.1f} "
                     f"{row['honest_set_aside']:6.0f}")
    return lines


def shops(count: int) -> list[str]:
    """The generated 2,000-event shops of the README (seeds 1..count)."""
    return [f"synthetic:n_users=150,n_items=115,n_events=2000,seed={s}"
            for s in range(1, count + 1)]


