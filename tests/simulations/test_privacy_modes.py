"""The conformance suite of the privacy modes: every mode in the registry
(:data:`fedrec.common.privacy.MODES`) is run, so a new mode is covered by being added.

For each: every reply holds exactly the fields the mode lists (a secure-sum mode: SecAgg+
stage replies only); no raw event (its timestamps) or user vector of a device is in any
reply; the same seed gives the same model; a checkpoint resumes, or is refused by name
where the mode cannot honour it; the in-process and Ray engines agree.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import replace

import numpy as np
import pytest
from flwr.common.logger import FLOWER_LOGGER
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

from fedrec.client.app import app as client_app
from fedrec.common import privacy, records
from fedrec.common.data.csvlog import write_csv_log
from fedrec.common.data.synthetic import ShopConfig, generate_shop
from fedrec.common.partition import simulated_partitions
from fedrec.common.settings import RunSettings
from fedrec.server.app import app as server_app
from fedrec.simulations.engines.inprocess import run_in_process
from tests.conftest import low_rank_ratings

FLOWER_LOGGER.setLevel(logging.WARNING)
MODES = sorted(privacy.MODES)
# The legacy (secagg) evaluation reply's constant fields, beside its metrics.
LEGACY_EVALUATE = {"evaluateres.loss": {"loss": 0.0},
                   "evaluateres.num_examples": {"num_examples": 1}}


@pytest.fixture(scope="module")
def shop_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("shop") / "shop.csv"
    return write_csv_log(generate_shop(ShopConfig(n_users=20, n_items=40, n_events=1_200,
                                                  seed=9)), path)


def mode_settings(name: str, path, **kw) -> RunSettings:
    """A small implicit run in mode ``name``, with the mode's own example settings."""
    base = RunSettings(dataset=f"csv:{path}", protocol="implicit-80-20", num_rounds=2,
                       evaluate_every=2, factors=4)
    m = privacy.mode(name)
    run = privacy.for_mode(base, name, **dict(m.example))
    if m.runner == "fedrec":
        run = replace(run, negatives=2, local_epochs=1)
    return replace(run, **kw)


def run(settings: RunSettings, folder, observer=None):
    n = simulated_partitions(settings.dataset, settings.protocol, settings.fold, "").n_users
    config = {**settings.to_run_config(), "results-dir": str(folder), "min-nodes": n}
    grid = run_in_process(server_app, client_app, n, config, observer=observer)
    return grid, json.loads((folder / "history.json").read_text()), dict(
        np.load(folder / "model.npz"))


def reply_fields(msg) -> tuple[str, ...]:
    """What a reply holds, as the registry names fields."""
    content = msg.content
    if RECORD_KEY_CONFIGS in content.config_records:
        return privacy.SECURE_SUM
    out = set()
    for name, record in content.array_records.items():
        out |= {f"{name}.{key}" for key in record}
    for name, record in content.metric_records.items():
        if name in LEGACY_EVALUATE:
            assert dict(record) == LEGACY_EVALUATE[name]
            continue
        out |= {f"{name}.{key}" for key in record}
    for name, record in content.config_records.items():
        if name == "evaluateres.metrics":
            out |= {f"{records.METRICS}.{key}" for key in record}
        elif name == "evaluateres.status":
            assert dict(record)["code"] == 0
        else:
            out.add(f"{name}.*")
    return tuple(sorted(out))


@pytest.fixture(scope="module", params=MODES)
def traffic(request, shop_csv, tmp_path_factory):
    """One run per mode, every message recorded."""
    name = request.param
    seen: list[tuple[str, object]] = []
    folder = tmp_path_factory.mktemp(name.replace("+", "-"))
    grid, history, model = run(mode_settings(name, shop_csv), folder,
                               lambda d, m: seen.append((d, m)))
    return name, grid, seen, history, model


def test_each_reply_holds_exactly_the_listed_fields(traffic) -> None:
    name, _, seen, _, _ = traffic
    listed = privacy.mode(name).replies
    got: dict[str, set[tuple[str, ...]]] = {}
    for direction, msg in seen:
        if direction == "to-server" and not msg.has_error():
            got.setdefault(msg.metadata.message_type, set()).add(reply_fields(msg))
    assert got.get("train"), "the run had no train replies"
    assert got["train"] == {tuple(sorted(listed.train))}
    for kind, fields in (("evaluate", listed.evaluate), ("query", listed.query)):
        if not fields:
            assert kind not in got, f"{name} lists no {kind} replies but sent some"
        for shape in got.get(kind, ()):
            assert set(shape) <= set(fields), f"{kind} reply holds {shape}"


def test_no_raw_event_or_user_vector_is_in_any_reply(traffic, shop_csv) -> None:
    name, grid, seen, _, _ = traffic
    s = mode_settings(name, shop_csv)
    parts = simulated_partitions(s.dataset, s.protocol, 0, "")
    payload = b"".join(_payload(m) for d, m in seen if d == "to-server")
    assert payload
    checked = 0
    for context in grid.contexts.values():
        pid = int(context.node_config["partition-id"])
        rows = parts.user(pid)
        stamps = parts.split.train.timestamp[parts.split.train.user == pid]
        for stamp in stamps[:5]:
            assert np.int64(stamp).tobytes() not in payload
        if records.USER in context.state.array_records:
            vector = records.array_view(context.state[records.USER]["vector"])
            assert vector.astype(np.float32).tobytes() not in payload
            assert vector[:-1].astype(np.float64).tobytes() not in payload
            checked += 1
        assert len(rows.train_items)
    assert checked, "no device kept a user vector"


def _payload(msg) -> bytes:
    out = []
    for record in msg.content.array_records.values():
        out += [bytes(a.data) for a in record.values()]
    for record in msg.content.config_records.values():
        for value in record.values():
            for v in value if isinstance(value, list) else [value]:
                out.append(v if isinstance(v, bytes) else str(v).encode())
    for record in msg.content.metric_records.values():
        out += [np.float64(v).tobytes() for v in record.values() if not isinstance(v, list)]
    return b"".join(out)


def test_the_same_seed_gives_the_same_model(traffic, shop_csv, tmp_path) -> None:
    name, _, _, history, model = traffic
    _, again, model2 = run(mode_settings(name, shop_csv), tmp_path)
    for key in ("factors", "bias"):
        np.testing.assert_array_equal(model[key], model2[key])
    assert again["rounds"] == history["rounds"]
    assert np.isfinite(model["factors"]).all() and model["factors"].any()


@pytest.mark.parametrize("name", MODES)
def test_a_checkpoint_resumes_or_is_refused_by_name(name, shop_csv, tmp_path) -> None:
    m = privacy.mode(name)
    db = str(tmp_path / "ckpt.db")
    if "checkpoint" in m.unsupported:
        with pytest.raises(ValueError, match=re.escape(
                f"checkpoint is not supported with privacy={name}")):
            mode_settings(name, shop_csv, checkpoint=db)
        return
    s = mode_settings(name, shop_csv, checkpoint=db, num_rounds=2, evaluate_every=1)
    run(s, tmp_path / "a")
    _, history, _ = run(replace(s, num_rounds=3), tmp_path / "b")
    trained = [r["round"] for r in history["rounds"] if "train" in r]
    assert trained == [1, 2, 3]
    assert history["rounds"][-1]["train"]["accepted"] == 20


@pytest.mark.slow
@pytest.mark.parametrize("name", MODES)
def test_the_in_process_and_ray_engines_agree(name, shop_csv, tmp_path) -> None:
    import importlib.util
    import os

    if importlib.util.find_spec("ray") is None:
        if os.environ.get("FEDREC_REQUIRE_RAY", "") not in ("", "0"):
            pytest.fail("FEDREC_REQUIRE_RAY=1 but ray is not installed")
        pytest.skip("Flower's Ray engine is not installed")
    from fedrec.simulations.engines.ray_engine import run_ray

    s = mode_settings(name, shop_csv)
    n = simulated_partitions(s.dataset, s.protocol, 0, "").n_users
    _, _, local = run(s, tmp_path / "inprocess")
    run_ray(n, {**s.to_run_config(), "results-dir": str(tmp_path / "ray"), "min-nodes": n})
    remote = dict(np.load(tmp_path / "ray" / "model.npz"))
    for key in ("factors", "bias"):
        assert np.abs(local[key] - remote[key]).max() <= 1e-5, key


def test_the_registry_describes_every_mode_fully() -> None:
    assert privacy.NAMES[0] == "plain" and set(privacy.NAMES) == set(privacy.MODES)
    for m in privacy.MODES.values():
        assert m.guarantee.endswith(".") and m.server_learns.endswith(".")
        assert m.replies.train, f"{m.name} lists no train reply fields"
        fields = {f.name for f in RunSettings.__dataclass_fields__.values()}
        assert set(m.settings) <= fields and set(m.unsupported) <= fields
        assert m.runner in ("fedrec", "secagg", "secagg+dp")
    with pytest.raises(ValueError, match="privacy must be one of"):
        privacy.mode("hidden")
    # The imbalance segments tell how active a device is: listed exactly for the sparse
    # modes that do not pad their replies.
    for m in privacy.MODES.values():
        segments = set(privacy.SEGMENT_FIELDS) <= set(m.replies.evaluate)
        assert segments == (m.runner == "fedrec" and not m.padded), m.name


PADDED = [name for name in MODES if privacy.mode(name).padded]


@pytest.mark.parametrize("name", PADDED)
def test_padded_modes_send_no_held_out_counts_or_error_sums(name, tmp_path) -> None:
    """A decoy device's rating evaluation carries its mean errors, counted as one example:
    the server cannot tell how many held-out ratings it has (plain's replies do)."""
    path = write_csv_log(low_rank_ratings(n_users=16, n_items=30, density=0.5),
                         tmp_path / "ratings.csv")
    counts: dict[str, set[float]] = {}
    for mode in ("plain", name):
        seen: list = []
        s = mode_settings(mode, path, protocol="explicit-80-20", evaluate_every=1,
                          num_rounds=1)
        run(s, tmp_path / mode.replace("+", "-"), lambda d, m, seen=seen: seen.append((d, m)))
        counts[mode] = {float(m.content[records.METRICS]["num-examples"]) for d, m in seen
                        if d == "to-server" and m.metadata.message_type == "evaluate"}
    assert counts[name] <= {0.0, 1.0}
    assert max(counts["plain"]) > 1  # the check can fail: plain's devices send their counts
