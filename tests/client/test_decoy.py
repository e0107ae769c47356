"""The decoy mode on one device: fixed reply size, real rows untouched, zero-mean decoys."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.client import decoy
from fedrec.client.device import Device
from fedrec.common.losses import Regularization
from fedrec.common.schema import TrainConfig

N_ITEMS, K = 300, 6


def table(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 0.3, (N_ITEMS, K)).astype(np.float32),
            rng.normal(0, 0.3, N_ITEMS).astype(np.float32))


def config(explicit: bool) -> TrainConfig:
    return TrainConfig(loss="mse" if explicit else "bce", optimizer="sgd", local_epochs=2,
                       lr=0.05, reg=0.01, reg_bias=0.01, batch_size=8, negatives=2)


def device(explicit: bool, n: int = 20, seed: int = 3) -> Device:
    rng = np.random.default_rng(seed)
    items = np.sort(rng.choice(N_ITEMS, n, replace=False))
    values = rng.integers(1, 6, n).astype(np.float32) if explicit else None
    return Device(items, values, seed=seed)


@pytest.mark.parametrize("explicit", [True, False])
def test_the_reply_has_exactly_the_asked_rows_and_its_real_rows_are_unchanged(explicit):
    factors, bias = table()
    mean = 3.5 if explicit else 0.0
    d = device(explicit)
    padded, _ = d.train(factors, bias, mean, config(explicit), reply_rows=150,
                        rating_range=(1.0, 5.0))
    assert len(padded.ids) == 150 and (np.diff(padded.ids) > 0).all()
    real = ~d.last_decoys
    # The same device asked for exactly its real rows: nothing padded, the same rows.
    same = device(explicit)
    plain_update, _ = same.train(factors, bias, mean, config(explicit),
                                 reply_rows=int(real.sum()), rating_range=(1.0, 5.0))
    assert not same.last_decoys.any()
    if explicit:  # ratings train as in plain mode; implicit negatives are drawn per round
        reference, _ = device(explicit).train(factors, bias, mean, config(explicit))
        np.testing.assert_array_equal(reference.rows, plain_update.rows)
    assert padded.ids[real].tolist() == plain_update.ids.tolist()
    np.testing.assert_array_equal(padded.rows[real], plain_update.rows)
    np.testing.assert_array_equal(padded.bias[real], plain_update.bias)
    np.testing.assert_array_equal(padded.counts[real], plain_update.counts)
    decoys = padded.ids[d.last_decoys]
    assert not np.isin(decoys, d.positives).any()
    assert np.all(padded.rows[d.last_decoys] != 0)  # decoys are trained like real rows
    assert padded.rows.dtype == plain_update.rows.dtype
    assert (padded.counts == 1).all()  # every row visited every epoch: counts tell nothing


def test_a_device_with_more_real_rows_than_asked_keeps_its_positives():
    factors, bias = table()
    d = device(False, n=30)
    update, _ = d.train(factors, bias, 0.0, config(False), reply_rows=40)
    assert len(update.ids) == 40 and not d.last_decoys.any()
    assert np.isin(d.positives, update.ids).all()  # 30 positives and 10 negatives
    d = device(False, n=30)
    update, _ = d.train(factors, bias, 0.0, config(False), reply_rows=25)
    assert len(update.ids) == 25 and np.isin(update.ids, d.positives).all()


@pytest.mark.parametrize(("explicit", "negative_weight"), [(True, 1.0), (False, 1.0),
                                                         (False, 0.25)])
def test_decoys_carry_zero_mean_data_gradients(explicit, negative_weight):
    """Averaged over the device's random draws, a decoy moves an item's bias by nothing
    (with L2 off): its virtual label or rating is drawn around the model's own prediction
    (implicit, with negatives weighted: so that the weighted step has zero mean)."""
    factors, bias = table(1)
    ids = np.arange(0, N_ITEMS, 3)
    p = np.random.default_rng(5).normal(0, 0.5, K)
    trace = decoy.RoundTrace(
        explicit=explicit, lr=0.05, reg=Regularization(0.0, 0.0), mean=3.0,
        epoch_users=[(p, 0.1), (p, 0.1)], residuals=np.array([-1.2, -0.3, 0.4, 0.9]),
        whole_ratings=True,
        rating_range=(-100.0, 100.0), negative_weight=negative_weight)
    draws = [decoy._virtual_rows(ids, factors, bias, trace, np.random.default_rng(s))[1]
             for s in range(3000)]
    draws = np.array(draws)  # (draws, items)
    mean, spread = draws.mean(axis=0), draws.std(axis=0)
    assert (spread > 0).all()
    z = mean / (spread / np.sqrt(len(draws)))
    assert np.abs(z).max() < 4.5  # no item's mean is away from zero
    assert np.abs(mean).mean() < 0.05 * np.abs(draws).mean()


def test_virtual_ratings_are_whole_in_range_and_unbiased():
    rng = np.random.default_rng(0)
    trace = decoy.RoundTrace(True, 0.1, Regularization(), 3.0, [(np.zeros(2), 0.0)],
                             np.array([-0.7, 0.2, 0.5]), True, rating_range=(1.0, 5.0))
    for centre in (3.3, 4.8, 1.1):  # also near the ends of the scale, where a clip biases
        r = decoy._virtual_ratings(np.full(40_000, centre), trace, rng)
        assert set(np.unique(r).tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
        assert r.mean() == pytest.approx(centre, abs=0.015)


def test_drawn_items_follow_the_real_rows_beliefs():
    rng = np.random.default_rng(2)
    candidates = rng.normal(0, 2, 5000)  # logits of untouched items
    real = np.r_[rng.normal(2.0, 0.5, 300), rng.normal(-1.0, 0.5, 700)]  # the real rows'
    w = decoy._histogram_ratio(candidates, real)
    drawn = rng.choice(candidates, size=20_000, p=w / w.sum())
    qs = [0.1, 0.3, 0.5, 0.7, 0.9]
    np.testing.assert_allclose(np.quantile(drawn, qs), np.quantile(real, qs), atol=0.25)
