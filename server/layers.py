"""The server side of each privacy layer of the sparse modes, as wrappers the
:class:`~fedrec.server.strategy.FedRec` strategy calls at fixed points (in Flower's style,
where differential privacy wraps a strategy rather than being a flag inside it). A mode's
layers (:attr:`fedrec.common.privacy.Mode.layers`) are built by :func:`build_layers`, in
the mode's order; a defence can plug in the same way.

The points: what a layer adds to each round's config and to the table devices are sent;
how it widens the reply norm bound; whether it allows another round; its check on every
accepted update; what it keeps from each update folded and from the round's fold; what
it adds to the round's summary; what it needs saved in a checkpoint to resume.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from logging import WARNING

import numpy as np
from flwr.common.logger import log

from fedrec.common.privacy import plain
from fedrec.common.ranking import HEAD_KEY, check_bonus, pack_head
from fedrec.common.schema import InvalidReplyError, ItemUpdate
from fedrec.common.segments import head_of
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

    def fold(self, update: ItemUpdate) -> None:
        """One accepted update, as the round folds it (after the defences)."""

    def after_fold(self, devices: np.ndarray) -> None:
        """``devices``: how many accepted devices named each item this round."""

    def summary(self) -> dict[str, float]:
        return {}

    def state(self) -> dict[str, int]:
        return {}

    def arrays(self) -> dict[str, np.ndarray]:
        """State arrays a checkpoint keeps under the layer's name (``run["arrays"]``)."""
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


class HeadLayer(ServerLayer):
    """The head devices rank the tail against (:mod:`fedrec.common.ranking`): per item, how
    many accepted devices asked for it to score higher (their update raised its bias: on
    implicit feedback, the devices it is a positive of; a sampled negative lowers it),
    round by round, each earlier round's counts weighing ``DECAY`` times less so that the
    head follows what is popular now; the most counted ``HEAD_SHARE`` of the catalogue
    goes with the table as a bitmap, and the round config tells devices the bonus. A
    device adds at most one to an item's count a round. Only in the plain mode, where the
    server sees each reply's rows and their moves anyway: devices learn one aggregate
    list, not counts."""

    name = "head"
    DECAY = 0.99  # a round's counts weigh 0.99 as much after each later round

    def __init__(self, bonus: float, n_items: int) -> None:
        self.bonus = check_bonus(bonus)
        self.counts = np.zeros(n_items, dtype=np.float64)
        self._round = np.zeros(n_items, dtype=np.float64)  # this round's, as it folds
        self._sent: dict[str, np.ndarray] = {}  # the head's bitmap, drawn up once a round

    def round_config(self) -> dict[str, int | float | str]:
        return {"tail-bonus": self.bonus}

    def table_arrays(self) -> dict[str, np.ndarray]:
        return self._sent

    def head(self) -> np.ndarray:
        """The head as a mask over the items counted (all False before any count)."""
        return head_of(self.counts) if self.counts.any() else np.zeros(len(self.counts), bool)

    def _draw_up(self) -> None:
        head = self.head()
        self._sent = {HEAD_KEY: pack_head(head)} if head.any() else {}

    def fold(self, update: ItemUpdate) -> None:
        raised = update.ids[update.bias < 0]  # (an update is old minus new: raised < 0)
        if len(raised) and raised.max() >= len(self._round):  # (a catalogue that grew)
            self._round = np.concatenate([self._round,
                                          np.zeros(raised.max() + 1 - len(self._round))])
        self._round[raised] += 1

    def after_fold(self, devices: np.ndarray) -> None:
        n = max(len(devices), len(self._round), len(self.counts))
        self.counts = np.concatenate([self.counts, np.zeros(n - len(self.counts))])
        self.counts *= self.DECAY
        self.counts[:len(self._round)] += self._round
        self._round = np.zeros(n)
        self._draw_up()

    def arrays(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts.copy()}

    def load(self, state: dict) -> None:
        saved = state.get("arrays", {}).get(self.name)
        if saved is None:
            return  # (a checkpoint from before the layer: the head is counted anew)
        counts = saved.get("counts")
        if not isinstance(counts, np.ndarray) or counts.dtype != np.float64 \
                or counts.ndim != 1 or len(counts) > len(self.counts) \
                or not np.isfinite(counts).all() or (counts < 0).any():
            raise ValueError(f"run.arrays.head.counts must be finite float64 counts >= 0, "
                             f"one per item of the {len(self.counts)}")
        self.counts[:len(counts)] = counts
        self._draw_up()


# layer name → its factory from (settings, the catalogue's size)
FACTORIES: dict[str, Callable[..., ServerLayer]] = {
    "dp": lambda s, n_items: DpLayer(DpSettings(s.dp_clip, s.dp_noise, s.dp_delta,
                                                s.dp_epsilon or None), s.fraction_train),
    "decoy": lambda s, n_items: DecoyLayer(min(s.decoy_rows or n_items, n_items)),
}


def build_layers(settings: object, n_items: int) -> list[ServerLayer]:
    """The layers of the run's mode, in its order; then, for implicit feedback in the plain
    mode with a tail bonus, the head layer (the other modes hide or pad the rows a reply
    moves, and rank by the model's own order)."""
    mode = settings.mode  # type: ignore[attr-defined]
    unknown = [name for name in mode.layers if name not in FACTORIES]
    if unknown:
        raise ValueError(f"privacy={mode.name}: no server layer {', '.join(unknown)}")
    layers = [FACTORIES[name](settings, n_items) for name in mode.layers]
    bonus = getattr(settings, "tail_bonus", 0.0)
    if bonus and mode is plain.MODE and not settings.explicit:  # type: ignore[attr-defined]
        layers.append(HeadLayer(bonus, n_items))
    return layers
