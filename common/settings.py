"""A run's settings: one typed object behind Flower's run config (kebab-case keys).

The ServerApp, the ClientApp and the ``fedrec simulate`` command all read the same keys, with
the same defaults, through :meth:`RunSettings.from_run_config`; ``pyproject.toml`` declares
them under ``[tool.flwr.app.config]`` (a test keeps the two in step).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from fedrec.common import models, privacy
from fedrec.common.defences import DEFAULT
from fedrec.common.losses import for_feedback
from fedrec.common.optim import DEFAULT_HALVING, MAX_LR, STEP_RULES, check_halving
from fedrec.common.ranking import (
    DEFAULT_BONUS,
    DEFAULT_SIMILARITY,
    check_bonus,
    check_similarity,
)
from fedrec.common.schema import TrainConfig
from fedrec.common.split import PROTOCOLS, is_explicit
from fedrec.common.weighting import check_weighting


@dataclass(frozen=True)
class RunSettings:
    """Everything a federated run is configured by."""

    dataset: str = "synthetic"
    protocol: str = "implicit-80-20"
    fold: int = 0
    data_dir: str = ""
    validation: bool = False  # train and evaluate on the validation split (no test events)
    num_rounds: int = 20  # 0: until stopped (a deployed server, plain or decoy)
    round_every: float = 0.0  # seconds from one round's start to the next (0: back to back)
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    min_nodes: int = 1
    evaluate_every: int = 5
    round_timeout: float = 600.0
    factors: int = 32
    # Local training: the defaults are TrainConfig's (one place for each).
    optimizer: str = TrainConfig.optimizer
    local_epochs: int = TrainConfig.local_epochs
    lr: float = TrainConfig.lr
    reg: float = TrainConfig.reg
    reg_bias: float = TrainConfig.reg_bias
    batch_size: int = TrainConfig.batch_size
    negatives: int = TrainConfig.negatives
    init_std: float = TrainConfig.init_std
    user_steps: int = TrainConfig.user_steps
    user_lr: float = TrainConfig.user_lr
    negative_pool: float = TrainConfig.negative_pool  # share of the catalogue (1: all)
    negative_pool_rounds: int = 1  # rounds that draw from one pool
    negative_weight: float = TrainConfig.negative_weight  # a sampled negative's loss weight
    # How devices rank (fedrec.common.ranking): scores standardised, plus ``similarity``
    # times the standardised likeness of an item to the user's items (implicit runs of
    # every mode but secagg+dp), then ``tail_bonus`` for items outside the head the
    # server counts and sends (plain mode). 0 and 0: the model's own order.
    similarity: float = DEFAULT_SIMILARITY
    tail_bonus: float = DEFAULT_BONUS
    # Early stopping (fedrec.server.stopping): evaluations without a better validation
    # figure before the run stops and keeps its best table; 0: off (every round runs).
    stop_patience: int = 0
    server_optimizer: str = "adam"
    server_lr: float = 0.01
    # The item biases' own server step rule and step ("" and 0: the factors' rule and step).
    server_bias_optimizer: str = ""
    server_bias_lr: float = 0.0
    # The `count` step rule's: a row's step halves once this many devices' moves were
    # folded into it (common.optim.Count).
    server_step_halving: float = DEFAULT_HALVING
    weighting: str = "uniform"
    cap: float = 10.0
    max_norm: float = 10.0
    seed: int = 0
    results_dir: str = ""
    checkpoint: str = ""  # SQLite file the server saves its model to after every round
    checkpoint_key_file: str = ""  # the operator's key: the checkpoint is MACed and checked
    checkpoint_fresh: bool = False  # start over whatever the checkpoint holds (kept aside)
    sync: str = "full"  # how devices get the item table: full, or delta (changed rows only)
    sync_threshold: float = 0.0  # delta: publish a row once it drifted this much (relative)
    privacy: str = "plain"
    decoy_rows: int = 0  # decoy: rows in every reply; 0 = the whole catalogue
    secagg_shares: float = 5.0  # secagg: key shares per device (odd); <= 1: a fraction of devices
    secagg_threshold: float = 0.5  # secagg: the fraction of shares that rebuild a key
    secagg_bucket: int = 16  # secagg: devices per secure sum of the mean query (μ)
    secagg_rows: int = 0  # secagg: rows per round's sum, a rotating public block (0: all)
    dp_clip: float = 0.5
    dp_noise: float = 1.0
    dp_delta: float = 1e-5
    dp_epsilon: float = 0.0  # the budget cap on ε; 0 = no cap (ε is still reported)
    ddp_rows: int = 300  # secagg+dp: the row set's size (items whose rows a round solves)
    ddp_select_share: float = 0.1  # secagg+dp: the budget's share for choosing the row set
    ddp_bits: int = 24  # secagg+dp: the devices' integers are summed modulo 2**bits
    ddp_provisioned: float = 0.9  # secagg+dp: the share of a round's devices counted on
    ddp_user_reg: float = 1.0  # secagg+dp: L2 on the user vector in the device's solve
    ddp_item_reg: float = 3.0  # secagg+dp: L2 on the item rows in the server's solve
    ddp_select_values: int = 20_000  # secagg+dp: the row choice's values (a sketch beyond)
    defences: str = DEFAULT  # the server's poisoning defences, in order ("off": none)
    # A shop's catalogue file (fedrec.common.catalogue): the server's items, their SKUs and
    # categories, watched while it runs; the dataset then names no catalogue.
    catalogue: str = ""
    rating_min: float = 1.0  # with a catalogue, explicit feedback: the rating scale
    rating_max: float = 5.0
    model: str = models.DEFAULT_MODEL  # the federated model (fedrec.common.models)
    pairs_cap: int = 200  # pairs: the distinct items a device counts at most (its latest)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}. "
                             f"Found {self.protocol!r}.")
        for name in ("evaluate_every", "factors", "min_nodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1. Found {getattr(self, name)}.")
        if self.num_rounds < 0:
            raise ValueError(f"num_rounds must be >= 1, or 0 (until stopped). Found "
                             f"{self.num_rounds}.")
        if not self.num_rounds and (self.mode.runner != "fedrec" or self.mode.noised):
            raise ValueError(f"num-rounds=0 (until stopped) needs a mode without a round "
                             f"budget; privacy={self.privacy} plans its rounds")
        if not (math.isfinite(self.round_every) and 0 <= self.round_every <= 30 * 86400):
            raise ValueError(f"round_every must be seconds in [0, 30 days]. Found "
                             f"{self.round_every}.")
        for name in ("fraction_train", "fraction_evaluate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1]. Found {getattr(self, name)}.")
        check_weighting(self.weighting)
        if self.server_optimizer not in STEP_RULES:
            raise ValueError(f"server_optimizer must be one of {', '.join(STEP_RULES)}. "
                             f"Found {self.server_optimizer!r}.")
        if self.server_bias_optimizer not in ("", *STEP_RULES):
            raise ValueError(f"server_bias_optimizer must be one of {', '.join(STEP_RULES)}, "
                             f"or empty (the factors' rule). Found "
                             f"{self.server_bias_optimizer!r}.")
        if not (math.isfinite(self.server_bias_lr) and 0 <= self.server_bias_lr < MAX_LR):
            raise ValueError(f"server_bias_lr must be in (0, {MAX_LR:g}), or 0 (the factors' "
                             f"step). Found {self.server_bias_lr}.")
        try:
            check_halving(self.server_step_halving)
        except ValueError as exc:
            raise ValueError(f"server_step_halving: {exc}") from None
        if "count" in (self.server_optimizer, self.server_bias_step[0]):
            if self.weighting != "sum":
                raise ValueError(f"the count step rule steps a row by the number of devices' "
                                 f"moves summed into it: it needs weighting=sum. Found "
                                 f"weighting={self.weighting}.")
            if self.mode.runner != "fedrec":
                raise ValueError(f"the count step rule counts each device's first move on a "
                                 f"row; privacy={self.privacy}'s secure sum hides which "
                                 "device moved which row")
            if self.mode.padded:
                raise ValueError(f"the count step rule counts the devices that moved a row; "
                                 f"privacy={self.privacy} pads replies with decoy rows, which "
                                 "the server cannot tell apart")
        if not 0 < self.server_lr < MAX_LR:
            raise ValueError(f"server_lr must be > 0 and below {MAX_LR:g} (what a checkpoint "
                             f"holds). Found {self.server_lr}.")
        for name in ("cap", "max_norm", "round_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0. Found {getattr(self, name)}.")
        if self.fold < 0:
            raise ValueError(f"fold must be >= 0. Found {self.fold}.")
        if self.sync not in ("full", "delta"):
            raise ValueError(f"sync must be full or delta. Found {self.sync!r}.")
        if not self.sync_threshold >= 0 or (self.sync_threshold and self.sync != "delta"):
            raise ValueError("sync-threshold must be >= 0, and applies to sync=delta only")
        if self.negative_pool_rounds < 1:
            raise ValueError(f"negative_pool_rounds must be >= 1. Found "
                             f"{self.negative_pool_rounds}.")
        if self.stop_patience < 0:
            raise ValueError(f"stop_patience must be >= 0. Found {self.stop_patience}.")
        if self.stop_patience and not self.num_rounds:
            raise ValueError("stop-patience needs a number of rounds (num-rounds=0 runs "
                             "until stopped)")
        check_bonus(self.tail_bonus, "tail_bonus")
        check_similarity(self.similarity, "similarity")
        if self.decoy_rows < 0:
            raise ValueError(f"decoy_rows must be >= 0. Found {self.decoy_rows}.")
        if not (math.isfinite(self.rating_min) and math.isfinite(self.rating_max)
                and self.rating_min < self.rating_max):
            raise ValueError(f"rating-min must be below rating-max, both finite. Found "
                             f"{self.rating_min}, {self.rating_max}.")
        if self.catalogue and self.mode.runner != "fedrec":
            raise ValueError(f"catalogue applies to the sparse modes; privacy={self.privacy} "
                             "runs over a fixed catalogue")
        models.check_settings(self)
        self.train_config()  # validates the local-training fields
        privacy.check_settings(self)  # the mode, and every setting agreeing with it

    @property
    def mode(self) -> privacy.Mode:
        """The run's privacy mode (:mod:`fedrec.common.privacy`)."""
        return privacy.mode(self.privacy)

    @property
    def ranked_similarity(self) -> float:
        """The similarity weight devices are told (:mod:`fedrec.common.ranking`): the
        run's, or 0 for ratings, which are not ranked."""
        return 0.0 if self.explicit else self.similarity

    @property
    def explicit(self) -> bool:
        return is_explicit(self.protocol)

    @property
    def server_bias_step(self) -> tuple[str, float]:
        """The item biases' server step rule and step: their own, or else the factors'."""
        return (self.server_bias_optimizer or self.server_optimizer,
                self.server_bias_lr or self.server_lr)

    def train_config(self) -> TrainConfig:
        return TrainConfig(loss=for_feedback(self.explicit).name, optimizer=self.optimizer,
                           local_epochs=self.local_epochs, lr=self.lr, reg=self.reg,
                           reg_bias=self.reg_bias, batch_size=self.batch_size,
                           negatives=self.negatives, init_std=self.init_std,
                           user_steps=self.user_steps, user_lr=self.user_lr,
                           negative_pool=self.negative_pool,
                           negative_weight=self.negative_weight,
                           validation_events=1 if self.stop_patience else 0)

    def to_run_config(self) -> dict[str, int | float | str]:
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}

    @classmethod
    def parse_value(cls, key: str, value: object) -> object:
        """One kebab-case run-config value, typed as its field (unknown keys refused)."""
        name = key.replace("-", "_")
        if name not in cls.__dataclass_fields__:
            raise ValueError(f"unknown run-config keys: {key}")
        return _parse(key, value, type(cls.__dataclass_fields__[name].default))

    @classmethod
    def from_run_config(cls, config: dict) -> RunSettings:
        """Read kebab-case run-config keys; unknown keys are refused by name."""
        known = {f.name.replace("_", "-"): f for f in fields(cls)}
        unknown = sorted(set(config) - set(known))
        if unknown:
            raise ValueError(f"unknown run-config keys: {', '.join(unknown)}")
        values = {}
        for key, value in config.items():
            f = known[key]
            kind = type(cls.__dataclass_fields__[f.name].default)
            values[f.name] = _parse(key, value, kind)
        return cls(**values)


_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _parse(key: str, value: object, kind: type) -> object:
    """A run-config value as the field's type, strictly: ``"false"`` is False, a number
    is finite, a whole number is whole; anything else names the key."""
    def bad(expected: str) -> ValueError:
        return ValueError(f"run-config key {key!r}: expected {expected}, found {value!r}")

    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise bad("true or false")
    if kind is str:
        if isinstance(value, bool | int | float | str):
            return str(value)
        raise bad("a string")
    if isinstance(value, bool):
        raise bad("a number")
    try:
        number = float(value) if not isinstance(value, int) else value
    except (TypeError, ValueError, OverflowError):
        raise bad("a number") from None
    if not math.isfinite(number):
        raise bad("a finite number")
    if kind is int:
        if number != int(number):
            raise bad("a whole number")
        return int(number)
    return float(number)
