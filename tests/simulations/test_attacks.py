"""Every attack (fedrec.simulations.attacks): its replies pass the server's checks (the
attacks work within the bounds, as a real competitor's devices would), and end to end on a
small shop, each attack moves what it aims at with the defences off, and the default
defences bring the crafted ones down (so the bench can fail both ways)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from fedrec.common import records
from fedrec.common.defences import DEFAULT, OFF
from fedrec.common.partition import simulated_partitions
from fedrec.common.replies import TRAIN, Bounds
from fedrec.common.schema import validate_update
from fedrec.common.settings import RunSettings
from fedrec.simulations.attacks import Request, attack, knowledge_of
from fedrec.simulations.benches.attack import (
    ATTACKS,
    bench_attack,
    malicious_count,
    pick_target,
    run_attack,
)
from fedrec.simulations.cli.main import main
from fedrec.simulations.models.presets import preset_settings

SHOP = "synthetic:n_users=600,n_items=400,n_events=20000"


def shop_settings():
    """The shop's preset with the model these tests' thresholds were set on (32 factors, 4
    negatives at full weight): what an attack can do is the subject here, not the preset
    of the day."""
    return replace(preset_settings(SHOP, "implicit-80-20"), factors=32, negatives=4,
                   negative_weight=1.0)


@pytest.fixture(scope="module")
def shop():
    return simulated_partitions(SHOP, "implicit-80-20")


def request(shop, k: int = 8, seed: int = 1) -> Request:
    rng = np.random.default_rng(seed)
    factors = (0.1 * rng.standard_normal((shop.n_items, k))).astype(np.float32)
    bias = (0.1 * rng.standard_normal(shop.n_items)).astype(np.float32)
    return Request(factors, bias, 0.0, RunSettings(factors=k).train_config(), 3)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_attack_replies_within_the_servers_checks(shop, name):
    target = pick_target(shop, "tail")
    knowledge = knowledge_of(shop, target, max_norm=10.0, explicit=False)
    bad = attack(name, knowledge, seed=5)
    req = request(shop)
    for device in (0, 1):
        update, metrics = bad.craft(req, device)
        arrays = {key: np.asarray(v) for key, v in update.arrays().items()}
        checked = validate_update(arrays, shop.n_items, 8, max_norm=10.0)  # raises if not
        TRAIN.validate(records.metrics_to_record(metrics), Bounds())
        if bad.targeted:
            assert target in checked.ids
    again, _ = attack(name, knowledge, seed=5).craft(req, 0)  # same seed, same reply
    first, _ = attack(name, knowledge, seed=5).craft(req, 0)
    for a, b in zip(again.arrays().values(), first.arrays().values(), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="attack must be one of"):
        attack("nope", knowledge)


def test_knowledge_is_a_public_share_and_targets_sit_where_named(shop):
    k = knowledge_of(shop, 3, 10.0, False, public_share=0.01)
    assert len(k.public_items) == round(0.01 * len(shop.split.train.item))
    counts = np.bincount(shop.split.train.item, minlength=shop.n_items)
    tail, middle = pick_target(shop, "tail"), pick_target(shop, "middle")
    assert 0 < counts[tail] < counts[middle]
    assert malicious_count(600, 0.001) == 1 and malicious_count(600, 0.05) == 30
    assert malicious_count(600, 0.0) == 0


@pytest.fixture(scope="module")
def bench():
    settings = replace(shop_settings(), num_rounds=6,
                       evaluate_every=3)
    return bench_attack(settings, list(ATTACKS), [0.05], ["tail"], [OFF, DEFAULT])


def row(bench, attack_name: str, defences: str) -> dict:
    return next(r for r in bench["table"] if r["attack"] == attack_name
                and r["defences"] == defences)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["push", "push-noise", "push-jitter", "pipattack",
                                  "fedrecattack"])
def test_crafted_attacks_lift_the_target_with_defences_off_and_not_with_them_on(bench, name):
    none = row(bench, "none", OFF)["target_rank"]
    off, on = row(bench, name, OFF), row(bench, name, DEFAULT)
    assert off["target_rank"] < 0.2 * none  # the attack works when nothing stops it
    assert on["er@10"] <= 0.02
    assert on["target_rank"] > 3 * off["target_rank"]


@pytest.mark.slow
def test_at_the_shops_preset_model_the_crafted_attacks_stay_down_with_the_defaults():
    """The tests above hold the model these thresholds were set on; the preset has since
    grown (64 factors, 8 negatives at half weight) and lets attacks go further in the
    README's table. The same bounds on the preset's own model, so a preset that opens a
    hole fails here."""
    settings = replace(preset_settings(SHOP, "implicit-80-20"), num_rounds=6,
                       evaluate_every=6)
    target = pick_target(simulated_partitions(SHOP, "implicit-80-20"), "tail")
    none = run_attack(replace(settings, defences=OFF), None, 0.0, target)["rounds"][-1]
    for name in ("push", "push-noise", "push-jitter", "pipattack"):
        off = run_attack(replace(settings, defences=OFF), name, 0.05, target)["rounds"][-1]
        on = run_attack(replace(settings, defences=DEFAULT), name, 0.05,
                        target)["rounds"][-1]
        assert off["target_rank"] < 0.2 * none["target_rank"], name  # it works unchecked
        assert on["er@10"] <= 0.02, name
        assert on["target_rank"] > 3 * off["target_rank"], name


@pytest.mark.slow
def test_copied_rows_are_set_aside_and_counted(bench):
    for name in ("push", "pipattack", "fedrecattack", "untargeted"):
        assert row(bench, name, DEFAULT)["set_aside"] > 0
        assert row(bench, name, OFF)["set_aside"] == 0
    assert row(bench, "none", DEFAULT)["set_aside"] == 0  # no honest device set aside


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fake-random", "fake-bandwagon", "fake-target"])
def test_fake_users_lift_the_target_but_rarely_into_honest_top_10(bench, name):
    """Fake users train honestly on invented histories: nothing they send is out of the
    ordinary, so no defence sets them aside; what they can do is measured."""
    none = row(bench, "none", OFF)["target_rank"]
    for defences in (OFF, DEFAULT):
        r = row(bench, name, defences)
        assert r["target_rank"] < 0.5 * none
        assert r["er@10"] <= 0.05  # the done-when line at 5 % of devices


@pytest.mark.slow
def test_claimed_counts_change_nothing_under_uniform_weighting(bench):
    for defences in (OFF, DEFAULT):
        quantity, honest = row(bench, "quantity", defences), row(bench, "fake-target",
                                                                    defences)
        assert quantity["ndcg@10"] == honest["ndcg@10"]
        assert quantity["target_rank"] == honest["target_rank"]


@pytest.mark.slow
def test_untargeted_attack_costs_quality_off_and_is_stopped_on(bench):
    assert row(bench, "untargeted", OFF)["ndcg_change"] < -0.10
    assert row(bench, "untargeted", DEFAULT)["ndcg_change"] > -0.02


@pytest.mark.slow
def test_the_default_defences_cost_honest_users_at_most_two_percent_here(bench):
    assert row(bench, "none", DEFAULT)["ndcg_vs_off"] > -0.02


@pytest.mark.slow
def test_coordination_alone_leaves_an_honest_run_bit_identical():
    settings = replace(shop_settings(), num_rounds=3,
                       evaluate_every=3)
    off = run_attack(replace(settings, defences=OFF), None, 0.0, 5)
    coord = run_attack(replace(settings, defences="coordination"), None, 0.0, 5)
    assert coord["set_aside"] == {"coordination": 0}
    assert off["rounds"] == coord["rounds"]


def test_bench_attack_cli_writes_json_and_png_and_refuses_bad_values(tmp_path, capsys):
    out = tmp_path / "attack.json"
    code = main(["bench", "attack", "--dataset", SHOP, "--attacks", "push",
                 "--fractions", "0.05", "--set", "num-rounds=2", "--defences", "off",
                 "--out", str(out), "--quiet"])
    assert code == 0
    record = json.loads(out.read_text())
    assert [r["attack"] for r in record["table"]] == ["none", "push"]
    assert out.with_suffix(".png").stat().st_size > 0
    assert "ER@10" in capsys.readouterr().out
    for bad, message in ((["--attacks", "nope"], "attacks must be among"),
                         (["--defences", "median"], "defences must be"),
                         (["--fractions", "2"], "fractions must be in"),
                         (["--fractions", "nan"], "fractions must be in"),
                         (["--fractions", "some"], "--fractions takes numbers"),
                         (["--evaluate-every", "0"], "--evaluate-every must be >= 1"),
                         (["--jobs", "0"], "jobs must be >= 1"),
                         (["--set", "defences=clip,clip"], "defences must be"),
                         (["--targets", "head"], "target must be one of"),
                         (["--set", "privacy=dp"], "bench attack runs privacy")):
        assert main(["bench", "attack", "--dataset", SHOP, "--set", "num-rounds=1",
                     "--out", str(out), "--quiet", *bad]) == 2
        assert message in capsys.readouterr().err


def test_a_long_bench_is_written_as_it_goes_in_whole_off_on_pairs():
    """A bench run for hours hands out its record after every run (``complete`` false), the
    runs without attack first and then each attack under every setting in turn, so a record
    read before the end (or left by a stopped run) compares like with like."""
    settings = replace(shop_settings(), num_rounds=1,
                       evaluate_every=1)
    seen: list[dict] = []
    final = bench_attack(settings, ["push", "untargeted"], [0.05], ["tail"], [OFF, DEFAULT],
                         on_run=seen.append)
    order = [(r["attack"], r["defences"]) for r in final["runs"]]
    assert order == [("none", OFF), ("none", DEFAULT), ("push", OFF), ("push", DEFAULT),
                     ("untargeted", OFF), ("untargeted", DEFAULT)]
    assert [len(r["runs"]) for r in seen] == [1, 2, 3, 4, 5]
    assert not any(r["complete"] for r in seen) and final["complete"]
    assert all(r["planned"] == 6 for r in [*seen, final])
    assert [len(r["table"]) for r in seen] == [1, 2, 3, 4, 5]
    # Two at a time, each run in its own process: the same record, in the same order, and
    # what is handed out as it goes is always the plan's first runs.
    partial: list[dict] = []
    two = bench_attack(settings, ["push", "untargeted"], [0.05], ["tail"], [OFF, DEFAULT],
                       on_run=partial.append, jobs=2)
    assert two["runs"] == final["runs"] and two["table"] == final["table"]
    for p in partial:
        assert p["runs"] == final["runs"][:len(p["runs"])]


@pytest.mark.slow
def test_under_secagg_the_push_goes_through_what_stays_open():
    """Under secagg the server sees only sums: no defence screens single updates, and a
    push within the published bound lifts the target (the README says so). If a defence
    ever closes this, this test tells: update the README's secagg table with it."""
    from fedrec.common import privacy

    settings = replace(privacy.for_mode(shop_settings(), "secagg"),
                       num_rounds=6, evaluate_every=6)
    target = pick_target(simulated_partitions(SHOP, "implicit-80-20"), "tail")
    none = run_attack(settings, None, 0.0, target)["rounds"][-1]
    push = run_attack(settings, "push", 0.05, target)
    assert push["set_aside"] == {}  # nothing to screen: the server never sees one update
    assert none["er@10"] == 0.0 and push["rounds"][-1]["er@10"] > 0.3


@pytest.mark.slow
@pytest.mark.parametrize(("name", "defence"), [("push-noise", "clip"),
                                               ("push-jitter", "clip"),
                                               ("push", "coordination")])
def test_each_defence_alone_brings_its_attack_down(name, defence):
    settings = replace(shop_settings(), num_rounds=6,
                       evaluate_every=6)
    target = pick_target(simulated_partitions(SHOP, "implicit-80-20"), "tail")
    off = run_attack(replace(settings, defences=OFF), name, 0.05, target)["rounds"][-1]
    on = run_attack(replace(settings, defences=defence), name, 0.05, target)
    assert off["er@10"] > 0.3
    assert on["rounds"][-1]["er@10"] <= 0.02
    if defence == "coordination":  # it set the malicious devices aside
        assert on["set_aside"]["coordination"] >= on["malicious"]
