"""secagg+dp's implicit learner over a whole population at once, for choosing its settings
on populations the Flower simulation takes hours for.

The server side is the real one: a :class:`~fedrec.server.secagg_dp.SecAggDpFedRec` plans
the noise, encodes each round, reads the row choice and solves the rows. Only the devices
are replaced: every sampled device's vector (:func:`fedrec.common.als.user_solve`, then
:func:`~fedrec.common.als.contribution` or the row choice's popularity vector) is summed in
one vectorised step, and the noise the devices' Skellam shares would add is drawn once as a
Gaussian of the same variance (the sum of many Skellam shares is that close to Gaussian).
What it leaves out: conditional rounding (an error of at most ``√n / 2`` integers, next to
noise thousands of times larger), wrap-around (the encoding rules it out for honest
sums) and Flower's own sampling stream (devices are drawn with numpy's). A test checks it
against the Flower simulation on a small shop.

Use it to tune (``fedrec bench tune-ddp --fast``); report figures from the real runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedrec.common.ddp import SELECT, Release, Skellam
from fedrec.common.metrics import top_k
from fedrec.common.params import ItemParams
from fedrec.common.partition import Partitions, simulated_partitions
from fedrec.common.settings import RunSettings
from fedrec.server.app import ddp_strategy
from fedrec.server.secagg_dp import SecAggDpFedRec

CHUNK = 4096  # users scored at once


@dataclass(frozen=True)
class Positives:
    """Every user's unique items of one side of a split, as CSR arrays."""

    offsets: np.ndarray  # (n_users + 1,)
    items: np.ndarray

    @classmethod
    def of(cls, parts: Partitions, side: str = "train") -> Positives:
        rows = getattr(parts.split, side)
        pairs = np.unique(np.stack([rows.user.astype(np.int64), rows.item.astype(np.int64)]),
                          axis=1)
        counts = np.bincount(pairs[0], minlength=parts.n_users)
        return cls(np.concatenate([[0], np.cumsum(counts)]), pairs[1])

    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def of_users(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The (position in ``users``, item) pairs of those users."""
        starts, ends = self.offsets[users], self.offsets[users + 1]
        lengths = ends - starts
        owner = np.repeat(np.arange(len(users)), lengths)
        at = np.repeat(starts - np.cumsum(np.concatenate([[0], lengths[:-1]])), lengths)
        return owner, self.items[np.arange(len(owner)) + at]


def _user_vectors(factors: np.ndarray, bias: np.ndarray, owner: np.ndarray,
                  items: np.ndarray, n: int, reg: float) -> np.ndarray:
    """Each user's :func:`~fedrec.common.als.user_solve`, all at once."""
    q = factors.astype(np.float64)
    k = q.shape[1]
    rhs = np.zeros((n, k))
    np.add.at(rhs, owner, q[items])
    rhs -= q.T @ bias.astype(np.float64)
    return np.linalg.solve(q.T @ q + reg * np.eye(k), rhs.T).T


def _fit_total(strategy: SecAggDpFedRec, owner: np.ndarray, items: np.ndarray, n: int,
               reg: float, clip: float) -> np.ndarray:
    """Σ over the round's devices of :func:`~fedrec.common.als.contribution`."""
    p = strategy.model.params
    layout = strategy.layout
    user = np.hstack([_user_vectors(p.factors, p.bias, owner, items, n, reg),
                      np.ones((n, 1))])
    slot = np.searchsorted(layout.rows, items)
    inside = (slot < len(layout.rows)) & (layout.rows[np.minimum(slot, len(layout.rows) - 1)]
                                          == items)
    m = np.bincount(owner[inside], minlength=n)
    sq = np.einsum("ij,ij->i", user, user)
    c = clip / np.sqrt(sq * sq + m * sq)  # each device's vector at norm clip
    weighted = user * c[:, None]
    iu = np.triu_indices(layout.d)
    w = np.where(iu[0] == iu[1], 1.0, np.sqrt(2.0))
    gram = (weighted.T @ user)[iu] * w
    sums = np.zeros((len(layout.rows), layout.d))
    np.add.at(sums, slot[inside], weighted[owner[inside]])
    return np.concatenate([gram, sums.ravel()])


def _select_total(strategy: SecAggDpFedRec, owner: np.ndarray, items: np.ndarray, n: int,
                  clip: float, dim: int) -> np.ndarray:
    """Σ over the round's devices of their row-choice vectors (one value per item, or
    the round's count sketch)."""
    m = np.bincount(owner, minlength=n).astype(np.float64)
    value = clip / np.sqrt(np.maximum(m[owner], 1.0))
    sketch = strategy.sketch
    if sketch is None:
        return np.bincount(items, weights=value, minlength=dim)[:dim]
    bucket, sign = sketch.hashes(items)
    total = np.zeros(sketch.dim)
    flat = owner[:, None] * sketch.dim + bucket.T  # (pairs, depth)
    per_device = np.bincount(flat.ravel(), weights=(sign.T * value[:, None]).ravel(),
                             minlength=n * sketch.dim).reshape(n, sketch.dim)
    norms = np.linalg.norm(per_device, axis=1)
    scale = np.where(norms > clip, clip / np.maximum(norms, 1e-300), 1.0)
    total += (per_device * scale[:, None]).sum(axis=0)
    return total


def fast_run(settings: RunSettings, noise: bool = True) -> SecAggDpFedRec:
    """One secagg+dp run of an implicit model (:mod:`fedrec.simulations.models.ddp_fast`); the
    strategy, as :func:`~fedrec.simulations.benches.ddp_runs.federate` returns it. ``noise``
    False leaves the devices' noise out (the server still shrinks for it): only for
    checking the arithmetic against the Flower run."""
    if settings.privacy != "secagg+dp" or settings.explicit:
        raise ValueError("the fast secagg+dp run is for implicit models in secagg+dp")
    parts = simulated_partitions(settings.dataset, settings.protocol, settings.fold,
                                 settings.data_dir, settings.validation)
    pos = Positives.of(parts)
    strategy = ddp_strategy(settings, parts.n_items)
    rng = np.random.default_rng([settings.seed, 31])
    c = strategy.config
    rounds = c.rounds + (1 if strategy.layout is None else 0)
    for server_round in range(1, rounds + 1):
        n = max(int(parts.n_users * settings.fraction_train), 2)
        users = np.sort(rng.choice(parts.n_users, n, replace=False))
        if strategy.noise is None:
            strategy.noise = strategy.plan(n)
        stage = SELECT if strategy.layout is None else "fit"
        dim = strategy._dims()[stage]
        enc = Skellam.for_round(dim, c.clip, c.bits, n, strategy.noise[stage], c.provisioned)
        owner, items = pos.of_users(users)
        if stage == SELECT:
            total = _select_total(strategy, owner, items, n, c.clip, dim)
        else:
            total = _fit_total(strategy, owner, items, n, c.user_reg, c.clip)
        if noise:
            total = total + rng.normal(0.0, enc.noise_std(n), total.shape)
        strategy.releases.append(Release.of(enc, n))
        strategy.encodings.append(enc)
        limit = n * enc.clip + 10 * enc.noise_std(n) + n / enc.scale
        summary = (strategy._select(total, limit) if stage == SELECT else
                   strategy._fit(total, n, enc, limit, server_round))
        strategy.history.append({"round": server_round, "train": {
            **summary, "accepted": float(n), "stage": stage, "epsilon": strategy.epsilon}})
    return strategy


def evaluate_fast(params: ItemParams, parts: Partitions, user_reg: float, k: int = 10
                  ) -> dict[str, float]:
    """:func:`~fedrec.simulations.benches.ddp_runs.evaluate_solved` for an implicit model, users
    scored in chunks: every user with a held-out item, its vector solved as its device
    solves it, every item it has not trained on ranked."""
    train, test = Positives.of(parts), Positives.of(parts, "test")
    n_test_all = test.counts()
    users = np.flatnonzero(n_test_all > 0)
    factors = params.factors.astype(np.float32)
    bias = params.bias.astype(np.float32)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    totals = {f"hr@{k}": 0.0, f"ndcg@{k}": 0.0, f"recall@{k}": 0.0, f"precision@{k}": 0.0}
    for start in range(0, len(users), CHUNK):
        chunk = users[start:start + CHUNK]
        owner, items = train.of_users(chunk)
        x = _user_vectors(params.factors, params.bias, owner, items, len(chunk), user_reg)
        scores = (x.astype(np.float32) @ factors.T + bias).astype(np.float64)
        scores[owner, items] = -np.inf
        top = top_k(scores, k)
        held = np.zeros(scores.shape, dtype=bool)
        t_owner, t_items = test.of_users(chunk)
        held[t_owner, t_items] = True
        hits = np.take_along_axis(held, top, axis=1)
        n_test = n_test_all[chunk]
        ideal = np.cumsum(discounts)[np.minimum(n_test, k) - 1]
        n_hits = hits.sum(axis=1)
        totals[f"hr@{k}"] += float((n_hits > 0).sum())
        totals[f"ndcg@{k}"] += float(((hits * discounts[:top.shape[1]]).sum(axis=1)
                                      / ideal).sum())
        totals[f"recall@{k}"] += float((n_hits / n_test).sum())
        totals[f"precision@{k}"] += float((n_hits / k).sum())
    out = {key: value / len(users) for key, value in totals.items()}
    out["num-users"] = float(len(users))
    return out
