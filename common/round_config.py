"""What a device is told each round, beside its :class:`~fedrec.common.schema.TrainConfig`:
one typed schema for every key any server of fedrec puts in a round's config.

Devices parse the keys strictly (:meth:`RoundConfig.parse`): an unknown key, or a value of
the wrong type, is refused by name, so a server cannot send what no device reads and a
device never guesses. Each key belongs to the kind of round that sends it: every round
(``privacy``, ``mean``, ``seed``, ``server-round``, the rating scale), a mode's layers
(``decoy-rows``, ``dp-clip``, ``dp-noise``; the plain mode's head, ``tail-bonus``), the
ranking's ``similarity`` (implicit runs of every mode but secagg+dp), a
timeline replay's tick (``until`` …), the secagg mode (``secagg-*``) and the secagg+dp
mode (``ddp-*``); an evaluation round may carry the imbalance segments (``segment-*``,
:mod:`fedrec.common.segments`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

from fedrec.common.ranking import check_bonus, check_similarity
from fedrec.common.segments import CONFIG_KEYS as SEGMENT_KEYS
from fedrec.common.segments import Segments

# key → (field, type, what it is)
KEYS: dict[str, tuple[str, type, str]] = {
    "privacy": ("privacy", str, "the run's privacy mode (fedrec.common.privacy)"),
    "mean": ("mean", float, "μ, the global mean rating the model predicts around"),
    "seed": ("seed", int, "the run's seed (simulated devices derive theirs from it)"),
    "server-round": ("server_round", int, "the round's number, counted over the whole run"),
    "rating-min": ("rating_min", float, "the lowest rating of the scale"),
    "rating-max": ("rating_max", float, "the highest rating of the scale"),
    "negative-pool-seed": ("negative_pool_seed", int,
                           "the round's public negative pool (common.negatives), by its seed"),
    "evaluate-on": ("evaluate_on", str, "an evaluation round: 'test' (the default) or "
                    "'validation' (the devices' held-out slice, early stopping's)"),
    "tail-bonus": ("tail_bonus", float, "ranking: the bonus for items outside the head "
                   "the table carries (common.ranking)"),
    "similarity": ("similarity", float, "ranking: the weight of an item's likeness to the "
                   "user's items (common.ranking)"),
    "decoy-rows": ("decoy_rows", int, "decoy: the rows every train reply names"),
    "dp-clip": ("dp_clip", float, "dp: the L2 bound of the whole update"),
    "dp-noise": ("dp_noise", float, "dp: the noise multiplier (std = dp-noise · dp-clip)"),
    "until": ("until", int, "replay: the tick's end; events before it have arrived"),
    "stream-mode": ("stream_mode", str, "replay: what a device trains on (client.stream)"),
    "buffer": ("buffer", int, "replay: events an incremental device keeps"),
    "replay": ("replay", float, "replay: older events replayed per new one"),
    "new-days": ("new_days", float, "replay: days a listing counts as new"),
    "neighbours-version": ("neighbours_version", int, "replay: the neighbours table's "
                           "version (common.neighbours), sent only to devices without it"),
    "secagg-weighting": ("secagg_weighting", str, "secagg: the fold's weighting"),
    "secagg-cap": ("secagg_cap", float, "secagg: the capped weighting's cap"),
    "secagg-query": ("secagg_query", str, "secagg: 'mean' for the μ query's rounds"),
    "secagg-block-start": ("secagg_block_start", int, "secagg: the round's block's first row"),
    "secagg-block-size": ("secagg_block_size", int,
                          "secagg: rows in the round's block (the sum covers only them)"),
    "ddp-stage": ("ddp_stage", str, "secagg+dp: 'select' (the row choice) or 'fit'"),
    "ddp-dim": ("ddp_dim", int, "secagg+dp: values in the round's vector"),
    "ddp-clip": ("ddp_clip", float, "secagg+dp: the vector's L2 norm"),
    "ddp-scale": ("ddp_scale", float, "secagg+dp: the integer a real value 1 becomes"),
    "ddp-bits": ("ddp_bits", int, "secagg+dp: the sum is taken modulo 2**bits"),
    "ddp-mu": ("ddp_mu", float, "secagg+dp: the device's Skellam parameter"),
    "ddp-user-reg": ("ddp_user_reg", float, "secagg+dp: L2 on the user vector's solve"),
    "ddp-ratings": ("ddp_ratings", int, "secagg+dp: 1 for a rating model"),
    "ddp-sketch-items": ("ddp_sketch_items", int,
                         "secagg+dp: the row choice counts a catalogue this large in a sketch"),
    "ddp-sketch-width": ("ddp_sketch_width", int, "secagg+dp: buckets per row of that sketch"),
}


UNBOUNDED = ("rating-min", "rating-max")
# What an evaluation round scores: the held-out test rows, or the validation slice devices
# hold out of training for early stopping (common.partition.UserRows.holding_out).
EVALUATE_ON = ("test", "validation")


@dataclass(frozen=True)
class RoundConfig:
    """A round's keys, typed; absent ones are None (``privacy`` is ``plain``)."""

    privacy: str = "plain"
    mean: float | None = None
    seed: int | None = None
    server_round: int | None = None
    rating_min: float | None = None
    rating_max: float | None = None
    negative_pool_seed: int | None = None
    evaluate_on: str | None = None
    tail_bonus: float | None = None
    similarity: float | None = None
    decoy_rows: int | None = None
    dp_clip: float | None = None
    dp_noise: float | None = None
    until: int | None = None
    stream_mode: str | None = None
    buffer: int | None = None
    replay: float | None = None
    new_days: float | None = None
    neighbours_version: int | None = None
    secagg_weighting: str | None = None
    secagg_cap: float | None = None
    secagg_query: str | None = None
    secagg_block_start: int | None = None
    secagg_block_size: int | None = None
    ddp_stage: str | None = None
    ddp_dim: int | None = None
    ddp_clip: float | None = None
    ddp_scale: float | None = None
    ddp_bits: int | None = None
    ddp_mu: float | None = None
    ddp_user_reg: float | None = None
    ddp_ratings: int | None = None
    ddp_sketch_items: int | None = None
    ddp_sketch_width: int | None = None
    segments: Segments | None = None  # (the segment-* keys, checked together)

    def __post_init__(self) -> None:
        if self.tail_bonus is not None:
            check_bonus(self.tail_bonus, "round config: 'tail-bonus'")
        if self.similarity is not None:
            check_similarity(self.similarity, "round config: 'similarity'")
        if self.evaluate_on not in (None, *EVALUATE_ON):
            raise ValueError(f"round config: 'evaluate-on' must be one of "
                             f"{', '.join(EVALUATE_ON)}, found {self.evaluate_on!r}")

    @classmethod
    def parse(cls, extra: Mapping) -> RoundConfig:
        """The round's keys (what is left of a config once the TrainConfig's are taken),
        each checked: unknown keys and wrong types are refused by name."""
        values: dict = {"segments": Segments.from_config(extra)}
        for key, value in extra.items():
            if key in SEGMENT_KEYS:
                continue
            if key not in KEYS:
                raise ValueError(f"round config: unknown key {key!r}")
            name, kind, _ = KEYS[key]
            values[name] = _typed(key, value, kind)
        return cls(**values)

    def to_dict(self) -> dict[str, int | float | str]:
        """The keys that are set, as a config record holds them."""
        by_field = {name: key for key, (name, _, _) in KEYS.items()}
        out = {by_field[f.name]: getattr(self, f.name) for f in fields(self)
               if f.name in by_field and getattr(self, f.name) is not None}
        return {**out, **(self.segments.to_config() if self.segments is not None else {})}

    @property
    def rating_range(self) -> tuple[float, float]:
        low = -math.inf if self.rating_min is None else self.rating_min
        high = math.inf if self.rating_max is None else self.rating_max
        return low, high

    def need(self, name: str) -> int | float | str:
        """A key this kind of round must carry."""
        value = getattr(self, name)
        if value is None:
            key = next(k for k, (n, _, _) in KEYS.items() if n == name)
            raise ValueError(f"round config: this round needs {key!r}")
        return value


def _typed(key: str, value: object, kind: type) -> int | float | str:
    if kind is str:
        if isinstance(value, str):
            return value
    elif isinstance(value, bool):
        pass
    elif kind is int and isinstance(value, int):
        return value
    elif kind is float and isinstance(value, int | float):
        number = float(value)
        # Only the scale's ends may be unbounded (a model with no rating scale).
        if math.isnan(number) or (math.isinf(number) and key not in UNBOUNDED):
            raise ValueError(f"round config: {key!r} must be finite, found {value!r}")
        return number
    raise ValueError(f"round config: {key!r} must be {kind.__name__}, found "
                     f"{type(value).__name__} {value!r}")
