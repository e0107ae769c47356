"""The ``fedrec`` command as a user types it (in-process via ``main`` and as a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from fedrec.simulations.benches.quality import bench_quality
from fedrec.simulations.cli.main import main
from tests.conftest import low_rank_ratings

LOG = "user,item,value,timestamp\n" + "".join(
    f"u{u},i{i},{1 + (u * 7 + i * 3) % 5},{1000 + u * 50 + i}\n"
    for u in range(30) for i in range(20) if (u + i) % 3)


@pytest.fixture
def csv_log(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text(LOG)
    return path


def test_bench_quality_json_on_explicit_5fold(csv_log, tmp_path, capsys):
    out = tmp_path / "q.json"
    code = main(["bench", "quality", "--dataset", f"csv:{csv_log}", "--protocol",
                 "explicit-5fold", "--epochs", "2", "--json", "--quiet", "--out", str(out)])
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert record == json.loads(out.read_text())
    assert record["bench"] == "quality" and record["protocol"] == "explicit-5fold"
    assert set(record["models"]) == {"global-mean", "bias", "centralized-mf"}
    for metrics in record["models"].values():
        assert len(metrics["folds"]) == 5
        assert metrics["rmse"] == pytest.approx(sum(f["rmse"] for f in metrics["folds"]) / 5)
        assert {"rmse", "mae", "fit_s"} <= set(metrics)
    assert record["config"]["centralized-mf"]["epochs"] == 2
    assert record["env"]["python"] and record["env"]["numpy"]


def test_bench_quality_implicit_metric_keys(csv_log, tmp_path, capsys):
    code = main(["bench", "quality", "--dataset", f"csv:{csv_log}", "--protocol",
                 "implicit-leave-last", "--epochs", "1", "--json", "--quiet",
                 "--out", str(tmp_path / "x.json")])
    assert code == 0
    models = json.loads(capsys.readouterr().out)["models"]
    assert set(models) == {"popularity", "centralized-mf"}
    assert {"hr@10", "ndcg@10", "recall@10", "precision@10", "fit_s"} <= set(models["popularity"])


def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item,value\nu,i,five\n")
    assert main(["bench", "quality", "--dataset", f"csv:{bad}", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"fedrec: error: {bad}:2: field 'value': expected a number, found 'five'"
    assert main(["bench", "quality", "--dataset", "ml-1m", "--data-dir", str(tmp_path)]) == 2
    assert "fedrec download ml-1m" in capsys.readouterr().err
    code = main(["bench", "quality", "--protocol", "implicit-80-20", "--models", "bias"])
    assert code == 2
    assert "do not apply" in capsys.readouterr().err


def test_data_info_reports_imbalance(csv_log, capsys):
    assert main(["data", "info", f"csv:{csv_log}", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["users"] == 30 and info["items"] == 20
    assert info["events"]["rating"] == info["rows"]
    assert 0 <= info["rows_per_user"]["gini"] < 1


def test_data_export_writes_a_log_that_reads_back_the_same(tmp_path, capsys):
    from fedrec.common.data.registry import load_dataset

    out = tmp_path / "shop.csv"
    name = "synthetic:n_users=40,n_items=25,n_events=600,seed=3"
    assert main(["data", "export", name, "--out", str(out)]) == 0
    original, back = load_dataset(name), load_dataset(f"csv:{out}")
    items = len(np.unique(original.item))  # (an event log names the items with events)
    assert f"events of 40 users on {items} items" in capsys.readouterr().out
    assert len(back) == len(original) and back.n_users == 40 and back.n_items == items
    np.testing.assert_array_equal(back.timestamp, original.timestamp)
    np.testing.assert_array_equal(back.value, original.value)


def test_console_script_runs_as_a_subprocess(csv_log, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fedrec.simulations.cli.main", "bench", "quality", "--dataset",
         f"csv:{csv_log}", "--protocol", "explicit-80-20", "--epochs", "1", "--json",
         "--out", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["models"]["bias"]["rmse"] > 0


def test_centralized_mf_beats_baselines_in_the_same_run():
    record = bench_quality(low_rank_ratings(n_users=150, n_items=80, density=0.6),
                           "explicit-80-20")
    m = record["models"]
    assert m["centralized-mf"]["rmse"] < 0.5 * min(m["bias"]["rmse"], m["global-mean"]["rmse"])


def test_bench_data_times_what_it_finds(tmp_path, capsys):
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t3\t{u * i}\n"
                                           for u in range(1, 30) for i in range(1, 40)))
    code = main(["bench", "data", "--data-dir", str(tmp_path), "--events", "20000",
                 "--repeats", "1", "--json", "--out", str(tmp_path / "d.json")])
    assert code == 0
    timings = json.loads(capsys.readouterr().out)["timings"]
    assert timings["load ml-100k"]["rows"] == 29 * 39
    assert any(k.startswith("evaluate ml-100k") for k in timings)
    synthetic = next(v for k, v in timings.items() if k.startswith("generate synthetic"))
    assert synthetic["seconds"] > 0 and abs(synthetic["rows"] - 20_000) < 2_000


def test_simulate_writes_json_and_a_plot_beside_the_centralized_model(csv_log, tmp_path,
                                                                      capsys):
    out = tmp_path / "sim.json"
    code = main(["simulate", "--dataset", f"csv:{csv_log}", "--protocol", "explicit-80-20",
                 "--rounds", "2", "--set", "factors=4", "--set", "evaluate-every=1",
                 "--json", "--quiet", "--out", str(out)])
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert record["bench"] == "simulate" and record["devices"] == 30
    assert {"federated-mf", "centralized-mf", "bias"} <= set(record["models"])
    rmse = {name: m["rmse"] for name, m in record["models"].items()}
    # The record says when the federated model is worse than the biases, and only then.
    assert (record["below_baseline"] is not None) == (rmse["federated-mf"] > rmse["bias"])
    # A csv: shop's preset keeps its best validated round (early stopping): every
    # scheduled evaluation scores the devices' validation slices, the test rows once.
    assert [e["round"] for e in record["rounds"]["validation"]] == [1, 2]
    assert [e["round"] for e in record["rounds"]["evaluate"]] == [2]
    assert record["stopping"]["patience"] == 3 and record["stopping"]["best-round"] in (1, 2)
    assert record["settings"]["factors"] == 4
    assert record["upload_bytes_per_device_round"] > 0
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["simulate", "--dataset", f"csv:{csv_log}", "--set", "colour=red"]) == 2
    assert "unknown run-config keys: colour" in capsys.readouterr().err


def test_simulate_samples_the_requested_number_of_devices(csv_log, tmp_path, capsys):
    code = main(["simulate", "--dataset", f"csv:{csv_log}", "--protocol", "explicit-80-20",
                 "--rounds", "2", "--devices-per-round", "12", "--set", "factors=4",
                 "--no-centralized", "--json", "--quiet", "--out", str(tmp_path / "s.json")])
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert record["devices_per_round"] == 12
    assert [t["accepted"] for t in record["rounds"]["train"]] == [12, 12]
    assert main(["simulate", "--dataset", f"csv:{csv_log}", "--devices-per-round", "31"]) == 2
    assert "must be in [1, 30]" in capsys.readouterr().err


@pytest.mark.parametrize("privacy", ["decoy", "secagg"])
def test_simulate_runs_in_the_privacy_mode_asked(csv_log, tmp_path, capsys, privacy):
    own = ["--set", "decoy-rows=15"] if privacy == "decoy" else ["--set", "secagg-shares=3"]
    code = main(["simulate", "--dataset", f"csv:{csv_log}", "--protocol", "explicit-80-20",
                 "--rounds", "2", "--privacy", privacy, "--set", "factors=4", *own,
                 "--no-centralized", "--json", "--quiet", "--out", str(tmp_path / "s.json")])
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert record["privacy"] == privacy and record["settings"]["privacy"] == privacy
    # Another mode's setting is refused by name, not ignored.
    other = ["--set", "secagg-shares=3"] if privacy == "decoy" else ["--set", "decoy-rows=15"]
    assert main(["simulate", "--dataset", f"csv:{csv_log}", "--privacy", privacy, *other,
                 "--quiet"]) == 2
    assert ("secagg-shares applies to privacy=secagg" if privacy == "decoy"
            else "decoy-rows applies to privacy=decoy") in capsys.readouterr().err
    assert [t["accepted"] for t in record["rounds"]["train"]] == [30, 30]
    with pytest.raises(SystemExit) as refused:
        main(["simulate", "--dataset", f"csv:{csv_log}", "--privacy", "hidden"])
    assert refused.value.code == 2 and "invalid choice: 'hidden'" in capsys.readouterr().err


def test_bench_engine_compares_against_a_trivial_client_app(csv_log, tmp_path, capsys):
    code = main(["bench", "engine", "--dataset", f"csv:{csv_log}", "--protocol",
                 "explicit-80-20", "--repeats", "1", "--set", "factors=4", "--json",
                 "--quiet", "--out", str(tmp_path / "e.json")])
    assert code == 0
    r = json.loads(capsys.readouterr().out)["engines"]["inprocess"]
    assert r["devices"] == 30
    assert r["fedrec_ms_per_message"] > 0 and r["trivial_ms_per_message"] > 0
    assert r["ratio"] == pytest.approx(r["fedrec_ms_per_message"] / r["trivial_ms_per_message"])
    up = r["upload"]
    assert up["bytes_per_device"] > up["lower_bound_bytes"] > 0  # + counts and npy headers
    assert up["dense_table_bytes"] == 20 * 5 * 4
    assert main(["bench", "engine", "--dataset", f"csv:{csv_log}", "--engines", "gpu"]) == 2


def test_bench_edge_measures_latency_memory_and_disk(tmp_path, capsys):
    code = main(["bench", "edge", "--items", "500,2000", "--factors", "8", "--events", "30",
                 "--dir", str(tmp_path), "--json", "--out", str(tmp_path / "edge.json")])
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert set(record["sizes"]) == {"500", "2000"}
    for size in record["sizes"].values():
        for key in ("record_and_update", "record_and_update_durable", "top10",
                    "top10_in_a_category"):
            assert 0 < size[key]["median_ms"] <= size[key]["p95_ms"]
        assert size["memory_peak_mb"] > size["table_mb"] > 0
        assert size["store_bytes"] > 0
    assert record["sizes"]["2000"]["table_mb"] == pytest.approx(
        4 * record["sizes"]["500"]["table_mb"])
    assert list(tmp_path.glob("*.db")) == []  # the bench's stores are removed


def test_simulate_runs_secagg_dp_with_its_preset_and_scores_the_final_table(csv_log, tmp_path,
                                                                            capsys):
    code = main(["simulate", "--dataset", f"csv:{csv_log}", "--privacy", "secagg+dp",
                 "--set", "dp-epsilon=4", "--set", "ddp-rows=20", "--no-centralized",
                 "--json", "--quiet", "--out", str(tmp_path / "s.json")])
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert record["privacy"] == "secagg+dp" and 0 < record["epsilon"] <= 4.0
    assert record["models"]["federated-mf"]["ndcg@10"] > 0
    # The gradient learner's knobs are refused by name under secagg+dp.
    assert main(["simulate", "--dataset", f"csv:{csv_log}", "--privacy", "secagg+dp",
                 "--set", "dp-epsilon=4", "--set", "lr=0.1", "--quiet"]) == 2
    assert "lr is not supported with privacy=secagg+dp" in capsys.readouterr().err


def test_bench_tune_ddp_chooses_on_the_validation_split(csv_log, tmp_path, capsys, monkeypatch):
    from fedrec.simulations.benches import ddp_runs

    monkeypatch.setattr(ddp_runs, "TUNING_GRID", {"factors": (2, 4), "ddp_rows": (10,),
                                                  "num_rounds": (1,), "ddp_item_reg": (3.0,),
                                                  "ddp_user_reg": (1.0,)})
    code = main(["bench", "tune-ddp", "--dataset", f"csv:{csv_log}", "--epsilon", "8",
                 "--json", "--quiet", "--out", str(tmp_path / "t.json")])
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert len(record["trials"]) == 2 and record["best"]["factors"] in (2, 4)
    assert record["validation"] == max(t["ndcg@10"] for t in record["trials"])


def test_bench_tune_ddp_takes_a_grid_and_refuses_a_bad_one(csv_log, tmp_path, capsys):
    base = ["bench", "tune-ddp", "--dataset", f"csv:{csv_log}", "--epsilon", "8", "--quiet",
            "--out", str(tmp_path / "t.json")]
    grid = ["--grid", "factors=2,4", "--grid", "ddp-rows=10", "--grid", "num-rounds=1"]
    assert main([*base, *grid, "--fast", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert [t["factors"] for t in record["trials"]] == [2, 4]
    assert record["run"].startswith("fast")
    for bad, why in ((["--grid", "factors="], "factors has none"),
                     (["--grid", "factors=two"], "'factors'"),
                     (["--grid", "no-such-key=1"], "no-such-key"),
                     (["--grid", "factors=2", "--set", "fraction-train=nan"],
                      "fraction-train")):
        assert main([*base, *bad]) == 2
        assert why in capsys.readouterr().err


def test_bench_tune_runs_every_combination_on_the_validation_split(csv_log, tmp_path,
                                                                    capsys):
    from fedrec.common.settings import RunSettings
    from fedrec.simulations.benches.simulate import simulate

    out = tmp_path / "tune.json"
    code = main(["bench", "tune", "--dataset", f"csv:{csv_log}", "--protocol",
                 "explicit-80-20", "--grid", "factors=2,4", "--grid", "lr=0.01,0.02",
                 "--set", "num-rounds=2", "--set", "evaluate-every=2", "--json", "--quiet",
                 "--out", str(out)])
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    trials = record["trials"]
    assert [(t["factors"], t["lr"]) for t in trials] == [(2, 0.01), (2, 0.02), (4, 0.01),
                                                          (4, 0.02)]
    best = min(trials, key=lambda t: t["rmse"])
    assert record["best"] == {"factors": best["factors"], "lr": best["lr"]}
    assert record["baseline"]["name"] == "bias" and record["baseline"]["rmse"] > 0
    # A trial is the simulation on the validation split, figure for figure.
    again = simulate(RunSettings.from_run_config({**record["settings"], "factors": 2,
                                                  "lr": 0.01, "validation": True}),
                     centralized=False)
    assert again["models"]["federated-mf"]["rmse"] == trials[0]["rmse"]
    assert main(["bench", "tune", "--dataset", f"csv:{csv_log}", "--grid", "colour=1,2"]) == 2
    assert "unknown run-config keys: colour" in capsys.readouterr().err


def test_bench_tune_centralized_fits_every_combination_on_the_validation_split(
        csv_log, tmp_path, capsys):
    from fedrec.common.settings import RunSettings
    from fedrec.simulations.benches.simulate import centralized_reference

    out = tmp_path / "tune.json"
    code = main(["bench", "tune", "--model", "centralized-mf", "--dataset", f"csv:{csv_log}",
                 "--protocol", "explicit-80-20", "--grid", "lr=0.005,0.02",
                 "--grid", "epochs=2,5", "--json", "--quiet", "--out", str(out)])
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    trials = record["trials"]
    assert [(t["lr"], t["epochs"]) for t in trials] == [(0.005, 2), (0.005, 5), (0.02, 2),
                                                        (0.02, 5)]
    best = min(trials, key=lambda t: t["rmse"])
    assert record["best"] == {"lr": best["lr"], "epochs": best["epochs"]}
    assert record["model"] == "centralized-mf" and record["baseline"]["name"] == "bias"
    # A trial is the centralized reference on the validation split, with those fields.
    settings = RunSettings.from_run_config({**record["settings"], "validation": True})
    again = centralized_reference(settings, ("centralized-mf",), {"lr": 0.02, "epochs": 5})
    assert again["centralized-mf"]["rmse"] == trials[3]["rmse"]
    # The settings differ, so the figures must too (the grid reached the model).
    assert len({t["rmse"] for t in trials}) == 4
    base = ["bench", "tune", "--model", "centralized-mf", "--dataset", f"csv:{csv_log}",
            "--protocol", "explicit-80-20", "--quiet", "--out", str(tmp_path / "bad.json")]
    for bad, why in ((["--grid", "lr=fast"], "'lr'"), (["--grid", "lr=nan"], "'lr'"),
                     (["--grid", "colour=1"], "colour"), (["--grid", "loss=bce"], "loss"),
                     (["--grid", "epochs=0"], "epochs")):
        assert main([*base, *bad]) == 2
        assert why in capsys.readouterr().err
    assert not (tmp_path / "bad.json").exists()


def test_bench_tune_records_each_trials_curve_and_best_round(csv_log, tmp_path, capsys):
    code = main(["bench", "tune", "--dataset", f"csv:{csv_log}", "--protocol",
                 "explicit-80-20", "--grid", "factors=2", "--set", "num-rounds=4",
                 "--set", "stop-patience=0",
                 "--set", "evaluate-every=2", "--json", "--quiet",
                 "--out", str(tmp_path / "t.json")])
    assert code == 0
    trial = json.loads(capsys.readouterr().out)["trials"][0]
    assert [r for r, _ in trial["curve"]] == [2, 4]
    assert trial["curve"][-1][1] == trial["rmse"]
    assert trial["best_round"] == min(trial["curve"], key=lambda rv: rv[1])[0]


def test_a_diverged_trial_is_never_the_best_and_its_rounds_never_chosen():
    from fedrec.simulations.benches.tune import _best, _best_round

    nan = float("nan")
    trials = [{"lr": 1.0, "rmse": nan}, {"lr": 0.1, "rmse": 0.95}, {"lr": 0.01, "rmse": 0.97}]
    assert _best(trials, "rmse")["lr"] == 0.1  # lower is better, NaN never wins
    ranked = [{"lr": 1.0, "ndcg@10": nan}, {"lr": 0.1, "ndcg@10": 0.2}]
    assert _best(ranked, "ndcg@10")["lr"] == 0.1  # higher is better, NaN never wins
    assert _best_round([[5, nan], [10, 0.93], [15, 0.94]], "rmse") == 10
    assert _best_round([[5, nan]], "rmse") is None
    assert _best_round([], "ndcg@10") is None
