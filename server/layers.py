"""The server side of each privacy layer of the sparse modes, as wrappers the
:class:`~fedrec.server.strategy.FedRec` strategy calls at fixed points (in Flower's style,
where differential privacy wraps a strategy rather than being a flag inside it). A mode's
layers (:attr:`fedrec.common.privacy.Mode.layers`) are built by :func:`build_layers`, in
the mode's order; a defence can plug in the same way.

The points: what a layer adds to each round's config and to the table devices are sent;
how it widens the reply norm bound; whether it allows another round; its check on every
accepted update; what it keeps from the round's fold; what it adds to the round's summary;
what it needs saved in a checkpoint to resume.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from logging import WARNING

import numpy as np
from flwr.common.logger import log

from fedrec.common.schema import InvalidReplyError, ItemUpdate
from fedrec.server.accountant import Accountant


class ServerLayer:
    """A layer that changes nothing; each layer overrides the points it uses."""

    name = "layer"

    def round_config(self) -> dict[str, int | float | str]:
        return {}

    def table_arrays(self) -> dict[str, np.ndarray]:
        return {}

    def norm_bound(self, max_norm: float, n_factors: int) -> float:
        return max_norm

    def allows_round(self, server_round: int) -> bool:
        return True

    def check(self, update: ItemUpdate) -> None:
        """Raise :class:`InvalidReplyError` to refuse an update."""

    def after_fold(self, devices: np.ndarray) -> None:
        """``devices``: how many accepted devices named each item this round."""

    def summary(self) -> dict[str, float]:
        return {}

    def state(self) -> dict[str, int]:
        return {}

    def load(self, state: dict) -> None:
        pass


@dataclass(frozen=True)
class DpSettings:
    """The ``dp`` layer: clip bound, noise multiplier, δ, and the ε cap (None: no cap)."""

    clip: float
    noise: float
    delta: float
    epsilon_cap: float | None = None


class DpLayer(ServerLayer):
    """Devices clip and noise their whole update; the server tells them how, widens the
    norm bound for the noise, and accounts ε over the rounds run (skipping one that would
    exceed the cap)."""

    name = "dp"

    def __init__(self, dp: DpSettings, sampling: float) -> None:
        self.dp = dp
        self.accountant = Accountant(sampling, dp.noise, dp.delta, dp.epsilon_cap)
        self.rounds = 0  # rounds run (what ε is accounted over)

    def round_config(self) -> dict[str, int | float | str]:
        return {"dp-clip": float(self.dp.clip), "dp-noise": float(self.dp.noise)}

    def norm_bound(self, max_norm: float, n_factors: int) -> float:
        # Noised rows are legitimately long: the clipped signal plus noise of std σC in
        # k + 1 coordinates (bounded here with 6 standard deviations of headroom).
        d = self.dp
        return max(max_norm, d.clip + d.noise * d.clip * (np.sqrt(n_factors + 1) + 6))

    @property
    def epsilon(self) -> float:
        return self.accountant.epsilon(self.rounds)

    def allows_round(self, server_round: int) -> bool:
        if not self.accountant.allows(self.rounds + 1):
            log(WARNING, "round %s skipped: another round would exceed the privacy budget "
                "(epsilon %.3f of %.3f spent)", server_round, self.epsilon,
                self.accountant.cap)
            return False
        self.rounds += 1
        return True

    def summary(self) -> dict[str, float]:
        return {"epsilon": self.epsilon}

    def state(self) -> dict[str, int]:
        return {"dp-rounds": self.rounds}

    def load(self, state: dict) -> None:
        self.rounds = int(state.get("dp-rounds", 0))


class DecoyLayer(ServerLayer):
    """Every reply must name exactly ``rows`` rows; devices draw decoys in proportion to how
    many devices named each item last round, which the server sends with the table."""

    name = "decoy"

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.named: np.ndarray | None = None

    def round_config(self) -> dict[str, int | float | str]:
        return {"decoy-rows": int(self.rows)}

    def table_arrays(self) -> dict[str, np.ndarray]:
        return {} if self.named is None else {"named": self.named}

    def check(self, update: ItemUpdate) -> None:
        if len(update.ids) != self.rows:
            raise InvalidReplyError("decoy-rows", f"{len(update.ids)} rows where the decoy "
                                    f"mode asks {self.rows}")

    def after_fold(self, devices: np.ndarray) -> None:
        self.named = devices.astype(np.float32)


# layer name → its factory from (settings, the catalogue's size)
FACTORIES: dict[str, Callable[..., ServerLayer]] = {
    "dp": lambda s, n_items: DpLayer(DpSettings(s.dp_clip, s.dp_noise, s.dp_delta,
                                                s.dp_epsilon or None), s.fraction_train),
    "decoy": lambda s, n_items: DecoyLayer(min(s.decoy_rows or n_items, n_items)),
}


def build_layers(settings: object, n_items: int) -> list[ServerLayer]:
    """The layers of the run's mode, in its order."""
    mode = settings.mode  # type: ignore[attr-defined]
    unknown = [name for name in mode.layers if name not in FACTORIES]
    if unknown:
        raise ValueError(f"privacy={mode.name}: no server layer {', '.join(unknown)}")
    return [FACTORIES[name](settings, n_items) for name in mode.layers]
