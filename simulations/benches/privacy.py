"""``fedrec bench privacy``: each privacy mode's quality, cost, ε and attack resistance, on
the same split, in one run.

Modes, each one federated simulation on the in-process engine: ``plain``; ``decoy`` (every
reply padded to the same rows); ``dp`` at each target ε (the noise multiplier calibrated
so the run's ε at δ meets the target: ε ∈ {1, 2, 4, 8} by default; the clip bound, unless
given, is the median norm of the plain run's updates); ``decoy+dp`` at the largest ε;
``secagg`` (Flower's SecAgg+). For each: the held-out quality, upload bytes per device and
round (every byte of the device's train replies, key shares included), seconds per round,
ε, and the curious server's attacks on every device's last reply
(:mod:`fedrec.simulations.benches.membership`): membership-inference AUC, for explicit data the RMSE
of the ratings it reads off the reply, and in decoy modes how well it tells decoys from
real rows. In ``secagg`` the server holds no individual update; the attack reads what it
does hold, the masked vectors. The centralized model on the same split is run once
beside them, and :func:`round_costs` times plain against secagg rounds of 50 devices in the
same run. A PNG plots quality against ε.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import numpy as np
from flwr.app import Message, RecordDict
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    Key,
    Stage,
)
from flwr.compat.common.parameter import bytes_to_ndarray

from fedrec.client.device import Device
from fedrec.common import als, privacy, records
from fedrec.common.als import triangle
from fedrec.common.partition import Partitions, simulated_partitions
from fedrec.common.privacy import for_mode
from fedrec.common.privacy.gaussian import clip_and_noise, update_norm
from fedrec.common.schema import ItemUpdate
from fedrec.common.settings import RunSettings
from fedrec.server.accountant import calibrate_noise
from fedrec.server.secagg_dp import SecAggDpFedRec
from fedrec.simulations.benches.ddp_runs import evaluate_solved, federate
from fedrec.simulations.benches.membership import (
    auc,
    decoy_auc,
    infer_ratings,
    membership_auc,
    row_features,
)
from fedrec.simulations.benches.results import save_figure
from fedrec.simulations.benches.simulate import headline, simulate
from fedrec.simulations.models.centralized import evaluate, fit, make_model
from fedrec.simulations.models.presets import ddp_preset, mf_config

Progress = Callable[[str, int, int], None]
STAGES = (Stage.SETUP, Stage.SHARE_KEYS, Stage.COLLECT_MASKED_VECTORS, Stage.UNMASK)
FIRST_NODE = 1001  # the in-process engine's node id of partition 0
MODES = ("plain", "decoy", "dp", "decoy+dp", "secagg", "secagg+dp")
AUDIT_DEVICES = 300  # devices whose decoy replies are audited


def payload_bytes(content: RecordDict) -> int:
    """Bytes a message carries: array data, bytes and strings in config records, 8 per
    other scalar (what a wire format needs at least)."""
    total = 0
    for record in content.array_records.values():
        total += sum(len(a.data) for a in record.values())
    for record in list(content.config_records.values()) + list(
            content.metric_records.values()):
        for value in record.values():
            for v in value if isinstance(value, list) else [value]:
                total += len(v) if isinstance(v, (bytes, str)) else 8
    return total


class _Watcher:
    """What a curious server holds at the end of a run: each device's last reply (sparse
    rows, or a SecAgg+ masked vector), the table it was sent, and every byte devices sent."""

    def __init__(self) -> None:
        self.last: dict[int, dict] = {}
        self.sent: dict[int, tuple[dict, object, dict]] = {}
        self._round_table: tuple[object, dict] | None = None  # (round, table) copied once
        self.masked: dict[int, list[np.ndarray]] = {}
        self.upload = 0
        self.train_replies = 0

    def __call__(self, direction: str, msg: Message) -> None:
        if msg.metadata.message_type != "train" or msg.has_error():
            return
        content = msg.content
        if direction == "to-device":
            if records.CONFIG in content.config_records:
                config, extra = records.record_to_config(content[records.CONFIG])
                self.sent[msg.metadata.dst_node_id] = (self._table(content, extra), config,
                                                       extra)
            return
        node = msg.metadata.src_node_id
        self.upload += payload_bytes(content)
        if RECORD_KEY_CONFIGS in content.config_records:  # a SecAgg+ stage reply
            masked = content.config_records[RECORD_KEY_CONFIGS].get(Key.MASKED_PARAMETERS)
            if masked:
                self.masked[node] = [bytes_to_ndarray(b) for b in masked]
                self.train_replies += 1
            return
        self.train_replies += 1
        arrays = records.record_to_arrays(content[records.UPDATE])
        if not all(np.isfinite(a).all() for a in arrays.values()):
            return  # a reply the server refuses tells the attacker nothing either
        self.last[node] = {k: np.array(v) for k, v in arrays.items()}
        self.last[node]["sent"] = self.sent[node]


    def _table(self, content: RecordDict, extra: dict) -> dict:
        """The table a device was sent, copied once per round (every device of a round
        gets the same one; a delta-sync message is its own)."""
        items = content[records.ITEMS]
        key = extra.get("server-round")
        shared = key is not None and "base" not in items
        if shared and self._round_table and self._round_table[0] == key:
            return self._round_table[1]
        table = {k: np.array(v) for k, v in records.record_to_arrays(items).items()}
        if shared:
            self._round_table = (key, table)
        return table


def _run(settings: RunSettings, centralized: bool, progress: Progress | None) -> dict:
    parts = simulated_partitions(settings.dataset, settings.protocol, settings.fold,
                                 settings.data_dir)
    watch = _Watcher()
    record = simulate(settings, progress=progress, centralized=centralized, observer=watch)
    truth = {node: np.unique(parts.user(node - FIRST_NODE).train_items)
             for node in set(watch.last) | set(watch.masked)}
    if watch.masked:  # secagg: all the server holds per device is its masked vector
        replies = [(np.arange(parts.n_items), -v[3].astype(np.float64), truth[node])
                   for node, v in watch.masked.items()]
    else:
        replies = [(r["ids"], r["bias"], truth[node]) for node, r in watch.last.items()]
    fed = record["models"]["federated-mf"]
    rounds = max(1, len(record["rounds"]["train"]))
    out = {**{k: v for k, v in fed.items() if k != "fit_s"},
           "seconds_per_round": fed["fit_s"] / rounds,
           "upload_bytes_per_device_round": watch.upload / max(1, watch.train_replies),
           "epsilon": record.get("epsilon"), "delta": record.get("delta"),
           "attack": membership_auc(replies, parts.n_items)}
    if watch.last:
        norms = [update_norm(ItemUpdate(r["ids"], r["rows"], r["bias"], r["counts"]))
                 for r in watch.last.values()]
        out["update_norm_median"] = float(np.median(norms))
    if settings.explicit and watch.last:
        out["attack"]["ratings"] = _rating_attack(watch.last, parts)
    if settings.mode.padded and watch.last:
        out["decoys"] = _decoy_audit(settings, parts, watch)
    if centralized:
        out["centralized"] = record["models"].get("centralized-mf")
    return out


def _decoy_audit(settings: RunSettings, parts: Partitions, watch: _Watcher) -> dict:
    """How well the server tells decoys from real rows, and whether decoys are zero-mean.

    Which rows of a reply are decoys is known only on the device, so the audit replays
    devices' decoy rounds against the last table (and ``named`` counts) the run sent:
    up to :data:`AUDIT_DEVICES` devices, each fitted to the table by two plain rounds, then
    padded (and in ``decoy+dp`` clipped and noised) as in the run. Features are what the
    server reads off each row."""
    node = max(watch.sent)
    table, config, extra = watch.sent[node]
    named = table.get("named")
    mean = float(extra["mean"])
    rating_range = (float(extra["rating-min"]), float(extra["rating-max"]))
    step = max(1, parts.n_users // AUDIT_DEVICES)
    features, decoy_bias, real_bias = [], [], []
    for user in range(0, parts.n_users, step):
        rows = parts.user(user)
        if not len(rows.train_items):
            continue
        device = Device(rows.train_items, rows.train_values, seed=settings.seed + user)
        for _ in range(2):
            device.train(table["factors"], table["bias"], mean, config)
        update, _ = device.train(table["factors"], table["bias"], mean, config,
                                 int(extra["decoy-rows"]), named, rating_range)
        is_decoy = device.last_decoys
        if "dp-clip" in extra:  # decoy+dp: the padded reply is clipped and noised as sent
            update = clip_and_noise(update, float(extra["dp-clip"]), float(extra["dp-noise"]),
                                    np.random.default_rng([settings.seed, user, 7]))
        features.append((row_features(update.ids, update.rows, update.bias, update.counts,
                                      named), is_decoy))
        decoy_bias.append(update.bias[is_decoy])
        real_bias.append(update.bias[~is_decoy])
    d, r = np.concatenate(decoy_bias), np.concatenate(real_bias)

    def drift(b: np.ndarray) -> float:  # |mean| relative to the mean size: 0 = zero-mean
        return float(abs(b.mean()) / np.abs(b).mean()) if len(b) else float("nan")

    return {"rows": int(extra["decoy-rows"]), "real_vs_decoy_auc": decoy_auc(features),
            "decoy_share": float(len(d) / max(1, len(d) + len(r))),
            "decoy_bias_drift": drift(d), "real_bias_drift": drift(r)}


def _rating_attack(last: dict[int, dict], parts: Partitions) -> dict[str, float]:
    """How well the server reads each device's training ratings off its last reply (RMSE
    over the rows of rated items; the server reads every row, decoys too), beside guessing
    every rating as the global mean."""
    errors, baseline = [], []
    for node, r in last.items():
        rows = parts.user(node - FIRST_NODE)
        if len(np.unique(rows.train_items)) != len(rows.train_items) or not len(r["ids"]):
            continue  # repeated ratings of an item: no single rating per row
        table, config, extra = r["sent"]
        guess = infer_ratings(r["rows"], r["bias"], table["factors"][r["ids"]],
                              table["bias"][r["ids"]], float(extra["mean"]), config.lr,
                              config.reg, config.reg_bias, config.local_epochs,
                              (float(extra["rating-min"]), float(extra["rating-max"])))
        rated = np.isin(r["ids"], rows.train_items)
        order = np.argsort(rows.train_items)
        truth = rows.train_values[order][np.searchsorted(rows.train_items[order],
                                                          r["ids"][rated])]
        errors.append((guess[rated] - truth) ** 2)
        baseline.append((float(extra["mean"]) - truth) ** 2)
    if not errors:
        return {"rmse": float("nan"), "mean_guess_rmse": float("nan")}
    return {"rmse": float(np.sqrt(np.mean(np.concatenate(errors)))),
            "mean_guess_rmse": float(np.sqrt(np.mean(np.concatenate(baseline))))}


def bench_privacy(settings: RunSettings, epsilons: tuple[float, ...] = (1, 2, 4, 8),
                  progress: Progress | None = None, modes: Sequence[str] = MODES,
                  dp_clip: float | None = None, decoy_rows: int | None = None,
                  secagg_devices: int = 50, clear_sum: bool = False,
                  own: Mapping[str, object] | None = None) -> dict:
    """The privacy bench record (without ``env``). ``dp_clip`` None: the median update norm
    of the plain run; ``decoy_rows`` None: the run's setting; ``secagg_devices`` 0: no
    plain-against-secagg round timing; ``own``: mode-specific settings (by field name),
    each applied to the modes it belongs to."""
    own = dict(own or {})
    unknown = sorted(set(modes) - set(MODES))
    if unknown or "plain" not in modes:
        raise ValueError(f"modes must include plain and be among {', '.join(MODES)}; "
                         f"found {', '.join(modes)}")
    result: dict = {"bench": "privacy", "dataset": settings.dataset,
                    "protocol": settings.protocol, "metric": headline(settings.explicit),
                    "settings": settings.to_run_config(), "modes": {}}
    plain = _run(for_mode(settings, "plain"), True, progress)
    result["centralized"] = plain.pop("centralized")
    name, metrics = baseline(settings)
    result[name] = metrics
    result["modes"]["plain"] = plain
    clip = dp_clip if dp_clip is not None else plain["update_norm_median"]
    rows = settings.decoy_rows if decoy_rows is None else decoy_rows
    result["dp_clip"], result["decoy_rows"] = clip, rows
    if "decoy" in modes:
        result["modes"]["decoy"] = _run(replace(in_mode(settings, "decoy", own),
                                                decoy_rows=rows),
                                        False, progress)
    for eps in epsilons if "dp" in modes else ():
        result["modes"][f"dp-eps{eps:g}"] = _dp_run(settings, "dp", eps, clip, rows, progress)
    if "decoy+dp" in modes and epsilons:
        eps = max(epsilons)
        result["modes"][f"decoy+dp-eps{eps:g}"] = _dp_run(settings, "decoy+dp", eps, clip,
                                                          rows, progress)
    if "secagg+dp" in modes:
        for eps in epsilons:
            result["modes"][f"secagg+dp-eps{eps:g}"] = _ddp_run(settings, eps, clear_sum,
                                                                progress, own)
    if "secagg" in modes:
        result["modes"]["secagg"] = _run(in_mode(settings, "secagg", own), False, progress)
        if secagg_devices:
            result["secagg_cost"] = round_costs(
                settings, secagg_devices, progress=progress,
                modes=[m for m in COST_MODES if m in modes], own=own)
    for name, entry in result["modes"].items():  # each row says what its server learns
        m = privacy.mode(name.split("-eps")[0])
        entry["guarantee"], entry["server_learns"] = m.guarantee, m.server_learns
    return result


def _dp_run(settings: RunSettings, mode: str, eps: float, clip: float, rows: int,
            progress: Progress | None) -> dict:
    sigma = calibrate_noise(eps, settings.fraction_train, settings.num_rounds,
                            settings.dp_delta)
    run = replace(for_mode(settings, mode), dp_noise=sigma, dp_clip=clip, dp_epsilon=0.0,
                  **({"decoy_rows": rows} if privacy.mode(mode).padded else {}))
    return {**_run(run, False, progress), "target_epsilon": eps, "noise": sigma}


def baseline(settings: RunSettings) -> tuple[str, dict[str, float]]:
    """The simple baseline on the run's split: popularity (implicit), item and user biases
    (ratings)."""
    parts = simulated_partitions(settings.dataset, settings.protocol, settings.fold,
                                 settings.data_dir)
    name = "bias" if settings.explicit else "popularity"
    model = make_model(name, mf_config(settings.protocol))
    fit(model, parts.split.train, None)
    return name, evaluate(model, parts.split)


def in_mode(settings: RunSettings, mode: str, own: Mapping[str, object]) -> RunSettings:
    """``settings`` for a run in ``mode``, with those of the ``own`` settings it takes."""
    takes = privacy.mode(mode).settings
    return for_mode(settings, mode, **{k: v for k, v in own.items() if k in takes})


def ddp_settings(settings: RunSettings, eps: float, own: Mapping[str, object]
                 ) -> RunSettings:
    """secagg+dp at ``eps``: its preset on the run's data and seed, with the run's share
    of devices per round and those of the ``own`` settings secagg+dp takes."""
    takes = privacy.mode("secagg+dp").settings
    return replace(ddp_preset(eps, settings.explicit, settings.dataset),
                   dataset=settings.dataset,
                   protocol=settings.protocol, fold=settings.fold,
                   data_dir=settings.data_dir, seed=settings.seed,
                   fraction_train=settings.fraction_train,
                   **{k: v for k, v in own.items() if k in takes and k != "dp_epsilon"})


def _ddp_run(settings: RunSettings, eps: float, clear: bool, progress: Progress | None,
             own: Mapping[str, object]) -> dict:
    """secagg+dp at ``eps`` with its preset (:func:`~fedrec.simulations.models.presets.ddp_preset`)
    and the run's share of devices per round, through real SecAgg+ unless ``clear``; the
    curious server's attack on what it holds (the masked vectors: among the rows they cover,
    and what the public row set alone tells), and the strongest adversary's on one
    release."""
    if progress:
        progress(f"secagg+dp at epsilon {eps:g}", 0, 1)
    s = ddp_settings(settings, eps, own)
    watch = _Watcher()
    strategy, seconds = federate(s, clear, None if clear else watch)
    parts = simulated_partitions(s.dataset, s.protocol, s.fold, s.data_dir)
    rounds = max(1, len(strategy.history))
    out = {**evaluate_solved(strategy.model.params, parts, s.ddp_user_reg,
                             explicit=s.explicit),
           "seconds_per_round": seconds / rounds, "epsilon": strategy.epsilon,
           "delta": s.dp_delta, "target_epsilon": eps, "noise": strategy.noise,
           "rows": len(strategy.layout.rows), "rounds": rounds,
           "sum": "clear (SecAgg+'s arithmetic, no masks)" if clear else "SecAgg+",
           "settings": {k: v for k, v in s.to_run_config().items()
                        if k in ("factors", "num-rounds", "ddp-rows", "ddp-item-reg",
                                 "ddp-user-reg", "ddp-select-share", "ddp-bits")},
           "attack": {"one_release_knowing_every_other_device":
                      _release_attack(strategy, parts, s.seed)}}
    if not clear:
        out["upload_bytes_per_device_round"] = watch.upload / max(1, watch.train_replies)
        truth = {node: np.unique(parts.user(node - FIRST_NODE).train_items)
                 for node in watch.masked}
        fit_rows = strategy.layout.rows
        t = triangle(s.factors + 1)
        d = s.factors + 1
        replies = []
        for node, masked in watch.masked.items():
            vector = np.asarray(masked[1], dtype=np.float64)
            if len(vector) == t + len(fit_rows) * d:  # a fit round's: score by the bias slot
                replies.append((fit_rows, vector[t + d - 1::d], truth[node]))
        out["attack"]["membership"] = membership_auc(replies, parts.n_items)
        # The row set is public (the same for every device): knowing an item is among the
        # popular ones it holds is worth this much with no reply at all.
        out["attack"]["row_set_prior_auc"] = membership_auc(
            [(ids, np.zeros(len(ids)), items) for ids, _, items in replies],
            parts.n_items)["catalogue_auc"]
    return out


def _release_attack(strategy: SecAggDpFedRec, parts: Partitions, seed: int) -> dict:
    """Membership AUC of the strongest adversary on the row-choice release: it knows every
    other device's contribution, subtracts it, and ranks items by what is left (the
    device's vector plus the sum's whole noise). Over up to 300 devices."""
    if not strategy.encodings:
        return {}
    enc = strategy.encodings[0]
    n = int(strategy.history[0]["train"]["accepted"])
    std = enc.noise_std(n)
    rng = np.random.default_rng([seed, 23])
    scores, labels = [], []
    if enc.dim != parts.n_items:  # (no row-choice round: the row set is the catalogue)
        return {}
    for uid in range(min(parts.n_users, 300)):
        pos = np.unique(parts.user(uid).train_items)
        x = als.popularity(pos, parts.n_items, enc.clip)
        member = np.zeros(parts.n_items, bool)
        member[pos] = True
        scores.append(x + rng.normal(0, std, parts.n_items))
        labels.append(member)
    aucs = [auc(sc, lb) for sc, lb in zip(scores, labels, strict=True)]
    return {"auc_mean": float(np.nanmean(aucs)), "auc_max": float(np.nanmax(aucs)),
            "devices": len(aucs), "release": "row choice (popularity)"}


def plot(record: dict, path: str) -> str:
    """Quality against ε for dp and secagg+dp, with plain, the other modes, centralized
    and popularity as lines."""
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
    ddp = sorted((m for name, m in record["modes"].items()
                  if name.startswith("secagg+dp") and np.isfinite(m[key])),
                 key=lambda m: m["epsilon"])
    if ddp:
        ax.plot([m["epsilon"] for m in ddp], [m[key] for m in ddp], marker="s",
                color="tab:blue", label="federated, secagg+dp (user-level)")
    for name in ("popularity", "bias"):
        if record.get(name, {}).get(key) is not None:
            ax.axhline(record[name][key], color="tab:gray", linestyle=":",
                       label=f"{name} baseline")
    ax.axhline(record["modes"]["plain"][key], color="tab:green", linestyle="--",
               label="federated, plain")
    for name, color in (("decoy", "tab:purple"), ("secagg", "tab:orange")):
        mode = record["modes"].get(name)
        if mode and np.isfinite(mode.get(key, np.nan)):
            ax.axhline(mode[key], color=color, linestyle="-.", label=f"federated, {name}")
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


COST_MODES = ("plain", "secagg", "secagg+dp")


def _cost_settings(settings: RunSettings, mode: str, fraction: float, rounds: int,
                   own: Mapping[str, object]) -> RunSettings:
    """The run timed for ``mode``: the run's settings with the mode's ``own`` (secagg+dp:
    its preset at ε 8), ``rounds`` training rounds."""
    if mode != "secagg+dp":
        return replace(in_mode(settings, mode, own), fraction_train=fraction,
                       num_rounds=rounds, evaluate_every=rounds,
                       fraction_evaluate=min(1.0, settings.fraction_evaluate))
    return replace(ddp_settings(settings, 8.0, own), fraction_train=fraction,
                   num_rounds=rounds)


def round_costs(settings: RunSettings, devices: int = 50, rounds: int = 4,
                progress: Progress | None = None, modes: Sequence[str] = COST_MODES[:2],
                own: Mapping[str, object] | None = None) -> dict:
    """Seconds per training round and bytes each device uploads per round with
    ``devices`` devices per round, for each of ``modes`` (``plain`` first), measured in this
    one call (the machine's load is shared by all).

    A round's time runs from its first message to the next round's first message, so it
    includes the server's work; rounds 2 .. ``rounds − 1`` are timed (round 1 warms up
    caches, the last is followed by evaluation). A device's upload is every byte of its
    train replies in a round (for SecAgg+, every stage's: keys, shares, masked vector,
    unmasking). For secagg, each SecAgg+ stage's wall time is reported too, the rest of the
    round being the server's unmasking and model step. secagg+dp runs one round more, its
    row choice (round 1, reported apart as ``select``); its fit rounds are timed the same
    way.
    """
    if rounds < 3:
        raise ValueError("round_costs needs rounds >= 3")
    if not modes or modes[0] != "plain" or set(modes) - set(COST_MODES):
        raise ValueError(f"cost modes start with plain and are among {COST_MODES}")
    parts = simulated_partitions(settings.dataset, settings.protocol, settings.fold,
                                 settings.data_dir)
    if devices > parts.n_users:
        raise ValueError(f"{devices} devices per round, but the data has {parts.n_users}")
    # A fraction a hair above devices/n, so int(n · fraction) is exactly `devices`.
    fraction = min(1.0, (devices + 0.5) / parts.n_users)
    out: dict = {"devices_per_round": devices, "rounds_timed": rounds - 2,
                 "n_items": parts.n_items}
    for mode in modes:
        events: list[tuple[float, int, str, str, int]] = []  # time, round, dir, stage, bytes
        asked: dict[int, str] = {}  # the SecAgg+ stage each device was last asked for
        rounds_of: dict[int, int] = {}  # the round each device was last sent

        def observe(direction: str, msg: Message, events: list = events,
                    asked: dict = asked, rounds_of: dict = rounds_of) -> None:
            if msg.metadata.message_type != "train":
                return
            content = msg.content
            stage = ""
            if direction == "to-device" and RECORD_KEY_CONFIGS in content.config_records:
                stage = str(content.config_records[RECORD_KEY_CONFIGS].get("stage", ""))
                asked[msg.metadata.dst_node_id] = stage
            elif direction == "to-server":
                stage = asked.get(msg.metadata.src_node_id, "")
            rnd = msg.metadata.group_id
            if not rnd and records.CONFIG in content.config_records:
                rnd = str(content.config_records[records.CONFIG].get("server-round", ""))
            if direction == "to-device":
                rounds_of[msg.metadata.dst_node_id] = int(rnd or 0)
                size = 0
            else:  # a reply answers the device's last message (plain's carry no group id)
                rnd = rnd or rounds_of.get(msg.metadata.src_node_id, 0)
                size = payload_bytes(content)
            events.append((time.perf_counter(), int(rnd or 0), direction, stage, size))

        run = _cost_settings(settings, mode, fraction, rounds, dict(own or {}))
        simulate(run, progress=progress, centralized=False, observer=observe)
        starts: dict[int, float] = {}
        for t, rnd, *_ in events:
            starts.setdefault(rnd, t)
        first = 2 if mode == "secagg+dp" else 1  # the first fit round
        timed = range(first + 1, first + rounds - 1)
        ends = {**starts, max(starts) + 1: events[-1][0]}
        per_round = [ends[r + 1] - starts[r] for r in timed]

        def upload(rnd: int, events: list = events) -> float:
            sent = [b for _, rr, d, _, b in events if rr == rnd and d == "to-server"]
            return sum(sent) / devices

        entry = {"seconds_per_round": float(np.median(per_round)),
                 "rounds": [float(x) for x in per_round],
                 "upload_bytes_per_device_round": float(np.median([upload(r)
                                                                   for r in timed]))}
        if mode == "secagg+dp":
            entry["select"] = {"seconds": ends[2] - starts[1],
                               "upload_bytes_per_device": upload(1)}
        if mode == "secagg":
            stages: dict[str, list[float]] = {}
            for r in timed:
                mine = [(t, st) for t, rr, d, st, _ in events if rr == r and d == "to-server"]
                sent = [(t, st) for t, rr, d, st, _ in events if rr == r and d == "to-device"]
                for stage in STAGES:
                    begin = min(t for t, st in sent if st == stage)
                    last = max(t for t, st in mine if st == stage)
                    stages.setdefault(stage, []).append(last - begin)
                last_reply = max(t for t, _ in mine)
                stages.setdefault("server unmask and step", []).append(ends[r + 1] - last_reply)
            entry["stages"] = {k: float(np.median(v)) for k, v in stages.items()}
        out[mode] = entry
    base = out["plain"]
    for mode in modes[1:]:
        out[mode]["time_ratio"] = out[mode]["seconds_per_round"] / base["seconds_per_round"]
        out[mode]["upload_ratio"] = (out[mode]["upload_bytes_per_device_round"]
                                     / base["upload_bytes_per_device_round"])
    if "secagg" in out:
        out["ratio"] = out["secagg"]["time_ratio"]
    return out
