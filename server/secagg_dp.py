"""The ``secagg+dp`` privacy mode: user-level (ε, δ) differential privacy over secure
aggregation. The server sees one thing per round: a sum of every device's integer vector,
each already carrying its share of Skellam noise (:mod:`fedrec.common.ddp`), unmasked by
Flower's SecAgg+.

The rounds (:mod:`fedrec.common.als` has the statistics):

1. **select** (when the row set is smaller than the catalogue): each device adds its
   positives, scaled to one norm; the noisy popularity picks the row set, the ``ddp-rows``
   most popular items. The choice is private (it is computed from a DP release) and public
   from then on.
2. **fit**, ``num-rounds`` times: each device solves its user vector against the table it
   was sent and adds its Gram matrix and its user vector on the rows of its positives in
   the row set; the server solves those rows exactly (one alternating-least-squares step)
   from the noisy sums, shrinking rows whose sum is no longer than its noise.

Privacy accounting (:meth:`SecAggDpFedRec.epsilon`): every release the server has seen,
with the noise that its devices really added (a device that dropped out after masking left
its share out), composed in Rényi DP and converted at δ. The budget is planned before round
1 (:func:`~fedrec.common.ddp.plan_noise`) and a round that would exceed it is not run.

What the server checks: no single reply exists for it to check. Each value of a sum must be
one an honest round can produce (within the devices' total norm plus ten noise standard
deviations), and the Gram matrix's diagonal, a sum of squares, must not be negative beyond
the noise; a value outside refuses its row (a Gram matrix outside refuses the round),
counted as ``secagg-sum:range``. These catch sums that wrapped around the modulus. They do
not bound one device: without input validation (range proofs inside secure aggregation) a
device can add to each value as much as every honest device together.

Nothing else leaves a device in this mode: no metrics, no counts, no evaluation replies.
Quality is measured by the simulation that holds the held-out data.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from logging import INFO, WARNING

import numpy as np
from flwr.app import Context
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.logger import log
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    factor_combine,
    factor_extract,
    parameters_addition,
    parameters_mod,
    parameters_multiply,
)
from flwr.common.secure_aggregation.quantization import dequantize, quantize
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.default_workflows import default_fit_workflow
from flwr.serverapp import Grid

from fedrec.common import als
from fedrec.common.ddp import FIT, SELECT, Kind, Release, Skellam, epsilon, plan_noise
from fedrec.common.sketch import Sketch
from fedrec.server.aggregate import Aggregate
from fedrec.server.item_model import ItemModel
from fedrec.server.secagg import legacy_context

MIN_DEVICES = 2
RIDGE_DEVICES = 1000  # implicit models: ddp-item-reg is the item ridge per this many devices


@dataclass(frozen=True)
class DdpConfig:
    """The mode's settings: the budget, the learner, and the integer encoding."""

    epsilon: float
    delta: float = 1e-5
    rounds: int = 2  # fit rounds
    rows: int = 300  # the row set's size (the catalogue if larger)
    select_share: float = 0.1  # of the budget, for choosing the row set
    clip: float = 1.0
    bits: int = 24
    provisioned: float = 0.9  # the share of a round's devices whose noise is counted on
    user_reg: float = 1.0
    item_reg: float = 3.0  # implicit: per RIDGE_DEVICES devices of a round; ratings: per row
    ratings: bool = False  # a rating model (per-row Gram matrices, μ from the first round)
    rating_range: tuple[float, float] = (1.0, 5.0)
    # The row choice sends one value per item up to this many items; a larger catalogue is
    # counted in a sketch of this many values (fedrec.common.sketch).
    select_values: int = 20_000

    def __post_init__(self) -> None:
        if not self.epsilon > 0:
            raise ValueError(f"secagg+dp needs dp-epsilon > 0. Found {self.epsilon}.")
        if self.rounds < 1 or self.rows < 1 or self.select_values < 3:
            raise ValueError("secagg+dp needs num-rounds >= 1, ddp-rows >= 1 and "
                             "ddp-select-values >= 3")
        if not 0 < self.select_share < 1 or not 0 < self.provisioned <= 1:
            raise ValueError("ddp-select-share must be in (0, 1) and ddp-provisioned in "
                             "(0, 1]")
        if not self.user_reg > 0 or not self.item_reg > 0:
            raise ValueError("ddp-user-reg and ddp-item-reg must be > 0")


def encoding_config(enc: Skellam) -> dict[str, Scalar]:
    """What a device needs of a round's encoding (sent in the round's config)."""
    return {"ddp-dim": enc.dim, "ddp-clip": float(enc.clip), "ddp-scale": float(enc.scale),
            "ddp-bits": enc.bits, "ddp-mu": float(enc.device_mu)}


def from_sum(aggregate: list[np.ndarray], devices: int, enc: Skellam) -> np.ndarray:
    """The integer sum modulo ``m`` from what SecAgg+ hands the strategy.

    The ClientApp sends ``m·(z − m/2)`` with weight 1 against ``max_weight = m``: SecAgg+
    scales it by ``1/m`` (exact: a power of two) and its quantisation (clipping range m/2,
    quantisation range m) is then the identity on ``z``; each device's weight factor is 1,
    so the factors' sum (the number of devices) never wraps modulo 2**32. The strategy gets
    ``(Σz mod 2**32 − n·m/2) · m/n``."""
    if len(aggregate) != 1:
        raise ValueError(f"a secagg+dp sum has one array; found {len(aggregate)}")
    mean = np.asarray(aggregate[0], dtype=np.float64).ravel()
    if mean.shape != (enc.dim,):
        raise ValueError(f"a secagg+dp sum has {enc.dim} values; found {mean.size}")
    if not np.isfinite(mean).all():
        raise ValueError("a secagg+dp sum has non-finite values")
    m = enc.modulus
    total = np.rint(mean * (devices / m) + devices * (m / 2))
    return np.mod(total.astype(np.int64), m)


class SecAggDpFedRec(Strategy):
    """fedrec's item model behind Flower's legacy strategy interface, for SecAgg+ with
    distributed DP."""

    def __init__(self, model: ItemModel, config: DdpConfig, *, fraction_train: float = 1.0,
                 min_available_nodes: int = MIN_DEVICES, seed: int = 0) -> None:
        self.model, self.config, self.seed = model, config, seed
        self.fraction_train = fraction_train
        self.min_available_nodes = max(MIN_DEVICES, min_available_nodes)
        n = model.n_items
        # A first round chooses the row set when it is smaller than the catalogue, and
        # learns μ for a rating model; without one the row set is the catalogue.
        self.selecting = config.rows < n or config.ratings
        self.layout: als.Layout | als.RatingLayout | None = (
            None if self.selecting else self._layout(np.arange(n)))
        self.releases: list[Release] = []
        self.encodings: list[Skellam] = []  # each release's encoding, in order
        self.noise: dict[str, float] | None = None  # noise multiplier per kind, once planned
        self.encoding: Skellam | None = None  # this round's
        self.stage: str | None = None
        self.history: list[dict] = []
        self.rejected: Counter[str] = Counter()
        self.fit_rounds = 0

    def __repr__(self) -> str:
        return f"SecAggDpFedRec(epsilon={self.config.epsilon})"

    @property
    def epsilon(self) -> float:
        """ε spent so far at the run's δ, over every release the server has seen."""
        return epsilon(self.releases, self.config.delta)

    # ---- planning ----------------------------------------------------------------------
    def _layout(self, rows: np.ndarray) -> als.Layout | als.RatingLayout:
        k = self.model.params.n_factors
        return als.RatingLayout(k, rows) if self.config.ratings else als.Layout(k, rows)

    @property
    def choosing_rows(self) -> bool:
        return self.config.rows < self.model.n_items

    @property
    def sketch(self) -> Sketch | None:
        """The row choice's count sketch, when the catalogue is too large for one value per
        item (its hashes fixed by the run's seed)."""
        n = self.model.n_items
        if not self.choosing_rows or n <= self.config.select_values:
            return None
        return Sketch.of_values(n, self.config.select_values, self.seed)

    def _dims(self) -> dict[str, int]:
        n = self.model.n_items
        sketch = self.sketch
        counts = 0 if not self.choosing_rows else sketch.dim if sketch else n
        select = (2 if self.config.ratings else 0) + counts
        return {SELECT: select, FIT: self._layout(np.arange(min(self.config.rows, n))).dim}

    def plan(self, devices: int) -> dict[str, float]:
        """The noise multipliers for a run whose rounds have ``devices`` devices."""
        c, dims = self.config, self._dims()
        kinds = {FIT: Kind(dims[FIT], c.rounds, 1.0 - c.select_share)}
        if self.selecting:
            kinds[SELECT] = Kind(dims[SELECT], 1, c.select_share)
        else:  # the row set is the catalogue: the whole budget goes to the fits
            kinds[FIT] = Kind(dims[FIT], c.rounds, 1.0)
        noise = plan_noise(c.epsilon, c.delta, list(kinds.values()), c.clip, c.bits,
                           devices, c.provisioned)
        return dict(zip(kinds, noise, strict=True))

    # ---- what goes out -----------------------------------------------------------------
    def _parameters(self) -> Parameters:
        return ndarrays_to_parameters([self.model.params.factors, self.model.params.bias])

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return self._parameters()

    def configure_fit(self, server_round: int, parameters: Parameters,
                      client_manager: ClientManager) -> list[tuple[ClientProxy, FitIns]]:
        stage = SELECT if self.layout is None else FIT
        if stage == FIT and self.fit_rounds >= self.config.rounds:
            return []
        available = client_manager.num_available()
        n = max(int(available * self.fraction_train), MIN_DEVICES)
        clients = client_manager.sample(num_clients=n, min_num_clients=self.min_available_nodes)
        if self.noise is None:
            self.noise = self.plan(len(clients))
            log(INFO, "secagg+dp: epsilon %.3g at delta %.3g, noise multipliers %s",
                self.config.epsilon, self.config.delta,
                {k: round(v, 4) for k, v in self.noise.items()})
        dim = self._dims()[stage]
        enc = Skellam.for_round(dim, self.config.clip, self.config.bits, len(clients),
                                self.noise[stage], self.config.provisioned)
        worst = Release.of(enc, math.ceil(len(clients) * self.config.provisioned))
        if epsilon([*self.releases, worst], self.config.delta) > self.config.epsilon * 1.0001:
            log(WARNING, "round %s not run: it would exceed the privacy budget (epsilon "
                "%.3f of %.3f spent)", server_round, self.epsilon, self.config.epsilon)
            return []
        self.stage, self.encoding = stage, enc
        config = {**encoding_config(enc), "privacy": "secagg+dp", "ddp-stage": stage,
                  "seed": self.seed, "server-round": server_round,
                  "ddp-user-reg": self.config.user_reg,
                  "ddp-ratings": int(self.config.ratings)}
        if self.config.ratings:
            low, high = self.config.rating_range
            config.update({"mean": float(self.model.params.mean), "rating-min": float(low),
                           "rating-max": float(high)})
        sketch = self.sketch
        if stage == SELECT and sketch is not None:
            config.update({"ddp-sketch-items": sketch.n_items,
                           "ddp-sketch-width": sketch.width})
        arrays = ([] if stage == SELECT else
                  [self.model.params.factors, self.model.params.bias, self.layout.rows])
        ins = FitIns(ndarrays_to_parameters(arrays), config)
        return [(client, ins) for client in clients]

    def configure_evaluate(self, server_round: int, parameters: Parameters,
                           client_manager: ClientManager
                           ) -> list[tuple[ClientProxy, EvaluateIns]]:
        return []  # nothing leaves a device outside the noisy sums

    # ---- what comes back ---------------------------------------------------------------
    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                      failures: list) -> tuple[Parameters | None, dict[str, Scalar]]:
        enc, stage = self.encoding, self.stage
        self.encoding = self.stage = None
        if enc is None or not results:
            log(WARNING, "round %s: no secure sum (%s failures)", server_round, len(failures))
            return None, {}
        n = len(results)
        self.releases.append(Release.of(enc, n))  # what the server now holds
        self.encodings.append(enc)
        try:
            total = enc.decode(from_sum(parameters_to_ndarrays(results[0][1].parameters),
                                        n, enc))
        except ValueError as exc:
            self.rejected["secagg-sum:shape"] += 1
            log(WARNING, "round %s: refused the secure sum (%s)", server_round, exc)
            return None, {}
        limit = n * enc.clip + 10 * enc.noise_std(n) + n / enc.scale  # |any honest value|
        summary: dict[str, Scalar] = {"accepted": float(n), "failed": float(len(failures)),
                                      "epsilon": self.epsilon, "stage": stage}
        if stage == SELECT:
            summary.update(self._select(total, limit))
        else:
            summary.update(self._fit(total, n, enc, limit, server_round))
        self.history.append({"round": server_round, "train": summary})
        log(INFO, "round %s (%s): secure sum of %s devices, epsilon %.3f", server_round,
            stage, n, self.epsilon)
        return self._parameters(), summary

    def _select(self, total: np.ndarray, limit: float) -> dict[str, Scalar]:
        """The first round's sum: μ (rating model) and the row set."""
        out: dict[str, Scalar] = {}
        if self.config.ratings:
            self.model.params.mean = als.read_mean(total[:2], self.config.rating_range)
            out["mean"] = float(self.model.params.mean)
            total = total[2:]
        rows = np.arange(self.model.n_items)
        if self.choosing_rows:
            bad = np.abs(total) > limit
            self.rejected["secagg-sum:range"] += int(bad.sum())
            sketch = self.sketch
            if sketch is None:
                scores = np.where(bad, -np.inf, total)
            else:  # a value no honest sum reaches counts for nothing in the median
                scores = sketch.estimate(np.where(bad, 0.0, total))
            rows = als.top_rows(scores, self.config.rows)
            # Rows outside the set are never solved: no random start left to score.
            outside = np.setdiff1d(np.arange(self.model.n_items), rows)
            self.model.params.factors[outside] = 0.0
        self.layout = self._layout(rows)
        out["rows-selected"] = float(len(rows))
        return out

    def _fit(self, total: np.ndarray, n: int, enc: Skellam, limit: float,
             server_round: int) -> dict[str, Scalar]:
        self.fit_rounds += 1
        layout = self.layout
        slack = 10 * enc.noise_std(n) + n / enc.scale  # noise and rounding
        if isinstance(layout, als.RatingLayout):
            grams, sums = als.rating_read(total, layout)
            diag = np.diagonal(grams, axis1=1, axis2=2)
            ok = ((np.abs(grams).max(axis=(1, 2)) <= limit) & (diag.min(axis=1) >= -slack)
                  & (np.abs(sums).max(axis=1) <= limit))
            self.rejected["secagg-sum:range"] += int((~ok).sum())
            rows, bias = als.rating_solve(grams[ok], sums[ok], self.config.item_reg,
                                          enc.noise_std(n) ** 2)
            return self._set_rows(layout.rows[ok], rows, bias)
        gram, sums = als.read(total, layout)
        if np.abs(gram).max() > limit or np.diag(gram).min() < -slack:
            self.rejected["secagg-sum:range"] += 1
            log(WARNING, "round %s: refused the secure sum (its Gram matrix is out of "
                "range)", server_round)
            return {"rows-updated": 0.0}
        ok = np.abs(sums).max(axis=1) <= limit
        self.rejected["secagg-sum:range"] += int((~ok).sum())
        # G and B grow with the round's devices: a ridge that grows with them too keeps
        # the solve (and a preset) the same for a shop of any size.
        rows, bias = als.solve(gram, sums[ok], self.config.item_reg * n / RIDGE_DEVICES,
                               enc.noise_std(n) ** 2)
        return self._set_rows(layout.rows[ok], rows, bias)

    def _set_rows(self, ids: np.ndarray, rows: np.ndarray, bias: np.ndarray
                  ) -> dict[str, Scalar]:
        p = self.model.params
        # The step rule is SGD with rate 1: the "gradient" old − new sets the rows.
        agg = Aggregate(ids, p.factors[ids] - rows.astype(np.float32),
                        p.bias[ids] - bias.astype(np.float32),
                        np.ones(len(ids)), np.ones(len(ids)))
        applied = self.model.apply(agg, self.model.round + 1)
        return {"rows-updated": float(len(ids)) if applied else 0.0}

    def aggregate_evaluate(self, server_round: int,
                           results: list[tuple[ClientProxy, EvaluateRes]],
                           failures: list) -> tuple[float | None, dict[str, Scalar]]:
        return None, {}

    def evaluate(self, server_round: int, parameters: Parameters
                 ) -> tuple[float, dict[str, Scalar]] | None:
        return None


def ddp_workflow(config: DdpConfig, num_shares: float, threshold: float,
                 timeout: float | None) -> SecAggPlusWorkflow:
    """Flower's SecAgg+ set so that it carries the devices' integers unchanged
    (:func:`from_sum`): ``max_weight`` m, clipping range m/2, quantisation range m
    (``m = 2**bits``), sums modulo 2**32 (a multiple of m)."""
    m = 1 << config.bits
    shares: int | float = int(num_shares) if num_shares > 1 else float(num_shares)
    return SecAggPlusWorkflow(num_shares=shares, reconstruction_threshold=float(threshold),
                              max_weight=float(m), clipping_range=m / 2,
                              quantization_range=m, modulus_range=MODULUS, timeout=timeout)


MODULUS = 1 << 32  # SecAgg+'s modulus


def secagg_equivalent(vectors: Iterable[list[np.ndarray]], max_weight: float,
                      clipping_range: float, quantization_range: int,
                      modulus_range: int = MODULUS) -> list[np.ndarray]:
    """What SecAgg+ hands the strategy for these devices' inputs (each of weight 1): the
    same scaling, quantisation, modular sum and dequantisation as ``secaggplus_mod`` and
    ``SecAggPlusWorkflow``, without the masks (they cancel modulo ``modulus_range``).
    ``vectors`` may be a generator: one device's vector is held at a time."""
    q_ratio = round(1.0 / max_weight * quantization_range)
    dq_ratio = q_ratio / quantization_range
    total: list[np.ndarray] | None = None
    count = 0
    for vector in vectors:
        count += 1
        arrays = parameters_multiply([np.asarray(a) for a in vector], dq_ratio)
        quantized = factor_combine(q_ratio, quantize(arrays, clipping_range,
                                                     quantization_range))
        quantized = [np.asarray(a).astype(np.int64) for a in quantized]
        total = quantized if total is None else parameters_addition(total, quantized)
    if total is None:
        raise ValueError("no vectors to sum")
    total = parameters_mod(total, modulus_range)
    q_total, recon = factor_extract(total)
    inverse = quantization_range / q_total
    out = dequantize(recon, clipping_range, quantization_range)
    offset = -(count - 1) * clipping_range
    for vec in out:
        vec += offset
        vec *= inverse
    return out


class ClearSum(Strategy):
    """A strategy whose fit results are replaced, before ``inner`` sees them, by exactly
    what SecAgg+ would have unmasked for them (:func:`secagg_equivalent`): for
    simulations too large for real SecAgg+ on one machine. The server then sees every
    device's noisy integer vector; only simulations use it, and say so."""

    def __init__(self, inner: SecAggDpFedRec) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return self.inner.initialize_parameters(client_manager)

    def configure_fit(self, server_round: int, parameters: Parameters,
                      client_manager: ClientManager) -> list[tuple[ClientProxy, FitIns]]:
        return self.inner.configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                      failures: list) -> tuple[Parameters | None, dict[str, Scalar]]:
        if results:
            m = 1 << self.inner.config.bits
            summed = ndarrays_to_parameters(secagg_equivalent(
                (parameters_to_ndarrays(res.parameters) for _, res in results), float(m),
                m / 2, m))
            for _, res in results:
                res.parameters = summed
        return self.inner.aggregate_fit(server_round, results, failures)

    def configure_evaluate(self, server_round: int, parameters: Parameters,
                           client_manager: ClientManager
                           ) -> list[tuple[ClientProxy, EvaluateIns]]:
        return self.inner.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(self, server_round: int,
                           results: list[tuple[ClientProxy, EvaluateRes]],
                           failures: list) -> tuple[float | None, dict[str, Scalar]]:
        return self.inner.aggregate_evaluate(server_round, results, failures)

    def evaluate(self, server_round: int, parameters: Parameters
                 ) -> tuple[float, dict[str, Scalar]] | None:
        return self.inner.evaluate(server_round, parameters)


def run_secagg_dp(grid: Grid, strategy: SecAggDpFedRec, num_shares: float, threshold: float,
                  timeout: float, context: Context | None = None, seed: int = 0,
                  clear: bool = False) -> SecAggDpFedRec:
    """The whole run on ``grid``: the selection round (when there is one) and the fit
    rounds, through SecAgg+ (or, ``clear``, its arithmetic without the masks)."""
    rounds = strategy.config.rounds + (1 if strategy.layout is None else 0)
    legacy = legacy_context(grid, ClearSum(strategy) if clear else strategy, rounds, timeout,
                     context, seed)
    fit = (default_fit_workflow if clear
           else ddp_workflow(strategy.config, num_shares, threshold, timeout))
    DefaultWorkflow(fit_workflow=fit)(grid, legacy)
    return strategy
