"""The Skellam mechanism: encoding, modular sums, noise, and its privacy accounting."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrec.common.ddp import (
    Kind,
    Release,
    Skellam,
    epsilon,
    gaussian_epsilon,
    plan_noise,
)


def unit_vectors(n: int, dim: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rng.normal(size=dim)
        out.append(x / np.linalg.norm(x) * rng.uniform(0.2, 1.0))
    return out


def test_the_sum_of_encodings_decodes_to_the_sum_within_rounding() -> None:
    enc = Skellam(dim=200, clip=1.0, scale=1000.0, bits=20, device_mu=0.0)
    xs = unit_vectors(30, 200)
    rng = np.random.default_rng(1)
    total = sum(enc.encode(x, rng) for x in xs)
    got = enc.decode(total)
    # Each device's rounding moves a value by less than one integer.
    assert np.abs(got - sum(xs)).max() < 30 / enc.scale
    # ... and is unbiased: the error's mean over many values is near zero.
    assert abs(float(np.mean(got - sum(xs)))) < 3 * math.sqrt(30 / 4 / 200) / enc.scale


def test_negative_sums_wrap_and_come_back() -> None:
    enc = Skellam(dim=3, clip=1.0, scale=100.0, bits=12, device_mu=0.0)
    x = np.array([-0.9, 0.0, 0.3])
    z = enc.encode(x / np.linalg.norm(x) * 0.99, np.random.default_rng(0))
    assert z.min() >= 0 and z.max() < enc.modulus
    assert enc.decode(z)[0] < -0.8


def test_a_longer_vector_is_clipped_not_refused() -> None:
    enc = Skellam(dim=4, clip=1.0, scale=1e4, bits=24, device_mu=0.0)
    got = enc.decode(enc.encode(np.array([30.0, 40.0, 0.0, 0.0]), np.random.default_rng(0)))
    assert np.allclose(got, [0.6, 0.8, 0, 0], atol=1e-3)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 400), st.floats(0.5, 200.0), st.integers(0, 10_000))
def test_conditional_rounding_always_meets_the_sensitivity(dim: int, scale: float,
                                                           seed: int) -> None:
    enc = Skellam(dim=dim, clip=1.0, scale=scale, bits=30, device_mu=0.0)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=dim)
    x /= np.linalg.norm(x)
    z = enc.round(x * scale, rng)
    assert float(z @ z) <= enc.sensitivity ** 2
    assert np.abs(z - x * scale).max() < 1.0


def test_the_summed_noise_has_the_planned_variance() -> None:
    enc = Skellam(dim=20_000, clip=1.0, scale=50.0, bits=24, device_mu=40.0)
    rng = np.random.default_rng(3)
    zero = np.zeros(enc.dim)
    total = sum(enc.encode(zero, rng) for _ in range(10))
    noise = enc.decode(total)
    expected = enc.noise_std(10)
    assert abs(float(noise.std()) / expected - 1) < 0.03
    assert abs(float(noise.mean())) < 4 * expected / math.sqrt(enc.dim)


def test_a_round_never_wraps_even_at_its_worst() -> None:
    for devices, noise in ((2, 0.5), (943, 1.0), (5000, 3.0)):
        enc = Skellam.for_round(3000, 1.0, 24, devices, noise)
        worst = devices * (enc.scale * enc.clip + 1) + 10 * math.sqrt(
            2 * enc.device_mu * devices)
        assert worst < enc.modulus / 2
        # The sum of `devices` devices carries noise multiplier `noise` at Δ2.
        assert math.isclose(math.sqrt(2 * enc.device_mu * devices) / enc.sensitivity, noise,
                            rel_tol=1e-9)


def test_provisioning_for_dropouts_adds_the_missing_shares() -> None:
    full = Skellam.for_round(100, 1.0, 24, 100, 1.0, provisioned=1.0)
    spare = Skellam.for_round(100, 1.0, 24, 100, 1.0, provisioned=0.8)
    assert math.isclose(spare.device_mu * 80, full.device_mu * 100, rel_tol=1e-2)


def test_too_few_bits_are_refused() -> None:
    with pytest.raises(ValueError, match="bits cannot hold"):
        Skellam.for_round(100, 1.0, 8, 10_000, 1.0)
    with pytest.raises(ValueError, match="bits"):
        Skellam(dim=1, clip=1.0, scale=1.0, bits=31, device_mu=0.0)
    enc = Skellam(dim=3, clip=1.0, scale=1.0, bits=8, device_mu=0.0)
    with pytest.raises(ValueError, match="non-finite"):
        enc.encode(np.array([np.nan, 0, 0]), np.random.default_rng(0))
    with pytest.raises(ValueError, match="has 2 values"):
        enc.encode(np.zeros(2), np.random.default_rng(0))


def test_skellam_accounting_approaches_the_gaussian_mechanism() -> None:
    """At large μ the Skellam mechanism is the Gaussian one of the same variance: its ε is
    a little above (the L1 term), never below."""
    for noise, releases in ((0.7, 1), (1.0, 3), (3.0, 10)):
        enc = Skellam.for_round(2000, 1.0, 24, 500, noise)
        skellam = epsilon([Release.of(enc, 500)] * releases, 1e-5)
        gauss = gaussian_epsilon(noise, releases, 1e-5)
        assert gauss <= skellam <= gauss * 1.01


def test_epsilon_composes_and_grows_when_noise_is_missing() -> None:
    enc = Skellam.for_round(500, 1.0, 24, 100, 1.0)
    one = epsilon([Release.of(enc, 100)], 1e-5)
    assert epsilon([Release.of(enc, 100)] * 2, 1e-5) > one
    # Devices that dropped out after masking took their noise with them.
    assert epsilon([Release.of(enc, 60)], 1e-5) > one
    assert epsilon([], 1e-5) == 0.0
    assert math.isinf(Release(0.0, 1.0, 1.0).rdp()[0])


@pytest.mark.parametrize("target", [1.0, 2.0, 8.0])
def test_a_plan_spends_the_budget_and_no_more(target: float) -> None:
    kinds = [Kind(1682, 1, 0.1), Kind(2700, 2, 0.9)]
    noise = plan_noise(target, 1e-5, kinds, 1.0, 24, 943, 0.9)
    survivors = math.ceil(943 * 0.9)
    releases = []
    for kind, z in zip(kinds, noise, strict=True):
        enc = Skellam.for_round(kind.dim, 1.0, 24, 943, z, 0.9)
        releases += [Release.of(enc, survivors)] * kind.releases
    spent = epsilon(releases, 1e-5)
    assert 0.995 * target <= spent <= target
    # The shares split ρ: the selection's one release gets a ninth of the two fits'.
    assert noise[0] > noise[1]
    with pytest.raises(ValueError, match="share"):
        plan_noise(8, 1e-5, [Kind(10, 1, 0.0)], 1.0, 24, 10)
