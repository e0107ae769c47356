"""The privacy loss of a run in ``dp`` mode, with Google's ``dp-accounting`` (RDP).

Each round samples every device with probability ``q`` (the round's fraction of devices)
and runs the Gaussian mechanism with noise multiplier ``σ`` on each sampled device's
clipped update: a Poisson-sampled Gaussian event, composed over rounds. ``epsilon(rounds)``
is the ε at the run's δ; ``allows(rounds)`` tells whether one more round stays within the
budget cap.
"""

from __future__ import annotations

import dp_accounting
from dp_accounting import rdp

# Integer orders (and a few above): fractional ones make the RDP computation warn and are
# rarely the tightest for the noise levels used here.
ORDERS = [*range(2, 64), 80, 96, 128, 192, 256, 512]


class Accountant:
    """ε after a number of rounds for fixed (q, σ, δ)."""

    def __init__(self, sampling: float, noise_multiplier: float, delta: float,
                 epsilon_cap: float | None = None) -> None:
        if not 0 < sampling <= 1:
            raise ValueError(f"sampling must be in (0, 1]. Found {sampling}.")
        if not noise_multiplier > 0:
            raise ValueError(f"dp needs noise: noise_multiplier > 0. Found {noise_multiplier}.")
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1). Found {delta}.")
        self.sampling, self.noise, self.delta = sampling, noise_multiplier, delta
        self.cap = epsilon_cap if epsilon_cap else None
        self._cache: dict[int, float] = {}

    def epsilon(self, rounds: int) -> float:
        if rounds <= 0:
            return 0.0
        if rounds not in self._cache:
            event = dp_accounting.SelfComposedDpEvent(
                dp_accounting.PoissonSampledDpEvent(
                    self.sampling, dp_accounting.GaussianDpEvent(self.noise)), rounds)
            accountant = rdp.RdpAccountant(ORDERS)
            accountant.compose(event)
            self._cache[rounds] = float(accountant.get_epsilon(self.delta))
        return self._cache[rounds]

    def allows(self, rounds: int) -> bool:
        """Whether ``rounds`` rounds in total stay within the cap (always, without one)."""
        return self.cap is None or self.epsilon(rounds) <= self.cap


def calibrate_noise(target_epsilon: float, sampling: float, rounds: int, delta: float,
                    low: float = 0.3, high: float = 200.0, tol: float = 1e-3) -> float:
    """The smallest noise multiplier whose ε after ``rounds`` rounds is at most
    ``target_epsilon`` (bisection; ε falls as the noise grows)."""
    if not target_epsilon > 0:
        raise ValueError(f"target epsilon must be > 0. Found {target_epsilon}.")

    def eps(sigma: float) -> float:
        return Accountant(sampling, sigma, delta).epsilon(rounds)

    if eps(high) > target_epsilon:
        raise ValueError(f"epsilon {target_epsilon} is out of reach within noise {high} "
                         f"for {rounds} rounds at sampling {sampling}")
    if eps(low) <= target_epsilon:
        return low
    while high - low > tol * low:
        mid = (low + high) / 2
        low, high = (low, mid) if eps(mid) <= target_epsilon else (mid, high)
    return high
