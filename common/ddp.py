"""Distributed differential privacy: integer noise each device adds before secure
aggregation, so that the sum the server unmasks carries exactly the noise central DP needs.

The Skellam mechanism (Agarwal, Kairouz, Liu, NeurIPS 2021). Each device of a round:

1. scales its real vector ``x`` (L2 norm at most ``clip``) by ``scale`` and rounds it to
   integers at random, unbiased, redrawn until the rounded vector's norm is within
   :attr:`Skellam.sensitivity` (*conditional* rounding: the bound then holds for every
   output, so it is a sensitivity, not a likely value);
2. adds its share of the noise: ``Poisson(μ_d) − Poisson(μ_d)`` per value. A sum of
   Skellam variables is Skellam, so the sum over the ``n`` devices of the round carries
   ``Sk(n·μ_d)``, and each device adds ``μ / provisioned`` for a total ``μ``;
3. reduces it modulo ``m = 2**bits``: secure aggregation sums modulo ``m`` and the server
   reads the sum back as a centred integer (:func:`decode`), exact while the true sum lies
   within ``±m/2``. :meth:`Skellam.for_round` picks ``scale`` so that no honest round can
   wrap: ``devices · scale · clip`` plus ten noise standard deviations fits in ``m/2``.

The privacy loss of one release (``Sk(μ)`` on a vector of L2 sensitivity ``Δ2`` and L1
sensitivity ``Δ1 ≤ min(√D·Δ2, Δ2²)``) is the Rényi DP of their Theorem 3.5::

    ε(α) = α·Δ2² / (4μ) + min(((2α − 1)·Δ2² + 6·Δ1) / (16μ²), 3·Δ1 / (4μ))

Releases compose by adding RDP curves; ε at δ comes from ``dp-accounting``'s conversion
(:func:`epsilon`). A device that drops out after masking leaves its share out: the noise
actually in a sum is what its devices added (:meth:`Release.of`), and the accounting uses
that, not the plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from dp_accounting.rdp import rdp_privacy_accountant

ORDERS = (1.25, 1.5, 1.75, *range(2, 64), 80, 96, 128, 192, 256, 512)
MAX_BITS = 30  # Flower's SecAgg+ quantises into int32 and sums modulo 2**32
ROUNDING_TRIES = 100
HEADROOM_STDS = 10.0  # noise standard deviations kept free below m/2
# The two kinds of secagg+dp round (the ``ddp-stage`` a device is told): choosing the row
# set (and μ for ratings), and fitting its rows.
SELECT, FIT = "select", "fit"


@dataclass(frozen=True)
class Skellam:
    """One release's encoding: the vector's size and norm bound, the integer scale, the
    modulus, and the noise each device adds."""

    dim: int  # D, values in the vector
    clip: float  # L2 bound of the real vector
    scale: float  # γ: real value 1 is integer γ
    bits: int  # the sum is taken modulo 2**bits
    device_mu: float  # each device's Skellam parameter (its noise has variance 2·device_mu)

    def __post_init__(self) -> None:
        if self.dim < 1 or not self.clip > 0 or not self.scale > 0:
            raise ValueError(f"Skellam needs dim >= 1, clip > 0, scale > 0. Found "
                             f"{self.dim}, {self.clip}, {self.scale}.")
        if not 2 <= self.bits <= MAX_BITS:
            raise ValueError(f"bits must be in [2, {MAX_BITS}]. Found {self.bits}.")
        if not self.device_mu >= 0:
            raise ValueError(f"device_mu must be >= 0. Found {self.device_mu}.")

    @property
    def modulus(self) -> int:
        return 1 << self.bits

    @property
    def sensitivity(self) -> float:
        """Δ2: the L2 bound every rounded vector meets (Kairouz et al.'s bound for
        conditional rounding, with β = e^{-1/2}: most draws pass at once)."""
        g = self.scale * self.clip
        return math.sqrt(g * g + self.dim / 4 + math.sqrt(2 * 0.5) * (g + math.sqrt(self.dim) / 2))

    @property
    def l1_sensitivity(self) -> float:
        """Δ1 ≤ min(√D·Δ2, Δ2²) (integers: |v| ≤ v²)."""
        d2 = self.sensitivity
        return min(math.sqrt(self.dim) * d2, d2 * d2)

    @classmethod
    def for_round(cls, dim: int, clip: float, bits: int, devices: int, noise: float,
                  provisioned: float = 1.0) -> Skellam:
        """The encoding of a round of ``devices`` devices whose *sum* carries noise of
        standard deviation ``noise · Δ2`` (``noise`` is the noise multiplier) while at
        least ``provisioned`` of them (a fraction) finish: the scale is the largest whose
        worst honest sum, with ten standard deviations of noise, stays within ``±m/2``."""
        if devices < 1 or not 0 < provisioned <= 1 or noise < 0:
            raise ValueError(f"a round needs devices >= 1, provisioned in (0, 1] and "
                             f"noise >= 0. Found {devices}, {provisioned}, {noise}.")
        half = (1 << bits) / 2
        # Σ|z_j| over devices ≤ devices·(γ·clip + 1), and the noise's std is noise·Δ2.
        scale = (half - devices - 1) / (clip * (devices + HEADROOM_STDS * noise + 1))
        while scale > 0:
            probe = cls(dim, clip, scale, bits, 0.0)
            worst = devices * (scale * clip + 1) + HEADROOM_STDS * noise * probe.sensitivity
            if worst < half:
                break
            scale *= 0.95
        if scale * clip < 1:
            raise ValueError(f"{bits} bits cannot hold the sum of {devices} devices at "
                             f"noise {noise}")
        mu = (noise * probe.sensitivity) ** 2 / 2  # Sk(μ) has variance 2μ
        return cls(dim, clip, scale, bits, mu / max(1.0, devices * provisioned))

    # ---- device side -------------------------------------------------------------------
    def encode(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The device's integers modulo ``m`` (int64 in ``[0, m)``) for the real vector
        ``x``: clipped to ``clip`` (a longer vector is scaled down), conditionally rounded,
        its noise share added."""
        x = np.asarray(x, dtype=np.float64).ravel()
        if len(x) != self.dim:
            raise ValueError(f"the vector has {len(x)} values; the release has {self.dim}")
        if not np.isfinite(x).all():
            raise ValueError("the vector has non-finite values")
        norm = float(np.linalg.norm(x))
        if norm > self.clip:
            x = x * (self.clip / norm)
        z = self.round(x * self.scale, rng)
        if self.device_mu > 0:
            z = z + rng.poisson(self.device_mu, self.dim) - rng.poisson(self.device_mu, self.dim)
        return np.mod(z, self.modulus).astype(np.int64)

    def round(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Unbiased random rounding of ``y`` (norm ≤ γ·clip), redrawn until the result
        is within :attr:`sensitivity`."""
        bound = self.sensitivity ** 2
        low = np.floor(y)
        frac = y - low
        for _ in range(ROUNDING_TRIES):
            z = low + (rng.random(len(y)) < frac)
            if float(z @ z) <= bound:
                return z.astype(np.int64)
        # (Practically unreachable: each draw passes with probability ≥ 1 − e^{-1/2}·…)
        raise FloatingPointError(f"no rounding within the norm bound in {ROUNDING_TRIES} draws")

    # ---- server side -------------------------------------------------------------------
    def decode(self, total: np.ndarray) -> np.ndarray:
        """The real sum from the integer sum modulo ``m``: centred into ``[−m/2, m/2)``,
        divided by the scale."""
        t = np.mod(np.asarray(total, dtype=np.int64), self.modulus)
        centred = np.where(t >= self.modulus // 2, t - self.modulus, t)
        return centred.astype(np.float64) / self.scale

    def noise_std(self, devices: int) -> float:
        """The standard deviation of the noise in the decoded sum of ``devices`` devices
        (the DP noise alone; rounding adds at most ``√devices / 2`` integers)."""
        return math.sqrt(2 * self.device_mu * devices) / self.scale


@dataclass(frozen=True)
class Release:
    """One noisy sum the server saw: its total Skellam parameter and sensitivities."""

    mu: float
    l2: float
    l1: float

    @classmethod
    def of(cls, enc: Skellam, devices: int) -> Release:
        """The release of a sum to which ``devices`` devices added their noise."""
        return cls(enc.device_mu * devices, enc.sensitivity, enc.l1_sensitivity)

    def rdp(self, orders: tuple[float, ...] = ORDERS) -> np.ndarray:
        """The Skellam mechanism's Rényi DP at each order (Agarwal et al., Thm 3.5)."""
        a = np.asarray(orders, dtype=np.float64)
        if self.mu <= 0:
            return np.full(len(a), np.inf)
        d2, d1, mu = self.l2 ** 2, self.l1, self.mu
        return a * d2 / (4 * mu) + np.minimum(((2 * a - 1) * d2 + 6 * d1) / (16 * mu * mu),
                                              3 * d1 / (4 * mu))


def epsilon(releases: list[Release], delta: float, orders: tuple[float, ...] = ORDERS
            ) -> float:
    """ε at ``delta`` after every release in ``releases`` (RDP composed, converted by
    ``dp-accounting``)."""
    if not releases:
        return 0.0
    total = np.sum([r.rdp(orders) for r in releases], axis=0)
    eps, _ = rdp_privacy_accountant.compute_epsilon(list(orders), total, delta)
    return float(eps)


def gaussian_epsilon(noise: float, releases: int, delta: float) -> float:
    """ε of ``releases`` Gaussian releases at noise multiplier ``noise`` (what the Skellam
    releases approach as μ grows; used to calibrate)."""
    if releases <= 0:
        return 0.0
    rdp = np.array([releases * a / (2 * noise * noise) for a in ORDERS])
    eps, _ = rdp_privacy_accountant.compute_epsilon(list(ORDERS), rdp, delta)
    return float(eps)


@dataclass(frozen=True)
class Kind:
    """A kind of release a run plans: its vector size, how many, and its share of the
    budget (in zCDP terms: of ρ)."""

    dim: int
    releases: int
    share: float


def plan_noise(target: float, delta: float, kinds: list[Kind], clip: float, bits: int,
               devices: int, provisioned: float = 1.0) -> list[float]:
    """Noise multipliers, one per kind, that split the budget by the kinds' shares and
    whose Skellam releases (each of ``devices`` devices, the provisioned share finishing)
    compose to at most ``target`` ε at ``delta``: each kind's releases get ρ·share/releases
    (a Gaussian release of multiplier z costs ρ = 1/(2z²)), ρ the largest that fits."""
    if not target > 0 or not 0 < delta < 1:
        raise ValueError(f"a plan needs epsilon > 0 and delta in (0, 1). Found {target}, "
                         f"{delta}.")
    kinds = [k for k in kinds if k.releases > 0]
    if not kinds or any(not k.share > 0 for k in kinds):
        raise ValueError("a plan needs at least one kind of release, each with share > 0")
    survivors = max(1, math.ceil(devices * provisioned))

    def noises(rho: float) -> list[float]:
        return [math.sqrt(k.releases / (2 * rho * k.share)) for k in kinds]

    def eps(rho: float) -> float:
        releases = []
        for k, z in zip(kinds, noises(rho), strict=True):
            enc = Skellam.for_round(k.dim, clip, bits, devices, z, provisioned)
            releases += [Release.of(enc, survivors)] * k.releases
        return epsilon(releases, delta)

    low, high = 1e-6, 100.0
    if eps(low) > target:
        raise ValueError(f"epsilon {target} is out of reach for this plan")
    while high - low > 1e-4 * low:
        mid = (low + high) / 2
        low, high = (mid, high) if eps(mid) <= target else (low, mid)
    return noises(low)
