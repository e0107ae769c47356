"""``fedrec bench privacy`` end to end on a small shop: every mode, ε met, the attack
measured, JSON and PNG written."""

from __future__ import annotations

import json

import pytest

from fedrec.simulations.cli.main import main


def test_bench_privacy_runs_every_mode_and_dp_at_the_target_epsilon(tmp_path, capsys):
    out = tmp_path / "privacy.json"
    code = main(["bench", "privacy", "--dataset", "synthetic:n_users=80,n_items=120,n_events=3000",
                 "--rounds", "3", "--epsilons", "8", "--set", "evaluate-every=3",
                 "--set", "fraction-train=0.5", "--decoy-rows", "60", "--secagg-devices", "10",
                 "--quiet", "--json", "--out", str(out)])
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert set(record["modes"]) == {"plain", "decoy", "dp-eps8", "decoy+dp-eps8", "secagg",
                                    "secagg+dp-eps8"}
    ddp = record["modes"]["secagg+dp-eps8"]
    assert 0.9 * 8 < ddp["epsilon"] <= 8.0 and ddp["sum"] == "SecAgg+"
    assert ddp["ndcg@10"] > 0 and ddp["upload_bytes_per_device_round"] > 0
    # The server holds each device's masked vector only: reading it tells nothing.
    assert abs(ddp["attack"]["membership"]["catalogue_auc"] - 0.5) < 0.15
    assert record["popularity"]["ndcg@10"] > 0
    assert record["dp_clip"] == pytest.approx(record["modes"]["plain"]["update_norm_median"])
    decoy, secure = record["modes"]["decoy"], record["modes"]["secagg"]
    audit = decoy["decoys"]
    assert audit["rows"] == 60 and 0 < audit["decoy_share"] < 1
    assert set(audit["real_vs_decoy_auc"]) >= {"bias", "row_norm", "popularity", "learned",
                                              "best"}
    assert audit["decoy_bias_drift"] < audit["real_bias_drift"]  # decoys are zero-mean
    assert decoy["attack"]["catalogue_auc"] < record["modes"]["plain"]["attack"]["catalogue_auc"]
    # The secagg server holds masked vectors only: reading them tells nothing.
    assert abs(secure["attack"]["catalogue_auc"] - 0.5) < 0.15
    assert secure["upload_bytes_per_device_round"] > record["modes"]["plain"][
        "upload_bytes_per_device_round"]
    cost = record["secagg_cost"]
    # Which is slower is the bench's finding, not the test's: on a busy machine a 10-device
    # round of either can take the longer (CI once measured secagg at 0.68x plain's). The
    # test holds what does not depend on the machine: every stage timed, bytes counted.
    assert cost["devices_per_round"] == 10 and cost["ratio"] > 0
    assert cost["secagg"]["upload_ratio"] > 1  # a dense masked vector, keys and shares
    assert set(cost["secagg"]["stages"]) == {"setup", "share_keys", "collect_masked_vectors",
                                             "unmask", "server unmask and step"}
    assert all(t >= 0 for t in cost["secagg"]["stages"].values())
    plain, dp = record["modes"]["plain"], record["modes"]["dp-eps8"]
    assert plain["epsilon"] is None and dp["epsilon"] == pytest.approx(8.0, rel=0.02)
    assert dp["epsilon"] <= 8.0 and dp["noise"] > 0
    # Plain replies give the items away; dp hides which named rows are real, not the ids.
    assert plain["attack"]["catalogue_auc"] > 0.95 and plain["attack"]["named_rows_auc"] > 0.9
    assert dp["attack"]["named_rows_auc"] < plain["attack"]["named_rows_auc"]
    assert record["centralized"]["ndcg@10"] > 0
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_bench_privacy_measures_the_rating_attack_on_explicit_data(tmp_path, capsys):
    code = main(["bench", "privacy", "--dataset",
                 "synthetic:n_users=60,n_items=40,n_events=4000,rating_share=1.0",
                 "--protocol", "explicit-80-20", "--rounds", "2", "--epsilons", "8",
                 "--set", "evaluate-every=2", "--set", "server-lr=1.0", "--modes", "plain,dp",
                 "--dp-clip", "0.5", "--quiet", "--json",
                 "--out", str(tmp_path / "p.json")])
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    plain = record["modes"]["plain"]["attack"]["ratings"]
    dp = record["modes"]["dp-eps8"]["attack"]["ratings"]
    assert plain["rmse"] < 0.8 * plain["mean_guess_rmse"]  # plain replies give ratings away
    assert dp["rmse"] > plain["rmse"]


def test_bench_privacy_can_time_secagg_rounds_alone(tmp_path, capsys):
    code = main(["bench", "privacy", "--dataset", "synthetic:n_users=30,n_items=40,n_events=900",
                 "--cost-only", "--secagg-devices", "6", "--quiet", "--out",
                 str(tmp_path / "cost.json")])
    assert code == 0
    out = capsys.readouterr().out
    assert "6 devices per round, 40 items" in out and "share_keys" in out
    record = json.loads((tmp_path / "cost.json").read_text())
    cost = record["secagg_cost"]
    # (the time ratio is measured, not asserted: it depends on how busy the machine is)
    assert cost["ratio"] > 0 and cost["secagg"]["upload_ratio"] > 1 and "modes" not in record
    for mode in ("secagg", "secagg+dp"):  # every byte of a device's SecAgg+ stages counted
        assert cost[mode]["upload_bytes_per_device_round"] > 0
        assert cost[mode]["upload_ratio"] == pytest.approx(
            cost[mode]["upload_bytes_per_device_round"]
            / cost["plain"]["upload_bytes_per_device_round"])
    assert cost["plain"]["upload_bytes_per_device_round"] > 0
    assert cost["secagg+dp"]["select"]["upload_bytes_per_device"] > 0


def test_a_secagg_block_shrinks_the_upload_in_the_cost_bench(tmp_path):
    """--set secagg-rows reaches the secagg run (not plain, which refuses it) and the
    masked vector, so the bytes each device sends, shrink with the block."""
    costs = []
    for rows in ("0", "10"):
        code = main(["bench", "privacy", "--dataset",
                     "synthetic:n_users=30,n_items=40,n_events=900", "--cost-only",
                     "--modes", "plain,secagg", "--secagg-devices", "6", "--quiet",
                     "--set", f"secagg-rows={rows}", "--out", str(tmp_path / f"{rows}.json")])
        assert code == 0
        costs.append(json.loads((tmp_path / f"{rows}.json").read_text())["secagg_cost"])
    whole, block = (c["secagg"]["upload_bytes_per_device_round"] for c in costs)
    assert block < 0.6 * whole
    assert "secagg+dp" not in costs[0]
