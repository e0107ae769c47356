"""Matrix factorisation: every optimiser learns, the halves are separate, errors are clear."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.common.data.synthetic import ShopConfig, generate_shop
from fedrec.common.metrics import ranking_metrics, rmse
from fedrec.common.mf import MatrixFactorization, MFConfig, NonFiniteError
from fedrec.common.split import split
from fedrec.simulations.models.baselines import BiasBaseline, Popularity
from tests.conftest import low_rank_ratings

SETUPS = {
    "gd": {"optimizer": "gd", "step_rule": "adam", "lr": 0.05, "epochs": 150},
    "sgd": {"optimizer": "sgd", "step_rule": "sgd", "lr": 0.02, "epochs": 60, "batch_size": 32},
    "online": {"optimizer": "online", "step_rule": "sgd", "lr": 0.02, "epochs": 15},
}


@pytest.fixture(scope="module")
def explicit_split():
    data = low_rank_ratings()
    return next(split(data, "explicit-80-20"))


@pytest.mark.parametrize("optimizer", list(SETUPS))
def test_each_optimizer_beats_the_bias_baseline(explicit_split, optimizer):
    s = explicit_split
    cfg = MFConfig(n_factors=8, reg=0.02, reg_bias=0.01, seed=1, **SETUPS[optimizer])
    model = MatrixFactorization(cfg).fit(s.train.user, s.train.item, s.train.value,
                                         s.train.n_users, s.train.n_items)
    mf = rmse(model.predict(s.test.user, s.test.item), s.test.value)
    base = BiasBaseline().fit(s.train.user, s.train.item, s.train.value,
                              s.train.n_users, s.train.n_items)
    bias = rmse(base.predict(s.test.user, s.test.item), s.test.value)
    assert mf < 0.8 * bias, (optimizer, mf, bias)
    assert model.history[-1] < model.history[0]


@pytest.mark.parametrize("loss", ["bce", "bpr"])
def test_implicit_losses_rank_better_than_popularity(loss):
    shop = generate_shop(ShopConfig(n_users=300, n_items=200, n_events=20_000, seed=2))
    s = next(split(shop, "implicit-80-20"))
    cfg = MFConfig(loss=loss, n_factors=16, step_rule="adam", lr=0.01, reg=0.01, epochs=15,
                   batch_size=256, negatives=4, seed=0)
    model = MatrixFactorization(cfg).fit(s.train.user, s.train.item, None,
                                         s.train.n_users, s.train.n_items)
    pop = Popularity().fit(s.train.user, s.train.item, None, s.train.n_users, s.train.n_items)
    ours = ranking_metrics(model.score_items, s.train, s.test)["ndcg@10"]
    base = ranking_metrics(pop.score_items, s.train, s.test)["ndcg@10"]
    assert ours > 1.2 * base, (ours, base)


def test_same_seed_same_model_and_inputs_untouched(explicit_split):
    s = explicit_split
    args = (s.train.user.copy(), s.train.item.copy(), s.train.value.copy(), 60, 40)
    cfg = MFConfig(n_factors=4, epochs=3, seed=7)
    a = MatrixFactorization(cfg).fit(*args)
    b = MatrixFactorization(cfg).fit(*args)
    np.testing.assert_array_equal(a.items.factors, b.items.factors)
    np.testing.assert_array_equal(a.users.factors, b.users.factors)
    np.testing.assert_array_equal(args[0], s.train.user)
    np.testing.assert_array_equal(args[2], s.train.value)
    c = MatrixFactorization(MFConfig(n_factors=4, epochs=3, seed=8)).fit(*args)
    assert not np.array_equal(a.items.factors, c.items.factors)


def test_device_and_global_halves_have_the_expected_shapes(explicit_split):
    s = explicit_split
    m = MatrixFactorization(MFConfig(n_factors=5, epochs=1)).fit(
        s.train.user, s.train.item, s.train.value, 60, 40)
    assert m.users.factors.shape == (60, 5) and m.users.bias.shape == (60,)
    assert m.items.factors.shape == (40, 5) and m.items.bias.shape == (40,)
    assert m.items.mean == pytest.approx(float(s.train.value.mean()), rel=1e-6)
    assert m.items.factors.dtype == np.float32


def test_predictions_stay_in_the_training_rating_range(explicit_split):
    s = explicit_split
    m = MatrixFactorization(MFConfig(n_factors=4, epochs=2)).fit(
        s.train.user, s.train.item, s.train.value, 60, 40)
    m.items.bias[:] = 100  # push predictions far out
    pred = m.predict(s.test.user, s.test.item)
    assert pred.max() <= s.train.value.max()


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_divergence_raises_a_named_error(explicit_split):
    s = explicit_split
    cfg = MFConfig(n_factors=4, lr=1e6, epochs=3, batch_size=1000)
    with pytest.raises(NonFiniteError, match="lower lr"):
        MatrixFactorization(cfg).fit(s.train.user, s.train.item, s.train.value, 60, 40)


def test_unfitted_model_and_bad_config_say_what_is_wrong():
    with pytest.raises(RuntimeError, match="not fitted"):
        MatrixFactorization().predict(np.array([0]), np.array([0]))
    with pytest.raises(ValueError, match="optimizer must be one of gd, sgd, online"):
        MFConfig(optimizer="lbfgs")
    with pytest.raises(ValueError, match="negatives must be >= 1"):
        MFConfig(loss="bce", negatives=0)
    with pytest.raises(ValueError, match="needs rating values"):
        MatrixFactorization(MFConfig(loss="mse")).fit(np.array([0]), np.array([0]))


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_partial_fit_grows_tables_and_leaves_untouched_rows_bit_identical(explicit_split, loss):
    s = explicit_split
    cfg = MFConfig(loss=loss, n_factors=4, epochs=2, negatives=2, step_rule="adagrad", seed=3)
    model = MatrixFactorization(cfg).fit(s.train.user, s.train.item, s.train.value, 60, 40)
    items_before = model.items.copy()
    users_before = model.users.copy()
    # New events: user 2 meets item 5 and a brand-new item 41; a new user 61 appears.
    model.partial_fit(np.array([2, 61]), np.array([5 if loss == "mse" else 41, 41]),
                      np.array([4.0, 5.0]))
    assert model.items.n_items == 42 and model.users.n_users == 62
    touched_items = {5, 41} if loss == "mse" else None
    if touched_items is not None:  # negatives of bce touch sampled items too
        untouched = [i for i in range(40) if i not in touched_items]
        np.testing.assert_array_equal(model.items.factors[untouched],
                                      items_before.factors[untouched])
        np.testing.assert_array_equal(model.items.bias[untouched], items_before.bias[untouched])
    others = [u for u in range(60) if u != 2]
    np.testing.assert_array_equal(model.users.factors[others], users_before.factors[others])
    assert model.items.mean == items_before.mean


def test_learn_one_follows_a_new_taste():
    cfg = MFConfig(loss="mse", n_factors=4, optimizer="online", lr=0.05, reg=0.0, epochs=1)
    model = MatrixFactorization(cfg)
    for _ in range(200):
        model.learn_one(0, 0, 5.0)
        model.learn_one(0, 1, 1.0)
    assert model.predict(np.array([0, 0]), np.array([0, 1])).tolist() == pytest.approx(
        [5.0, 1.0], abs=0.2)
