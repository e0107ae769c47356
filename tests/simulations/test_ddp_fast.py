"""The vectorised secagg+dp run used for tuning (simulations.ddp_fast) against the Flower
run it stands in for."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedrec.common import ddp
from fedrec.simulations.benches.ddp_runs import evaluate_solved, federate, partitions
from fedrec.simulations.models.ddp_fast import evaluate_fast, fast_run
from fedrec.simulations.models.presets import ddp_preset

SHOP = "synthetic:n_users=300,n_items=150,n_events=15000"


def _settings(**kw):
    return replace(ddp_preset(8.0, dataset="synthetic"), dataset=SHOP, factors=4,
                   num_rounds=2, **kw)


@pytest.mark.parametrize("kw", [{"ddp_rows": 150},  # the catalogue: no row choice
                                {"ddp_rows": 40},  # a row choice, one value per item
                                {"ddp_rows": 40, "ddp_select_values": 60}])  # by sketch
def test_without_noise_the_fast_run_is_the_flower_run(monkeypatch, kw) -> None:
    """Every device (fraction 1), the devices' noise left out of both: the fast run's
    rows are the Flower run's up to the Flower run's integer rounding."""
    original = ddp.Skellam.encode
    monkeypatch.setattr(ddp.Skellam, "encode",
                        lambda self, x, rng: original(replace(self, device_mu=0.0), x, rng))
    s = _settings(**kw)
    real, _ = federate(s, True)
    fast = fast_run(s, noise=False)
    assert np.array_equal(real.layout.rows, fast.layout.rows)
    assert real.releases == fast.releases
    a, b = real.model.params.factors, fast.model.params.factors
    assert np.abs(a).max() > 0.05
    np.testing.assert_allclose(b, a, atol=2e-3 * np.abs(a).max())
    np.testing.assert_allclose(fast.model.params.bias, real.model.params.bias,
                               atol=2e-3 * np.abs(real.model.params.bias).max() + 1e-6)


def test_the_fast_evaluation_is_the_devices_evaluation() -> None:
    s = _settings(ddp_rows=150)
    model = fast_run(s).model.params
    parts = partitions(s)
    slow, fast = evaluate_solved(model, parts, s.ddp_user_reg), evaluate_fast(
        model, parts, s.ddp_user_reg)
    assert slow["num-users"] == fast["num-users"] > 0
    for key in ("hr@10", "ndcg@10", "recall@10", "precision@10"):
        assert fast[key] == pytest.approx(slow[key], abs=1e-9)


def test_the_fast_run_refuses_what_it_does_not_model() -> None:
    with pytest.raises(ValueError, match="implicit"):
        fast_run(replace(ddp_preset(8.0, explicit=True), dataset=SHOP))
