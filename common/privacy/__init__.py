"""Privacy modes, each one named thing: what a device's replies hold, what the server learns,
the guarantee in one sentence, and the settings the mode accepts.

Every module of this package that defines ``MODE`` is a mode; :data:`MODES` is found by
looking, so a new mode is one new module here (plus its device side in
``fedrec.client.privacy`` and its server side in ``fedrec.server.privacy`` when it needs
new code). :func:`check_settings` refuses, by name, a setting that belongs to another mode
and one the mode cannot honour; :mod:`fedrec.common.settings` calls it on every run.

A mode's ``layers`` are the device-side transforms and server-side wrappers it is built
from, applied in order (``decoy+dp`` is ``decoy`` then ``dp``); ``runner`` names how the
server runs the rounds: ``fedrec`` (the sparse :class:`~fedrec.server.strategy.FedRec`
strategy, wrapped by the layers) or a secure-sum runner.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

# What a reply of each kind holds, field by field: ``record.key`` for fedrec's own records;
# ``secagg+`` for the SecAgg+ stage replies (keys, shares, and the masked vector).
TRAIN_FIELDS = ("update.ids", "update.rows", "update.bias", "update.counts",
                "metrics.train-loss", "metrics.num-examples")
RATING_FIELDS = ("metrics.sq-err", "metrics.abs-err", "metrics.num-examples")
RANKING_FIELDS = ("metrics.num-users", "metrics.hr@10", "metrics.ndcg@10",
                  "metrics.recall@10", "metrics.precision@10")
QUERY_FIELDS = ("metrics.rated", "metrics.rating-mean")
SECURE_SUM = ("secagg+",)


@dataclass(frozen=True)
class Replies:
    """The fields of each kind of reply a device sends in the mode (``()``: it sends none
    of that kind). ``evaluate`` lists both kinds of evaluation (ratings, ranking)."""

    train: tuple[str, ...]
    evaluate: tuple[str, ...]
    query: tuple[str, ...]


@dataclass(frozen=True)
class Mode:
    """One privacy mode."""

    name: str
    guarantee: str  # one sentence
    server_learns: str  # what the server learns, in plain words
    replies: Replies
    settings: tuple[str, ...] = ()  # RunSettings fields of this mode (others' are refused)
    unsupported: tuple[str, ...] = ()  # common settings the mode cannot honour
    layers: tuple[str, ...] = ()  # device transforms / server wrappers, in order
    runner: str = "fedrec"  # fedrec | secagg | secagg+dp
    check: Callable[[Any], None] | None = None  # the mode's own constraints
    example: tuple[tuple[str, Any], ...] = ()  # its own settings for a small run (tests)

    @property
    def noised(self) -> bool:
        """Its replies or sums carry differential-privacy noise."""
        return "dp" in self.layers or self.runner == "secagg+dp"

    @property
    def padded(self) -> bool:
        """Every train reply names the same number of rows (decoys)."""
        return "decoy" in self.layers


# The imbalance segments of a simulation's ranking evaluation (common.segments).
SEGMENT_FIELDS = ("metrics.segment", "metrics.recs", "metrics.tail-recs", "metrics.tail-test",
                  "metrics.tail-hits")
# What every reply of the sparse modes holds (plain and its layers); the modes that do not
# pad replies also report segments (a padded one hides how active a device is).
SPARSE_REPLIES = Replies(TRAIN_FIELDS, RATING_FIELDS + RANKING_FIELDS, QUERY_FIELDS)
SEGMENTED_REPLIES = Replies(TRAIN_FIELDS, RATING_FIELDS + RANKING_FIELDS + SEGMENT_FIELDS,
                            QUERY_FIELDS)


def _discover() -> dict[str, Mode]:
    found: dict[str, Mode] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        mode = getattr(module, "MODE", None)
        if isinstance(mode, Mode):
            if mode.name in found:
                raise RuntimeError(f"two privacy modes named {mode.name!r}")
            found[mode.name] = mode
    return found


MODES: dict[str, Mode] = _discover()
NAMES = tuple(sorted(MODES, key=lambda n: (n != "plain", n)))


def mode(name: str) -> Mode:
    """The mode called ``name``."""
    try:
        return MODES[name]
    except KeyError:
        raise ValueError(f"privacy must be one of {', '.join(NAMES)}. Found {name!r}.") from None


def _kebab(name: str) -> str:
    return name.replace("_", "-")


def owned_settings() -> dict[str, tuple[str, ...]]:
    """Each mode-specific setting and the modes it belongs to."""
    owners: dict[str, list[str]] = {}
    for m in MODES.values():
        for name in m.settings:
            owners.setdefault(name, []).append(m.name)
    return {k: tuple(v) for k, v in owners.items()}


def check_settings(settings: Any) -> Mode:
    """The run's mode, once every setting agrees with it: another mode's setting, or one
    the mode cannot honour, left at anything but its default is refused by name."""
    m = mode(settings.privacy)
    defaults = {f.name: f.default for f in fields(settings)}
    for name, owners in owned_settings().items():
        if name not in m.settings and getattr(settings, name) != defaults[name]:
            raise ValueError(f"{_kebab(name)} applies to privacy={' or '.join(owners)}; this "
                             f"run is privacy={m.name}")
    for name in m.unsupported:
        if getattr(settings, name) != defaults[name]:
            raise ValueError(f"{_kebab(name)} is not supported with privacy={m.name}")
    if m.check is not None:
        m.check(settings)
    return m


def for_mode(settings: Any, name: str, **own: Any) -> Any:
    """``settings`` for a run in mode ``name`` with the mode's ``own`` settings: those the
    mode does not take (other modes' own, and those it cannot honour) back at their
    defaults."""
    from dataclasses import replace

    target = mode(name)
    defaults = {f.name: f.default for f in fields(settings)}
    reset = {n: defaults[n] for n in owned_settings() if n not in target.settings}
    reset.update({n: defaults[n] for n in target.unsupported})
    return replace(settings, privacy=name, **{**reset, **own})
