"""The ``fedrec`` command.

``fedrec bench quality``   centralized model beside baselines on a protocol (JSON with --json)
``fedrec bench engine``    ClientApp cost per message against a trivial one; upload bytes
``fedrec bench data``      time loading, generating the synthetic shop, and evaluating
``fedrec bench stream``    replay a timeline: federated and centralized models, prequential
``fedrec bench privacy``   each privacy mode: quality, bytes, time, epsilon, attack AUC
``fedrec bench edge``      the embedded client: record+update and top-10 latency, memory, disk
``fedrec bench attack``    poisoning attacks by malicious devices, defences off and on
``fedrec bench hostile``   every kind of hostile reply, refused by name, changing nothing
``fedrec bench mean-shift`` how far one hostile device moves the global mean
``fedrec simulate``        federated training on one machine beside the centralized model
``fedrec download NAME``   fetch a MovieLens archive, verify its checksum, unpack it
``fedrec data info NAME``  what a dataset holds: sizes, event types, activity imbalance
``fedrec keys``            a CA, the SuperLink's TLS certificate, SuperNodes' ECDSA keys
``fedrec catalogue``       check, show and change a shop's catalogue file
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from fedrec.client.stream import MODES
from fedrec.common import neighbours, privacy
from fedrec.common.data.download import SOURCES, ChecksumError, download_dataset
from fedrec.common.data.errors import DataFormatError
from fedrec.common.data.interactions import EventType, Interactions
from fedrec.common.data.registry import DATASETS, ENV_VAR, DatasetNotFoundError, load_dataset
from fedrec.common.defences import DEFAULT, OFF
from fedrec.common.partition import simulated_partitions
from fedrec.common.privacy import NAMES as PRIVACY
from fedrec.common.segments import segments_line
from fedrec.common.settings import RunSettings
from fedrec.common.split import PROTOCOLS, is_explicit
from fedrec.simulations.attacks.stream_freeze import TINY
from fedrec.simulations.benches.data import bench_data
from fedrec.simulations.benches.engine import bench_engine
from fedrec.simulations.benches.privacy import COST_MODES, bench_privacy, round_costs
from fedrec.simulations.benches.privacy import MODES as PRIVACY_MODES
from fedrec.simulations.benches.privacy import plot as privacy_plot
from fedrec.simulations.benches.progress import progress_bar
from fedrec.simulations.benches.quality import bench_quality, models_for
from fedrec.simulations.benches.results import RESULTS_DIR, environment, write_json
from fedrec.simulations.benches.simulate import ENGINES, plot, simulate
from fedrec.simulations.benches.stream import ALL_MODELS, bench_stream
from fedrec.simulations.benches.stream import plot as stream_plot
from fedrec.simulations.cli import catalogue as catalogue_cli
from fedrec.simulations.engines.replay import KINDS, load_timeline
from fedrec.simulations.models.presets import (
    STREAM_EXPLICIT,
    STREAM_IMPLICIT,
    ddp_preset,
    mf_config,
    preset_settings,
    stream_settings,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedrec`` console command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["superlink"] and argv[1:2] not in (["-h"], ["--help"]):
        # Flower's own arguments follow: handed on as they are, not parsed here.
        from fedrec.server.control.superlink import main as superlink

        try:
            superlink(argv[1:])
        except ValueError as exc:
            print(f"fedrec: error: {exc}", file=sys.stderr)
            return 2
        return 0
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (DataFormatError, DatasetNotFoundError, ChecksumError, FileExistsError,
            ValueError) as exc:
        print(f"fedrec: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # network and disk failures: say what failed, no traceback
        print(f"fedrec: error: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedrec", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    bench = sub.add_parser("bench", help="benchmarks (results as JSON)")
    bench_sub = bench.add_subparsers(required=True, metavar="BENCH")
    quality = bench_sub.add_parser(
        "quality", help="centralized MF beside baselines on one protocol",
        description="Fit the centralized model and the baselines on the protocol's training "
                    "rows and score them on its held-out rows, in one run.")
    _dataset_args(quality)
    quality.add_argument("--protocol", choices=PROTOCOLS, default="implicit-80-20")
    quality.add_argument("--models", help="comma-separated models (default: baselines and "
                                          "centralized-mf; add federated-mf for the "
                                          "federated simulation)")
    quality.add_argument("--epochs", type=int, help="override the preset's epochs")
    quality.add_argument("--factors", type=int, help="override the preset's factors")
    quality.add_argument("--seed", type=int, help="seed of the model's initialisation")
    _output_args(quality)
    quality.set_defaults(run=_run_quality)

    engine = bench_sub.add_parser(
        "engine", help="ClientApp cost per message vs a trivial ClientApp; upload bytes",
        description="Send the same train messages to every simulated device through fedrec's "
                    "ClientApp and through a trivial one, in one run; time a whole round; "
                    "measure upload bytes per device against the dense item table.")
    _dataset_args(engine)
    engine.add_argument("--protocol", choices=PROTOCOLS, default="explicit-5fold")
    engine.add_argument("--engines", default="inprocess",
                        help="comma-separated: inprocess, ray")
    engine.add_argument("--repeats", type=int, default=3)
    engine.add_argument("--workers", default="1",
                        help="comma-separated worker-process counts to time a whole "
                             "in-process round with, e.g. 1,2")
    engine.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="run-config overrides of the preset, repeatable")
    _output_args(engine)
    engine.set_defaults(run=_run_bench_engine)

    stream = bench_sub.add_parser(
        "stream", help="replay a timeline: federated and centralized models, prequential",
        description="Replay the dataset in time order; every model scores each event before "
                    "it learns from it. Federated (incremental and recursive modes, content "
                    "or neutral start for new items), centralized incremental, periodic "
                    "retrain, static, and a simple baseline, on the same stream.")
    _dataset_args(stream)
    stream.add_argument("--kind", choices=KINDS, default="implicit",
                        help="ratings (explicit) or every event as a positive (implicit)")
    stream.add_argument("--models", help=f"comma-separated, from: {', '.join(ALL_MODELS)}; "
                                         "any federated-MODE[-neutral] (default: all that "
                                         "apply)")
    stream.add_argument("--tick-events", type=int, help="events per tick (default: preset)")
    stream.add_argument("--tick-seconds", type=int,
                        help="a span of time per tick instead (e.g. 86400 for daily rounds)")
    stream.add_argument("--mode", choices=MODES, default="incremental",
                        help="mode of the model named federated-incremental... ")
    stream.add_argument("--buffer", type=int, help="events an incremental device replays")
    stream.add_argument("--replay", type=float,
                        help="older buffer events an incremental device replays per new one "
                             "(default: preset)")
    stream.add_argument("--others-share", type=float, default=0.0,
                        help="random devices without new events per round, as a share of "
                             "those with new events")
    stream.add_argument("--prefix", type=float, default=1.0,
                        help="replay only this first share of the timeline (e.g. 0.2, the "
                             "warm-up prefix settings are chosen on)")
    stream.add_argument("--window", type=int, default=10_000,
                        help="sliding window of the curves, in events")
    stream.add_argument("--workers", type=int, default=1,
                        help="processes the simulated devices run in")
    stream.add_argument("--engines", default="inprocess",
                        help="engines the federated models run on, comma-separated: "
                             "inprocess, ray (Flower's Ray simulation; both: NAME@ray "
                             "beside NAME)")
    stream.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="run-config overrides of the federated model, repeatable")
    stream.add_argument("--variant", action="append", default=[],
                        metavar="NAME:KEY=VALUE[,KEY=VALUE...]",
                        help="run every federated model again with these overrides on top "
                             "of --set, as MODEL+NAME in the same record (repeatable), e.g. "
                             "pool:negative-pool=0.005,negative-pool-rounds=5")
    stream.add_argument("--freezers", type=int, default=0,
                        help="extra devices in every round of the federated replays, each "
                             "moving every row (an attack on the server's per-row state)")
    stream.add_argument("--freeze-norm", type=float, default=TINY,
                        help="the norm of each freezer's move on a row (default: %(default)g)")
    stream.add_argument("--neighbours", type=int,
                        help="ratings: each item's neighbours in the model's neighbours part "
                             "(0: off; default: the preset's, off on catalogues too large "
                             "for its dense statistics)")
    stream.add_argument("--plot", type=Path, help="PNG of the curves (default: beside the JSON)")
    _output_args(stream)
    stream.set_defaults(run=_run_bench_stream)

    priv = bench_sub.add_parser(
        "privacy", help="quality, bytes, time, epsilon and attack AUC per privacy mode",
        description="One federated simulation per privacy mode (plain, decoy, dp with the noise "
                    "calibrated to each target epsilon, decoy+dp, secagg, secagg+dp at each "
                    "target epsilon with its preset), on the same split, "
                    "beside the centralized model; a curious server's attacks on each, and "
                    "plain against secagg rounds timed with --secagg-devices devices.")
    _dataset_args(priv)
    priv.add_argument("--protocol", choices=PROTOCOLS, default="implicit-80-20")
    priv.add_argument("--epsilons", default="1,2,4,8", help="target epsilons for dp")
    priv.add_argument("--rounds", type=int, help="federated rounds (default: preset)")
    priv.add_argument("--modes", default=",".join(PRIVACY_MODES),
                      help=f"comma-separated, among {','.join(PRIVACY_MODES)} (plain always)")
    priv.add_argument("--dp-clip", type=float,
                      help="dp clip bound (default: the median update norm of the plain run)")
    priv.add_argument("--decoy-rows", type=int,
                      help="rows per reply in decoy modes (default: the run's decoy-rows)")
    priv.add_argument("--secagg-devices", type=int, default=50,
                      help="devices per round when timing plain against secagg (0: skip)")
    priv.add_argument("--clear-sum", action="store_true",
                      help="secagg+dp: add the devices' noisy integer vectors with SecAgg+'s "
                           "arithmetic but no masks (bit-identical sums; for populations too "
                           "large for real SecAgg+ on one machine)")
    priv.add_argument("--cost-only", action="store_true",
                      help="only time rounds and count devices' upload, plain against "
                           "secagg and secagg+dp among --modes (all three by default)")
    priv.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="run-config overrides, e.g. secagg-shares=5; repeatable")
    priv.add_argument("--plot", type=Path, help="PNG of the curve (default: beside the JSON)")
    _output_args(priv)
    priv.set_defaults(run=_run_bench_privacy)

    edge = bench_sub.add_parser(
        "edge", help="the embedded client's latency, memory and store size",
        description="On a real encrypted file store: record one event with its online step "
                    "(median, p95), top-10 over each catalogue size, peak memory, disk size.")
    edge.add_argument("--items", default="10000,100000", help="catalogue sizes")
    edge.add_argument("--factors", type=int, default=32)
    edge.add_argument("--events", type=int, default=500, help="events recorded per size")
    edge.add_argument("--dir", type=Path, help="where the store is made (default: temp)")
    _output_args(edge)
    edge.set_defaults(run=_run_bench_edge)

    hostile = bench_sub.add_parser(
        "hostile", help="every kind of hostile reply, each refused by name, model unchanged",
        description="Two runs of the ServerApp and ClientApp on the in-process engine (explicit "
                    "and implicit): a control where some devices fail, and an attack where "
                    "they send every kind of hostile reply (bad metrics, malformed arrays and "
                    "records, duplicates, replays, stale and forged replies). Prints how many "
                    "were refused with the named reason and whether the model stayed "
                    "bit-identical; exits 1 otherwise.")
    hostile.add_argument("--dataset", default=None,
                         help="a synthetic:... or csv: shop (default: a small synthetic shop)")
    hostile.add_argument("--rounds", type=int, default=3)
    _output_args(hostile)
    hostile.set_defaults(run=_run_bench_hostile)

    atk = bench_sub.add_parser(
        "attack", help="poisoning attacks by malicious devices, defences off and on",
        description="Malicious simulated devices (a fraction of the honest ones) run each "
                    "attack of fedrec.simulations.attacks beside the dataset's honest "
                    "devices, on the in-process engine with the real ServerApp, with the "
                    "server's defences off and on. Prints, per attack, fraction, target and "
                    "defences: honest users' ER@10 of the target, its median rank and "
                    "honest NDCG@10 (ratings: RMSE and the target's predicted rating); "
                    "writes JSON and a PNG of exposure per round.")
    atk.add_argument("--dataset", default="synthetic")
    atk.add_argument("--data-dir", type=Path, help=f"dataset folder (default: ${ENV_VAR})")
    atk.add_argument("--protocol", default="implicit-80-20",
                     choices=("explicit-5fold", "explicit-80-20", "implicit-80-20"))
    atk.add_argument("--fold", type=int, default=0)
    atk.add_argument("--attacks", default=None,
                     help="comma-separated (default: every attack)")
    atk.add_argument("--fractions", default="0.001,0.01,0.05,0.1",
                     help="malicious devices per honest device, comma-separated")
    atk.add_argument("--targets", default="tail",
                     help="comma-separated among tail (10th popularity percentile), middle")
    atk.add_argument("--defences", default="off/default",
                     help="defence settings to compare, /-separated: off, default, or a "
                          "comma-separated list of defences")
    atk.add_argument("--evaluate-every", type=int, default=None,
                     help="rounds between evaluations (default: about 4 per run)")
    atk.add_argument("--jobs", type=int, default=1,
                     help="runs at once, each in its own process (same record)")
    atk.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="any run-config key, e.g. --set num-rounds=6; repeatable")
    atk.add_argument("--plot", type=Path, help="PNG of exposure per round (default: beside "
                                               "the JSON)")
    atk.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    _output_args(atk)
    atk.set_defaults(run=_run_bench_attack)

    patk = bench_sub.add_parser(
        "pairs-attack", help="pushes on the pairs model, its defence off and on",
        description="Malicious simulated devices claim a tail item with popular ones "
                    "(fedrec.simulations.attacks.pairs_push) beside the honest devices of "
                    "generated 2,000-event shops, on the in-process engine with the real "
                    "ServerApp (model=pairs), with the copies defence off and on. Prints "
                    "the mean over shops of honest users' ER@10 of the target, its median "
                    "rank, honest NDCG@10 and the devices set aside; writes JSON.")
    patk.add_argument("--shops", type=int, default=5,
                      help="generated shops, seeds 1..N (150 customers, 115 SKUs, 2,000 "
                           "events each)")
    patk.add_argument("--dataset", default=None,
                      help="one dataset instead of the generated shops")
    patk.add_argument("--attacks", default="push,push-jitter,push-subset")
    patk.add_argument("--fractions", default="0.01,0.05,0.1")
    patk.add_argument("--rounds", type=int, default=2)
    _output_args(patk)
    patk.set_defaults(run=_run_bench_pairs_attack)

    shift = bench_sub.add_parser(
        "mean-shift", help="how far one hostile device moves μ, plain and secagg",
        description="On an explicit dataset: the global mean μ from the honest query, then "
                    "with the one device that can move it most lying (plain: an end of the "
                    "scale as its mean; secagg: what its bucket's secure sum must gain to "
                    "put the bucket's mean at an end, added to its masked vector), and with "
                    "it sending garbage. Same run, same buckets.")
    shift.add_argument("--dataset", default="ml-100k", help="an explicit dataset")
    shift.add_argument("--data-dir", type=Path, help=f"dataset folder (default: ${ENV_VAR})")
    shift.add_argument("--bucket", type=int, default=16, help="devices per secure sum")
    _output_args(shift)
    shift.set_defaults(run=_run_bench_mean_shift)

    tune_p = bench_sub.add_parser(
        "tune", help="choose a federated run's settings on the validation split",
        description="Every combination of a grid of run settings, each a full federated "
                    "simulation on the validation split (the training events split again: "
                    "no test event seen), beside the simple baseline; prints the best. How "
                    "a preset is chosen.")
    _grid_args(tune_p, "e.g. server-lr=0.01,0.03 (repeatable)", required=True)
    tune_p.add_argument("--model", choices=("federated-mf", "centralized-mf"),
                        default="federated-mf",
                        help="what to tune: the federated run (grid keys are run-config "
                             "keys) or the centralized reference it is compared with (grid "
                             "keys are its fields: lr, reg, reg-bias, epochs, n-factors, "
                             "negatives, batch-size, ...)")
    tune_p.set_defaults(run=_run_bench_tune)

    tune_ddp = bench_sub.add_parser(
        "tune-ddp", help="choose secagg+dp's settings on the validation split",
        description="Every combination of secagg+dp's learner settings (factors, row set, "
                    "rounds, item and user regularisation) at one epsilon, on the "
                    "validation split (the training events split again: no test event "
                    "seen), with clear sums; prints the best. How the presets were chosen.")
    _grid_args(tune_ddp, "e.g. ddp-item-reg=10,20 (repeatable; replaces the default grid)")
    tune_ddp.add_argument("--epsilon", type=float, default=8.0)
    tune_ddp.add_argument("--fast", action="store_true",
                          help="implicit models: every round's devices summed in one "
                               "vectorised step, the noise drawn once (seconds, not hours, "
                               "for 100,000 devices; checked against the Flower run)")
    tune_ddp.set_defaults(run=_run_bench_tune_ddp)

    data_bench = bench_sub.add_parser(
        "data", help="time loading, generating and evaluating",
        description="Time MovieLens loading (each dataset found), the synthetic shop generator "
                    "and a full-ranking evaluation of ML-100K; best of --repeats.")
    data_bench.add_argument("--data-dir", type=Path,
                            help=f"folder with the datasets (default: ${ENV_VAR})")
    data_bench.add_argument("--repeats", type=int, default=3)
    data_bench.add_argument("--events", type=int, default=1_000_000,
                            help="synthetic events to generate")
    _output_args(data_bench)
    data_bench.set_defaults(run=_run_bench_data)

    sim = sub.add_parser(
        "simulate", help="federated training on one machine, beside the centralized model",
        description="Run fedrec's Flower ServerApp and ClientApp with one simulated device per "
                    "user; score the federated and the centralized model on the same split.")
    _dataset_args(sim)
    defaults = RunSettings()
    sim.add_argument("--protocol", choices=PROTOCOLS, default=defaults.protocol)
    sim.add_argument("--fold", type=int, default=0, help="fold of explicit-5fold")
    sim.add_argument("--rounds", type=int, default=None, help="federated rounds")
    per_round = sim.add_mutually_exclusive_group()
    per_round.add_argument("--fraction", type=float, default=None,
                           help="share of devices sampled per round (default: preset)")
    per_round.add_argument("--devices-per-round", type=int, default=None, metavar="N",
                           help="devices sampled per round (instead of --fraction)")
    sim.add_argument("--privacy", choices=PRIVACY, default=None,
                     help="privacy mode (default: the run config's, plain); its knobs with "
                          "--set, e.g. decoy-rows, dp-noise, secagg-shares")
    sim.add_argument("--engine", choices=ENGINES, default="inprocess")
    sim.add_argument("--workers", type=int, default=1,
                     help="in-process engine: processes the devices run in (same results "
                          "for any number; the centralized reference takes one more)")
    sim.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="any run-config key (see pyproject [tool.flwr.app.config]), "
                          "e.g. --set server-lr=0.02; repeatable")
    sim.add_argument("--no-centralized", action="store_true",
                     help="skip the centralized reference model")
    sim.add_argument("--plot", type=Path, help="PNG of the metric per round "
                                               "(default: beside the JSON)")
    _output_args(sim)
    sim.set_defaults(run=_run_simulate)

    keys = sub.add_parser(
        "keys", help="the operator's credentials for a deployment",
        description="Create a certificate authority (ca.crt, ca.key), the SuperLink's TLS "
                    "certificate for --hosts (server.pem, server.key), the operator's Ed25519 "
                    "key (operator, operator.pub) and the trusted-entities file devices "
                    "check apps against (trusted-entities.yaml), the secret the SuperLink "
                    "shares with its SuperExec (superexec.secret) and the checkpoint's key "
                    "(checkpoint.key); with --nodes N, also N SuperNode key pairs (node-N, "
                    "node-N.pub: a demo shortcut, a device makes its own with device-keys).")
    keys.add_argument("--out", type=Path, default=Path("keys"), help="folder (default: keys)")
    keys.add_argument("--hosts", default="127.0.0.1,localhost",
                      help="the SuperLink's host names and addresses, comma-separated")
    keys.add_argument("--nodes", type=int, default=0, help="SuperNode key pairs to create")
    keys.add_argument("--force", action="store_true", help="replace existing files")
    keys.set_defaults(run=_run_keys)

    device_keys = sub.add_parser(
        "device-keys", help="a device's own credentials (made on the device)",
        description="Create, in DIR, the device's SuperNode key pair (node, node.pub: the "
                    "operator registers node.pub) and the secret its SuperNode shares with "
                    "its SuperExec (superexec.secret).")
    device_keys.add_argument("dir", type=Path)
    device_keys.add_argument("--force", action="store_true", help="replace existing files")
    device_keys.set_defaults(run=_run_device_keys)

    operator = sub.add_parser("operator", help="the operator's commands: tokens, signed apps")
    operator_sub = operator.add_subparsers(required=True, metavar="COMMAND")
    login = operator_sub.add_parser(
        "login", help="sign a Control API token for the stock flwr CLI",
        description="Sign a token with the operator key and store it where the flwr CLI "
                    "reads it ($FLWR_HOME/credentials.yaml): flwr supernode register, "
                    "flwr run, flwr ls ... then work against a fedrec superlink.")
    login.add_argument("federation", nargs="?", help="the flwr CLI's name for the SuperLink")
    login.add_argument("--key", type=Path, required=True, help="the operator's private key")
    login.add_argument("--ttl", default="12h", help="the token's life (at most 24h)")
    login.add_argument("--audience", default="fedrec-superlink")
    login.set_defaults(run=_run_operator_login)
    sign = operator_sub.add_parser(
        "sign-app", help="sign an app for flwr run (prints the run-config override)",
        description="Print fedrec-app-signature=\"...\": the signature of the FAB flwr run "
                    "builds from APP, for --run-config.")
    sign.add_argument("app", type=Path, help="the app's folder (a fedrec checkout)")
    sign.add_argument("--key", type=Path, required=True, help="the operator's private key")
    sign.set_defaults(run=_run_operator_sign)

    superlink = sub.add_parser(
        "superlink", help="Flower's SuperLink with an operator-only control plane",
        description="flower-superlink with the Control API open to the operator's tokens "
                    "only and, with --app-signers, only operator-signed apps: fedrec "
                    "superlink --operator-keys keys/operator.pub --app-signers "
                    "keys/trusted-entities.yaml -- FLOWER-SUPERLINK-ARGS...")
    superlink.add_argument("args", nargs=argparse.REMAINDER)
    superlink.set_defaults(run=_run_superlink)

    download = sub.add_parser("download", help="fetch and verify a MovieLens dataset")
    download.add_argument("name", choices=sorted(SOURCES))
    download.add_argument("--data-dir", type=Path,
                          help=f"where to put it (default: ${ENV_VAR} or ./data)")
    download.add_argument("--url", help="a mirror's URL of the same archive")
    download.add_argument("--digest", help="expected digest of the mirror's file, sha256:HEX")
    download.set_defaults(run=_run_download)

    data = sub.add_parser("data", help="inspect datasets")
    data_sub = data.add_subparsers(required=True, metavar="ACTION")
    info = data_sub.add_parser("info", help="sizes, event types and imbalance of a dataset")
    _dataset_args(info, positional=True)
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=_run_info)
    export = data_sub.add_parser(
        "export", help="write a dataset's events as a CSV event log (what csv:PATH reads), "
        "e.g. a synthetic shop of another shape to try a run on; items without events, item "
        "features and listing times are not in an event log")
    _dataset_args(export, positional=True)
    export.add_argument("--out", type=Path, required=True, help="the CSV file to write")
    export.set_defaults(run=_run_export)
    catalogue_cli.add_parser(sub)
    return parser


def _grid_args(parser: argparse.ArgumentParser, example: str, required: bool = False
               ) -> None:
    """A tuning bench's options: the dataset and protocol, the grid, the settings held
    fixed, the output."""
    _dataset_args(parser)
    parser.add_argument("--protocol", choices=PROTOCOLS, default="implicit-80-20")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        required=required, help=f"a setting's values to try, {example}")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="run-config values held fixed (over the preset), e.g. "
                             "fraction-train=0.3")
    _output_args(parser)


def _dataset_args(parser: argparse.ArgumentParser, positional: bool = False) -> None:
    names = ", ".join(DATASETS)
    if positional:
        parser.add_argument("dataset", help=f"one of: {names}")
    else:
        parser.add_argument("--dataset", default="synthetic", help=f"one of: {names}")
    parser.add_argument("--data-dir", type=Path,
                        help=f"folder with the dataset's files (default: ${ENV_VAR})")


def _output_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--out", type=Path, help="JSON file to write (default: under results/)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _run_quality(args: argparse.Namespace) -> int:
    data = load_dataset(args.dataset, args.data_dir)
    models = tuple(args.models.split(",")) if args.models else None
    if models:
        unknown = set(models) - set(models_for(args.protocol))
        if unknown:
            raise ValueError(f"models {sorted(unknown)} do not apply to {args.protocol}; "
                             f"choose from {', '.join(models_for(args.protocol))}")
    config = mf_config(args.protocol, epochs=args.epochs, n_factors=args.factors, seed=args.seed)
    with progress_bar(f"quality {data.name} {args.protocol}", args.quiet) as update:
        record = bench_quality(data, args.protocol, models, config, update,
                               data_dir=str(args.data_dir) if args.data_dir else None)
    record["env"] = environment()
    name = data.name.replace(":", "-").replace("/", "_")
    path = write_json(record, args.out or RESULTS_DIR / f"quality-{name}-{args.protocol}.json")
    if args.json:
        print(json.dumps(record))
    else:
        _print_table(record)
        print(f"results: {path}")
    return 0


def _settings(args: argparse.Namespace, **extra: object) -> RunSettings:
    """The protocol's preset, then the command's options, then every --set KEY=VALUE."""
    preset = preset_settings(args.dataset, args.protocol)
    mode = extra.get("privacy") or dict(_pairs(args.set)).get("privacy")
    if mode == "secagg+dp":  # its own learner and preset, at the asked budget
        eps = float(dict(_pairs(args.set)).get("dp-epsilon", 8.0))
        preset = replace(ddp_preset(eps, is_explicit(args.protocol), args.dataset),
                         dataset=args.dataset,
                         protocol=args.protocol)
    elif mode:
        preset = privacy.for_mode(preset, str(mode))
    base = preset.to_run_config()
    base.update(dataset=args.dataset, protocol=args.protocol,
                **{"data-dir": str(args.data_dir or os.environ.get(ENV_VAR) or "")})
    base.update({k: v for k, v in extra.items() if v is not None})
    return _with_sets(base, args.set)


def _pairs(sets: list[str]) -> list[tuple[str, str]]:
    out = []
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set takes KEY=VALUE, found {item!r}")
        out.append((key.strip(), value.strip()))
    return out


def _with_sets(base: dict, sets: list[str]) -> RunSettings:
    """``base`` run config with every ``--set KEY=VALUE`` applied, as settings."""
    for key, value in _pairs(sets):
        base[key] = value
    return RunSettings.from_run_config(base)


def _stem(dataset: str) -> str:
    """A dataset name made safe for a results file name."""
    return dataset.replace(":", "-").replace("/", "_")


def _mode_sets(sets: list[str]) -> tuple[list[str], dict[str, object]]:
    """``--set`` values split into the run's and the mode-specific ones (by field name,
    typed), which a bench over several modes applies to each mode that takes them."""
    owned = privacy.owned_settings()
    general, own = [], {}
    for key, value in _pairs(sets):
        name = key.replace("-", "_")
        if name in owned:
            own[name] = RunSettings.parse_value(key, value)
        else:
            general.append(f"{key}={value}")
    return general, own


def _run_bench_privacy(args: argparse.Namespace) -> int:
    args.set, own = _mode_sets(args.set)
    settings = _settings(args, **{"num-rounds": args.rounds})
    epsilons = tuple(float(e) for e in args.epsilons.split(",") if e.strip())
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    modes = modes if "plain" in modes else ("plain", *modes)
    with progress_bar(f"privacy {args.dataset} {args.protocol}", args.quiet) as update:
        if args.cost_only:
            record = {"bench": "privacy-secagg-cost", "dataset": args.dataset,
                      "protocol": args.protocol, "settings": settings.to_run_config(),
                      "secagg_cost": round_costs(
                          settings, args.secagg_devices or 50, progress=update,
                          modes=[m for m in COST_MODES if m in modes or len(modes) == 1],
                          own=own)}
        else:
            record = bench_privacy(settings, epsilons, update, modes, args.dp_clip,
                                   args.decoy_rows, args.secagg_devices, args.clear_sum, own)
    record["env"] = environment()
    name = _stem(args.dataset)
    out = args.out or RESULTS_DIR / f"privacy-{name}-{args.protocol}.json"
    path = write_json(record, out)
    if args.cost_only:
        cost = record["secagg_cost"]
        if args.json:
            print(json.dumps(record))
            return 0
        print(f"{cost['devices_per_round']} devices per round, {cost['n_items']} items")
        for mode in COST_MODES:
            if mode not in cost:
                continue
            c = cost[mode]
            ratios = (f" ({c['time_ratio']:.1f}x plain's time, {c['upload_ratio']:.1f}x its "
                      "upload)" if mode != "plain" else "")
            print(f"{mode:10s} {c['seconds_per_round']:8.2f} s/round "
                  f"{c['upload_bytes_per_device_round']:12,.0f} B/device/round{ratios}")
            if "select" in c:
                print(f"{'':10s} its row choice: {c['select']['seconds']:.2f} s, "
                      f"{c['select']['upload_bytes_per_device']:,.0f} B/device")
            if "stages" in c:
                print(f"{'':10s} stages: " + ", ".join(f"{k} {v:.3f} s"
                                                      for k, v in c["stages"].items()))
        print(f"results: {path}")
        return 0
    png = privacy_plot(record, str(args.plot or Path(out).with_suffix(".png")))
    if args.json:
        print(json.dumps(record))
    else:
        key = record["metric"]
        for ref in ("centralized", "popularity", "bias"):
            if record.get(ref):
                print(f"{ref:16s} {key} {record[ref][key]:.4f}")
        for mode, m in record["modes"].items():
            eps = "-" if m["epsilon"] is None else f"{m['epsilon']:.2f}"
            decoys = m.get("decoys", {}).get("real_vs_decoy_auc", {}).get("best")
            decoys = "" if decoys is None else f"  real-vs-decoy AUC {decoys:.3f}"
            attack = m["attack"].get("membership", m["attack"])
            aucs = (f"attack AUC {attack['catalogue_auc']:.3f} / named rows "
                    f"{attack['named_rows_auc']:.3f}" if "catalogue_auc" in attack
                    else "attack AUC -")
            upload = m.get("upload_bytes_per_device_round")
            upload = "-" if upload is None else f"{upload:.0f}"
            print(f"{mode:16s} {key} {m[key]:.4f}  epsilon {eps:>6s}  {aucs}{decoys}  "
                  f"{upload} B/device/round  {m['seconds_per_round']:.2f} s/round")
        if "secagg_cost" in record:
            cost = record["secagg_cost"]
            print(f"secagg round with {cost['devices_per_round']} devices: "
                  f"{cost['secagg']['seconds_per_round']:.2f} s against plain "
                  f"{cost['plain']['seconds_per_round']:.3f} s ({cost['ratio']:.1f}x)")
        print(f"results: {path}\nplot:    {png}")
    return 0


def _variants(base: dict, sets: list[str], specs: list[str]) -> dict[str, RunSettings]:
    """``--variant NAME:KEY=VALUE,...`` values as each variant's run settings (``base``
    with ``--set`` applied, then the variant's own)."""
    out: dict[str, RunSettings] = {}
    for spec in specs:
        name, sep, pairs = spec.partition(":")
        name = name.strip()
        if not sep or not name or not pairs.strip():
            raise ValueError(f"--variant {spec!r}: expected NAME:KEY=VALUE[,KEY=VALUE...]")
        if name in out:
            raise ValueError(f"--variant {name!r} is given twice")
        own = [p.strip() for p in pairs.split(",") if p.strip()]
        out[name] = _with_sets(dict(base), [*sets, *own])
    return out


def _run_bench_stream(args: argparse.Namespace) -> int:
    explicit = args.kind == "explicit"
    base = (STREAM_EXPLICIT if explicit else STREAM_IMPLICIT).to_run_config()
    run = _with_sets(dict(base), args.set)
    variants = _variants(base, args.set, args.variant)
    settings = stream_settings(
        args.dataset, args.kind, data_dir=str(args.data_dir or os.environ.get(ENV_VAR) or ""),
        tick_events=args.tick_events, tick_seconds=args.tick_seconds,
        mode=args.mode, buffer=args.buffer, replay=args.replay,
        others_share=args.others_share, window_events=args.window, prefix=args.prefix,
        neighbours=args.neighbours, run=run)
    if args.neighbours is None and settings.neighbours:
        n_items = load_timeline(settings).n_items
        if not neighbours.fits(n_items):
            print(f"neighbours off: {args.dataset} has {n_items:,} items, more than the "
                  f"{neighbours.MAX_ITEMS:,} its dense statistics are for", file=sys.stderr)
            settings = replace(settings, neighbours=0)
    models = tuple(m.strip() for m in args.models.split(",")) if args.models else None
    with progress_bar(f"stream {args.dataset} {args.kind}", args.quiet) as update:
        record = bench_stream(settings, models, update, workers=args.workers,
                              engines=tuple(e.strip() for e in args.engines.split(",")),
                              variants=variants, freezers=args.freezers,
                              freeze_norm=args.freeze_norm)
    record["env"] = environment()
    name = _stem(args.dataset)
    out = args.out or RESULTS_DIR / f"stream-{name}-{args.kind}.json"
    path = write_json(record, out)
    png = stream_plot(record, str(args.plot or Path(out).with_suffix(".png")))
    if args.json:
        print(json.dumps(record))
    else:
        key = "rmse" if explicit else "hr@10"
        for model, m in record["models"].items():
            shares = (f"  download {100 * m['download_share_of_full']:.1f} % of full "
                      f"({100 * m['download_share_of_full_after_first_contact']:.1f} % after "
                      "first contact)" if m.get("sync") == "delta" else "")
            print(f"{model:30s} {key} {m[key]:.4f}  after warm-up "
                  f"{m['after_warmup'][key]:.4f}  ({m['compute_s']:.1f} s){shares}")
            groups = [f"{g} {m[f'{g}-{key}']:.4f}" for g in ("light", "heavy", "tail")
                      if f"{g}-{key}" in m]
            if "tail-share@10" in m:
                groups.append(f"tail share of top-10 {100 * m['tail-share@10']:.1f} %")
            if groups:
                print(f"{'':30s} users light/heavy, tail items: {', '.join(groups)}")
        print(f"results: {path}\nplot:    {png}")
    return 0


def _run_bench_engine(args: argparse.Namespace) -> int:
    settings = _settings(args)
    engines = tuple(e.strip() for e in args.engines.split(","))
    unknown = set(engines) - {"inprocess", "ray"}
    if unknown:
        raise ValueError(f"unknown engines {sorted(unknown)}; choose from inprocess, ray")
    with progress_bar("engine bench", args.quiet) as update:
        update("measuring", 0, 1)
        workers = tuple(int(w) for w in args.workers.split(","))
        record = bench_engine(settings, engines, args.repeats, workers)
        update("done", 1, 1)
    record["env"] = environment()
    name = _stem(args.dataset)
    path = write_json(record, args.out or RESULTS_DIR / f"engine-{name}.json")
    if args.json:
        print(json.dumps(record))
    else:
        for engine, r in record["engines"].items():
            print(f"{engine}: fedrec {r['fedrec_ms_per_message']:.3f} ms/message, trivial "
                  f"{r['trivial_ms_per_message']:.3f} ms/message, ratio {r['ratio']:.2f}")
            for w, sec in r.get("round_s", {}).items():
                print(f"{engine}: a round of {r['devices']} devices in {sec:.2f} s "
                      f"({w} worker process{'es' if w != '1' else ''})")
        print(f"results: {path}")
    return 0


def _run_simulate(args: argparse.Namespace) -> int:
    fraction = args.fraction
    if args.devices_per_round is not None:
        probe = _settings(args, fold=args.fold)
        n = simulated_partitions(probe.dataset, probe.protocol, probe.fold,
                                 probe.data_dir).n_users
        if not 1 <= args.devices_per_round <= n:
            raise ValueError(f"--devices-per-round must be in [1, {n}] (the dataset has {n} "
                             f"devices). Found {args.devices_per_round}.")
        # FedAvg samples int(n * fraction) devices: aim between two integers.
        fraction = min(1.0, (args.devices_per_round + 0.5) / n)
    settings = _settings(args, fold=args.fold, **{"num-rounds": args.rounds,
                                                   "fraction-train": fraction,
                                                   "privacy": args.privacy})
    with progress_bar(f"simulate {args.dataset} {args.protocol}", args.quiet) as update:
        record = simulate(settings, args.engine, update, centralized=not args.no_centralized,
                          workers=args.workers)
    record["env"] = environment()
    name = _stem(args.dataset)
    out = args.out or RESULTS_DIR / f"simulate-{name}-{args.protocol}.json"
    path = write_json(record, out)
    png = plot(record, args.plot or Path(out).with_suffix(".png"))
    if args.json:
        print(json.dumps(record))
    else:
        key = "rmse" if args.protocol.startswith("explicit") else "ndcg@10"
        for model, metrics in record["models"].items():
            print(f"{model:16s} {key} {metrics[key]:.4f}   ({metrics['fit_s']:.1f} s)")
            if "light-ndcg@10" in metrics:
                print(f"{'':16s} {segments_line(metrics)}")
        if record.get("stopping"):
            st = record["stopping"]
            print(f"early stopping: best validation {st['metric']} {st['best']:.4f} at round "
                  f"{st['best-round']}, kept")
        if record.get("pairs"):
            chosen = record["pairs"]
            print(f"pairs: popularity's weight {chosen['weight']:g}, chosen on the held-out "
                  "slice (" + ", ".join(f"{w}: {v:.4f}" for w, v in chosen["validation"].items()
                                        if v is not None) + ")")
        if record.get("epsilon") is not None:
            print(f"privacy: dp, epsilon {record['epsilon']:.3f} at delta {record['delta']:g}")
        if record.get("below_baseline"):
            print(f"warning: {record['below_baseline']}")
        print(f"results: {path}\nplot:    {png}")
    return 0


def _run_bench_data(args: argparse.Namespace) -> int:
    record = bench_data(args.data_dir, args.repeats, args.events)
    record["env"] = environment()
    path = write_json(record, args.out or RESULTS_DIR / "data.json")
    if args.json:
        print(json.dumps(record))
    else:
        for what, t in record["timings"].items():
            print(f"{t['seconds']:8.3f} s  {what}")
        print(f"results: {path}")
    return 0


def _print_table(record: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    metric_keys: list[str] = []
    for metrics in record["models"].values():
        metric_keys += [k for k in metrics if k not in ("folds", "eval_s", "rounds")
                        and k not in metric_keys]
    table = Table(title=f"{record['dataset']} · {record['protocol']}")
    table.min_width = 100
    table.add_column("model")
    for key in metric_keys:
        table.add_column(key, justify="right")
    for name, metrics in record["models"].items():
        table.add_row(name, *("—" if k not in metrics else f"{metrics[k]:.1f}" if k == "fit_s"
                              else f"{metrics[k]:.4f}" for k in metric_keys))
    Console(width=max(100, Console().width)).print(table)


def _run_bench_edge(args: argparse.Namespace) -> int:
    from fedrec.simulations.benches.edge import bench_edge

    sizes = tuple(int(x) for x in args.items.split(",") if x.strip())
    record = bench_edge(sizes, args.factors, args.events, folder=args.dir)
    record["env"] = environment()
    path = write_json(record, args.out or RESULTS_DIR / "edge.json")
    if args.json:
        print(json.dumps(record))
    else:
        for n, m in record["sizes"].items():
            print(f"{int(n):>7,} items: record+update {m['record_and_update']['median_ms']:.3f} "
                  f"ms (p95 {m['record_and_update']['p95_ms']:.3f}; durable "
                  f"{m['record_and_update_durable']['median_ms']:.3f}), top-10 "
                  f"{m['top10']['median_ms']:.3f} ms, in a category "
                  f"{m['top10_in_a_category']['median_ms']:.3f} ms, memory "
                  f"{m['memory_peak_mb']:.1f} MB, store {m['store_bytes'] / 2**20:.2f} MB")
        print(f"results: {path}")
    return 0


def _run_bench_attack(args: argparse.Namespace) -> int:
    from fedrec.simulations.benches.attack import (
        ATTACKS,
        bench_attack,
        defence_sets,
        markdown,
        plot,
        table_lines,
    )

    settings = _settings(args, fold=args.fold)
    if args.evaluate_every is not None and args.evaluate_every < 1:
        raise ValueError(f"--evaluate-every must be >= 1. Found {args.evaluate_every}.")
    every = args.evaluate_every or max(1, settings.num_rounds // 4)
    settings = replace(settings, evaluate_every=every)
    attacks = args.attacks.split(",") if args.attacks else list(ATTACKS)
    try:
        fractions = [float(f) for f in args.fractions.split(",")]
    except ValueError:
        raise ValueError(f"--fractions takes numbers in (0, 1], comma-separated. Found "
                         f"{args.fractions!r}.") from None
    targets = [t.strip() for t in args.targets.split(",")]
    out = args.out or RESULTS_DIR / f"attack-{_stem(args.dataset)}.json"
    with progress_bar("attacks", args.quiet) as update:
        record = bench_attack(settings, attacks, fractions, targets,
                              defence_sets(args.defences), progress=update,
                              on_run=lambda partial: write_json(partial, out),
                              jobs=args.jobs)
    record["env"] = environment()
    path = write_json(record, out)
    picture = plot(record, args.plot or path.with_suffix(".png"))
    if args.json:
        print(json.dumps(record))
    else:
        print(markdown(record) if args.markdown else "\n".join(table_lines(record)))
        print(f"results: {path}")
        print(f"plot:    {picture}")
    return 0


def _run_bench_pairs_attack(args: argparse.Namespace) -> int:
    from fedrec.simulations.benches.pairs_attack import bench_pairs_attack, shops, table_lines

    if args.shops < 1 or args.rounds < 1:
        raise ValueError(f"--shops and --rounds must be >= 1. Found {args.shops}, "
                         f"{args.rounds}.")
    try:
        fractions = [float(f) for f in args.fractions.split(",")]
    except ValueError:
        raise ValueError(f"--fractions takes numbers in (0, 1], comma-separated. Found "
                         f"{args.fractions!r}.") from None
    if not all(0 < f <= 1 for f in fractions):
        raise ValueError(f"--fractions takes numbers in (0, 1]. Found {args.fractions!r}.")
    datasets = [args.dataset] if args.dataset else shops(args.shops)
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    with progress_bar("pairs attacks", args.quiet) as update:
        record = bench_pairs_attack(datasets, attacks, fractions, [OFF, DEFAULT],
                                    args.rounds, progress=update)
    record["env"] = environment()
    path = write_json(record, args.out or RESULTS_DIR / "pairs-attack.json")
    if args.json:
        print(json.dumps(record))
    else:
        print("\n".join(table_lines(record)))
        print(f"results: {path}")
    return 0


def _run_bench_hostile(args: argparse.Namespace) -> int:
    from fedrec.simulations.benches.hostile import SHOP, bench_hostile, summary_lines

    with progress_bar("hostile replies", args.quiet) as update:
        record = bench_hostile(args.dataset or SHOP, args.rounds, progress=update)
    record["env"] = environment()
    path = write_json(record, args.out or RESULTS_DIR / "hostile.json")
    if args.json:
        print(json.dumps(record))
    else:
        print("\n".join(summary_lines(record)))
        print(f"results: {path}")
    s = record["summary"]
    ok = (s["refused_with_the_named_reason"] == s["model_identical"] == s["tried"]
          and not s["server_crashes"])
    return 0 if ok else 1


def _grid(pairs: list[str]) -> dict[str, tuple]:
    grid = {}
    for key, values in _pairs(pairs):
        grid[key.replace("-", "_")] = tuple(RunSettings.parse_value(key, v.strip())
                                            for v in values.split(",") if v.strip())
    return grid


def _write_record(record: dict, args: argparse.Namespace, default: str) -> Path:
    """The record with its environment, written to ``--out`` (or ``default`` under the
    results folder), and printed as JSON with ``--json``; returns where it went."""
    record["env"] = environment()
    path = write_json(record, args.out or RESULTS_DIR / default)
    if args.json:
        print(json.dumps(record))
    return path


def _run_bench_tune(args: argparse.Namespace) -> int:
    from fedrec.simulations.benches.tune import parse_mf_value, tune, tune_centralized

    settings = _settings(args)
    if args.model == "centralized-mf":
        grid = {key.replace("-", "_"): tuple(parse_mf_value(key, v.strip())
                                             for v in values.split(",") if v.strip())
                for key, values in _pairs(args.grid)}
        run, stem = tune_centralized, "tune-centralized"
    else:
        grid, run, stem = _grid(args.grid), tune, "tune"
    with progress_bar(f"tune {args.dataset}", args.quiet) as update:
        record = {"bench": "tune", "dataset": args.dataset, "protocol": args.protocol,
                  "settings": settings.to_run_config(), **run(settings, grid, update)}
    path = _write_record(record, args, f"{stem}-{_stem(args.dataset)}-{args.protocol}.json")
    if not args.json:
        metric = record["metric"]
        for t in record["trials"]:
            chosen = ", ".join(f"{k}={t[k]}" for k in grid)
            print(f"{chosen:40s} {metric} {t[metric]:.4f}")
        base = record["baseline"]
        print(f"{base['name']:40s} {metric} {base.get(metric, float('nan')):.4f}")
        print(f"best: {record['best']} (validation {metric} {record['validation']:.4f})\n"
              f"results: {path}")
    return 0


def _run_bench_tune_ddp(args: argparse.Namespace) -> int:
    from fedrec.simulations.benches.ddp_runs import tune

    base = RunSettings(dataset=args.dataset, protocol=args.protocol,
                       data_dir=str(args.data_dir or os.environ.get(ENV_VAR) or ""),
                       privacy="secagg+dp", dp_epsilon=args.epsilon).to_run_config()
    settings = _with_sets(base, args.set)
    grid = _grid(args.grid) if args.grid else None
    with progress_bar(f"tune secagg+dp {args.dataset}", args.quiet) as update:
        record = {"bench": "tune-ddp", "dataset": args.dataset, "epsilon": args.epsilon,
                  "settings": settings.to_run_config(),
                  **tune(settings, grid, progress=update, fast=args.fast)}
    path = _write_record(record, args, f"tune-ddp-{_stem(args.dataset)}-{args.protocol}-"
                                       f"eps{args.epsilon:g}.json")
    if not args.json:
        metric = "RMSE" if settings.explicit else "NDCG@10"
        print(f"best at epsilon {args.epsilon:g}: {record['best']} (validation {metric} "
              f"{record['validation']:.4f}, {len(record['trials'])} tried)\nresults: {path}")
    return 0


def _run_bench_mean_shift(args: argparse.Namespace) -> int:
    from fedrec.simulations.benches.mean_shift import bench_mean_shift

    data_dir = str(args.data_dir or os.environ.get(ENV_VAR) or "")
    with progress_bar(f"mean shift {args.dataset}", args.quiet) as update:
        record = bench_mean_shift(args.dataset, data_dir, args.bucket, progress=update)
    record["env"] = environment()
    path = write_json(record, args.out or RESULTS_DIR / f"mean-shift-{_stem(args.dataset)}.json")
    if args.json:
        print(json.dumps(record))
        return 0
    p, s = record["plain"], record["secagg"]
    print(f"{record['dataset']}: {record['rated_devices']} devices with ratings")
    print(f"plain:  μ {p['honest_mean']:.4f}; the worst liar moves it "
          f"{p['worst_liar']['shift']:.4f} (bound {p['bound']:.4f}); garbage "
          f"{p['garbage']['shift']:.4f} (refused: {p['garbage']['refused']})")
    print(f"secagg: μ {s['honest_mean']:.4f} from {s['buckets']} buckets; the worst hostile "
          f"device moves it {s['worst_hostile_device']['shift']:.4f} (worst over every "
          f"bucket {s['worst_over_buckets']['shift']:.4f}, over "
          f"{s['worst_over_bucketings']['draws']} other bucketings "
          f"{s['worst_over_bucketings']['shift']:.4f}); garbage "
          f"{s['garbage']['shift']:.4f} (refused: {s['garbage']['refused']})")
    print(f"results: {path}")
    return 0


def _run_keys(args: argparse.Namespace) -> int:
    from fedrec.server.control.operator import write_operator_key
    from fedrec.server.keys import refuse_overwrite, write_credentials, write_secret

    hosts = [h.strip() for h in args.hosts.split(",") if h.strip()]
    refuse_overwrite(args.out, ["superexec.secret", "checkpoint.key", "operator",
                                "operator.pub", "trusted-entities.yaml"], args.force)
    made = write_credentials(args.out, hosts, args.nodes, args.force)
    operator, public, trusted = write_operator_key(args.out, args.force)
    secret = write_secret(args.out / "superexec.secret", args.force)
    checkpoint = write_secret(args.out / "checkpoint.key", args.force, hex_digits=True)
    print(f"CA:        {made.ca_cert}  (key {made.ca_key}: keep it offline)")
    print(f"SuperLink: {made.server_cert}, {made.server_key}  for {', '.join(hosts)}")
    print(f"Operator:  {operator}  (private: signs Control API tokens and apps), {public}, "
          f"{trusted}  (public: for the SuperLink and every device)")
    print(f"Secrets:   {secret}  (the SuperLink and its SuperExec), {checkpoint}  (the "
          "server's checkpoint MAC)")
    for key in made.node_keys:
        print(f"SuperNode: {key}  (register {key}.pub with `flwr supernode register`)")
    return 0


def _run_device_keys(args: argparse.Namespace) -> int:
    from fedrec.server.keys import write_device_credentials

    node, secret = write_device_credentials(args.dir, args.force)
    print(f"SuperNode key {node} (the operator registers {node}.pub), SuperExec secret "
          f"{secret}")
    return 0


def _run_operator_login(args: argparse.Namespace) -> int:
    from fedrec.server.control.operator import login, parse_ttl

    ttl = parse_ttl(args.ttl)
    host = login(args.federation, args.key, args.audience, ttl)
    print(f"stored an operator token for {args.federation or 'the default federation'} "
          f"({host}), valid {ttl} s")
    return 0


def _run_operator_sign(args: argparse.Namespace) -> int:
    from fedrec.server.control.operator import sign_app

    print(sign_app(args.app, args.key))
    return 0


def _run_superlink(args: argparse.Namespace) -> int:  # (main() hands it on first)
    from fedrec.server.control.superlink import main as superlink

    superlink(args.args)
    return 0


def _run_download(args: argparse.Namespace) -> int:
    root = args.data_dir or Path(os.environ.get(ENV_VAR) or "data")
    with progress_bar(f"download {args.name}") as update:
        folder = download_dataset(
            args.name, root, url=args.url, digest=args.digest,
            progress=lambda done, total: update(f"{done / 1e6:.1f} MB", done, total or done))
    print(f"{args.name}: verified and unpacked into {folder}")
    return 0


def dataset_info(data: Interactions) -> dict:
    """Sizes, event-type counts and activity imbalance of a dataset."""
    per_user = np.bincount(data.user, minlength=data.n_users)
    per_item = np.bincount(data.item, minlength=data.n_items)
    return {
        "dataset": data.name,
        "rows": len(data),
        "users": data.n_users,
        "items": data.n_items,
        "distinct_pairs": len(data.positives()),
        "density": len(data.positives()) / max(1, data.n_users * data.n_items),
        "events": {e.name.lower(): int((data.event == e).sum()) for e in EventType},
        "rows_per_user": {"min": int(per_user.min()), "median": float(np.median(per_user)),
                          "max": int(per_user.max()), "gini": _gini(per_user)},
        "rows_per_item": {"min": int(per_item.min()), "median": float(np.median(per_item)),
                          "max": int(per_item.max()), "gini": _gini(per_item)},
        "item_features": list(data.item_features.names) if data.item_features else [],
        "time_span_days": float((data.timestamp.max() - data.timestamp.min()) / 86_400)
        if len(data) else 0.0,
    }


def _gini(counts: np.ndarray) -> float:
    """Gini coefficient of a count distribution: 0 even, near 1 concentrated."""
    x = np.sort(counts.astype(np.float64))
    if not len(x) or x.sum() == 0:
        return 0.0
    n = len(x)
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * x.sum()))


def _run_info(args: argparse.Namespace) -> int:
    info = dataset_info(load_dataset(args.dataset, args.data_dir))
    print(json.dumps(info, indent=None if args.json else 2))
    return 0


def _run_export(args: argparse.Namespace) -> int:
    from fedrec.common.data.csvlog import write_csv_log

    data = load_dataset(args.dataset, args.data_dir)
    path = write_csv_log(data, args.out)
    # (an event log names only items with events; item features and listing times stay out)
    print(f"{len(data):,} events of {len(np.unique(data.user)):,} users on "
          f"{len(np.unique(data.item)):,} items: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
