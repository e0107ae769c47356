"""The sums behind the ``secagg+dp`` learner: what a device adds, and how the server solves
the item rows from the noisy total.

Implicit feedback with squared loss over *every* item (each unobserved item a 0, every
entry weighed the same) has an item gradient that splits into a part shared by all items
and a part from the positives alone:

    ∂/∂q̃_i  Σ_u c_u Σ_j (r_uj − p̃_u·q̃_j)²  ∝  G q̃_i − B_i,
    G = Σ_u c_u p̃_u p̃_uᵀ,   B_i = Σ_{u: r_ui = 1} c_u p̃_u,

with ``p̃_u = [p_u, 1]`` and ``q̃_i = [q_i, b_i]`` (the item bias is the last coordinate).
So no negatives are sampled, a device's contribution is its Gram matrix and its user
vector on the rows of its positives, and the server's step is the exact minimiser
``q̃_i = (G + λI)⁻¹ B_i`` (alternating least squares, one item solve per round). Each
device scales its contribution to one L2 norm (``c_u``), so every user weighs the same and
the sum has a known sensitivity: what distributed DP (:mod:`fedrec.common.ddp`) needs.

The masked vector covers a *row set* the server chose publicly (the ``rows`` of a
:class:`Layout`), never the catalogue: bytes grow with the set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def triangle(d: int) -> int:
    """Values in the upper triangle (with the diagonal) of a d×d matrix."""
    return d * (d + 1) // 2


@dataclass(frozen=True)
class Layout:
    """Where each statistic sits in the vector: the Gram matrix's upper triangle (its
    off-diagonal entries times √2, so the vector's norm is the matrix's Frobenius norm),
    then one ``k + 1`` block per row of the row set."""

    n_factors: int
    rows: np.ndarray  # the row set, sorted unique item ids

    def __post_init__(self) -> None:
        rows = np.asarray(self.rows, dtype=np.int64)
        if len(rows) and not (rows[1:] > rows[:-1]).all():
            raise ValueError("a layout's rows must be sorted and unique")
        if self.n_factors < 1:
            raise ValueError(f"n_factors must be >= 1. Found {self.n_factors}.")
        object.__setattr__(self, "rows", rows)

    @property
    def d(self) -> int:
        return self.n_factors + 1

    @property
    def dim(self) -> int:
        return triangle(self.d) + len(self.rows) * self.d


def _triangle_weights(d: int) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    iu = np.triu_indices(d)
    w = np.where(iu[0] == iu[1], 1.0, np.sqrt(2.0))
    return iu, w


def user_solve(factors: np.ndarray, bias: np.ndarray, positives: np.ndarray,
               reg: float) -> np.ndarray:
    """The user vector minimising ``Σ_j (r_j − b_j − p·q_j)² + reg·|p|²`` over every item
    (``r`` is 1 on ``positives``): ``(QᵀQ + reg·I)⁻¹ (Σ_pos q_j − Qᵀb)``."""
    q = np.asarray(factors, dtype=np.float64)
    b = np.asarray(bias, dtype=np.float64)
    k = q.shape[1]
    rhs = q[positives].sum(axis=0) - q.T @ b
    return np.linalg.solve(q.T @ q + reg * np.eye(k), rhs)


def contribution(user: np.ndarray, positives: np.ndarray, layout: Layout,
                 clip: float) -> np.ndarray:
    """The device's vector: ``c·[triu(p̃p̃ᵀ), p̃ on each of its positives in the row set]``
    with ``c`` such that its norm is exactly ``clip``."""
    p = np.append(np.asarray(user, dtype=np.float64), 1.0)
    if len(p) != layout.d:
        raise ValueError(f"the user vector has {len(p) - 1} factors; the layout "
                         f"{layout.n_factors}")
    iu, w = _triangle_weights(layout.d)
    gram = np.outer(p, p)[iu] * w
    positives = np.unique(np.asarray(positives, dtype=np.int64))
    inside = np.searchsorted(layout.rows, positives[np.isin(positives, layout.rows)])
    x = np.zeros(layout.dim)
    t = triangle(layout.d)
    x[:t] = gram
    block = x[t:].reshape(len(layout.rows), layout.d)
    block[inside] = p
    return _at_norm(x, clip)


def _at_norm(x: np.ndarray, clip: float) -> np.ndarray:
    """``x`` scaled to norm ``clip`` (zero stays zero)."""
    norm = float(np.linalg.norm(x))
    return x * (clip / norm) if norm > 0 else x


def _sum_of(total: np.ndarray, layout: Layout | RatingLayout) -> np.ndarray:
    total = np.asarray(total, dtype=np.float64)
    if total.shape != (layout.dim,):
        raise ValueError(f"a sum of this layout has {layout.dim} values; found "
                         f"{total.shape}")
    return total


def read(total: np.ndarray, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """The summed Gram matrix (symmetric d×d) and the per-row sums (rows × d)."""
    total = _sum_of(total, layout)
    iu, w = _triangle_weights(layout.d)
    t = triangle(layout.d)
    gram = np.zeros((layout.d, layout.d))
    gram[iu] = total[:t] / w
    gram = gram + np.triu(gram, 1).T
    return gram, total[t:].reshape(len(layout.rows), layout.d)


def solve(gram: np.ndarray, sums: np.ndarray, reg: float, noise_var: float = 0.0
          ) -> tuple[np.ndarray, np.ndarray]:
    """The rows' new factors and biases, ``(G + reg·I)⁻¹ B_i``; with ``noise_var`` (the
    variance of the noise on each value of ``B``) each row's sum is first shrunk by the
    positive-part James–Stein factor ``max(0, 1 − d·noise_var / |B_i|²)``: a row whose sum
    is no longer than its noise carries nothing and is set to zero, not to noise."""
    d = gram.shape[0]
    sums = np.asarray(sums, dtype=np.float64)
    if noise_var > 0:
        energy = np.einsum("ij,ij->i", sums, sums)
        with np.errstate(divide="ignore"):
            keep = np.maximum(0.0, 1.0 - d * noise_var / energy)
        sums = sums * np.where(energy > 0, keep, 0.0)[:, None]
    sym = (gram + gram.T) / 2
    solved = np.linalg.solve(sym + reg * np.eye(d), sums.T).T
    return solved[:, :-1], solved[:, -1]


def popularity(positives: np.ndarray, n_items: int, clip: float) -> np.ndarray:
    """The device's vector for the private choice of the row set: ``clip/√n`` on each of
    its ``n`` positives (norm ``clip``), zero elsewhere."""
    x = np.zeros(n_items)
    positives = np.unique(np.asarray(positives, dtype=np.int64))
    if len(positives):
        x[positives] = clip / np.sqrt(len(positives))
    return x


def top_rows(scores: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` highest-scoring items, sorted by id (ties to the lower id)."""
    count = min(int(count), len(scores))
    order = np.lexsort((np.arange(len(scores)), -np.asarray(scores)))
    return np.sort(order[:count]).astype(np.int64)


# ---- ratings ---------------------------------------------------------------------------
# A rating model r̂ = μ + b_u + b_i + p_u·q_i has no shared Gram matrix: each item's normal
# equations sum over its own raters, (Σ_u c_u p̃_u p̃_uᵀ + λI) q̃_i = Σ_u c_u t_ui p̃_u with
# t_ui = r_ui − μ − b_u. A device adds, on the block of each item it rated in the row set,
# its p̃p̃ᵀ (upper triangle) and t_ui·p̃; the server projects each noisy Gram matrix onto
# the positive semi-definite cone before it solves, so no noise can make a solve diverge.


NOISE_RIDGE = 2.0  # noise standard deviations added to a rating row's ridge
JS_RATINGS = False
USER_BIAS_REG = 0.1  # the user bias's ridge, as a share of the user vector's


@dataclass(frozen=True)
class RatingLayout:
    """One block per row of the row set: its Gram matrix's upper triangle (off-diagonal
    entries times √2), then its ``k + 1`` right-hand side."""

    n_factors: int
    rows: np.ndarray

    def __post_init__(self) -> None:
        Layout.__post_init__(self)  # type: ignore[arg-type]

    @property
    def d(self) -> int:
        return self.n_factors + 1

    @property
    def block(self) -> int:
        return triangle(self.d) + self.d

    @property
    def dim(self) -> int:
        return len(self.rows) * self.block


def rating_user_solve(factors: np.ndarray, bias: np.ndarray, mean: float,
                      items: np.ndarray, ratings: np.ndarray, reg: float
                      ) -> tuple[np.ndarray, float]:
    """The user vector and bias minimising ``Σ_i (r_i − μ − b_i − b_u − p·q_i)² +
    reg·|p|² + 0.1·reg·b_u²`` over the user's rated items (the bias, one number learned
    from every rating, needs less ridge than the vector)."""
    q = np.asarray(factors, dtype=np.float64)[items]
    x = np.c_[q, np.ones(len(items))]
    y = np.asarray(ratings, dtype=np.float64) - mean - np.asarray(bias, np.float64)[items]
    ridge = np.full(x.shape[1], float(reg))
    ridge[-1] = USER_BIAS_REG * reg
    w = np.linalg.solve(x.T @ x + np.diag(ridge), x.T @ y)
    return w[:-1], float(w[-1])


def rating_contribution(user: np.ndarray, user_bias: float, mean: float, items: np.ndarray,
                        ratings: np.ndarray, layout: RatingLayout, clip: float
                        ) -> np.ndarray:
    """The device's vector for the row set: on each rated item's block
    ``c·[triu(p̃p̃ᵀ), (r − μ − b_u)·p̃]``, with ``c`` such that its norm is ``clip``
    (items seen twice count once: their mean rating)."""
    p = np.append(np.asarray(user, dtype=np.float64), 1.0)
    items = np.asarray(items, dtype=np.int64)
    uniq, inverse = np.unique(items, return_inverse=True)
    r = np.bincount(inverse, weights=ratings) / np.bincount(inverse)
    inside = np.isin(uniq, layout.rows)
    at = np.searchsorted(layout.rows, uniq[inside])
    target = r[inside] - mean - user_bias
    iu, w = _triangle_weights(layout.d)
    x = np.zeros((len(layout.rows), layout.block))
    x[at, :triangle(layout.d)] = np.outer(p, p)[iu] * w
    x[at, triangle(layout.d):] = target[:, None] * p
    return _at_norm(x.ravel(), clip)


def rating_read(total: np.ndarray, layout: RatingLayout) -> tuple[np.ndarray, np.ndarray]:
    """Each row's summed Gram matrix (rows × d × d, symmetric) and right-hand side."""
    total = _sum_of(total, layout)
    blocks = total.reshape(len(layout.rows), layout.block)
    iu, w = _triangle_weights(layout.d)
    t = triangle(layout.d)
    grams = np.zeros((len(layout.rows), layout.d, layout.d))
    grams[:, iu[0], iu[1]] = blocks[:, :t] / w
    grams = grams + np.triu(grams, 1).transpose(0, 2, 1)
    return grams, blocks[:, t:]


def rating_solve(grams: np.ndarray, sums: np.ndarray, reg: float, noise_var: float = 0.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Each row's factors and bias: its Gram matrix projected onto the PSD cone (negative
    eigenvalues, which only noise makes, set to 0), ``(A_i⁺ + (reg + 2σ)·I)⁻¹ B_i`` with σ
    the noise's standard deviation and the right-hand side James–Stein-shrunk for it.
    ``|q̃_i| ≤ |B_i| / reg``: no noise makes a row diverge."""
    d = grams.shape[-1]
    values, vectors = np.linalg.eigh((grams + grams.transpose(0, 2, 1)) / 2)
    psd = (vectors * np.maximum(values, 0.0)[:, None, :]) @ vectors.transpose(0, 2, 1)
    sums = np.asarray(sums, dtype=np.float64)
    if noise_var > 0 and JS_RATINGS:
        energy = np.einsum("ij,ij->i", sums, sums)
        with np.errstate(divide="ignore"):
            keep = np.maximum(0.0, 1.0 - d * noise_var / energy)
        sums = sums * np.where(energy > 0, keep, 0.0)[:, None]
    # The noise's own size joins the ridge: a row whose Gram matrix is no larger than the
    # noise on it is shrunk towards zero, a well-supported one is barely touched.
    ridge = reg + NOISE_RIDGE * np.sqrt(noise_var)
    solved = np.linalg.solve(psd + ridge * np.eye(d), sums[..., None])[..., 0]
    return solved[:, :-1], solved[:, -1]


def mean_part(ratings: np.ndarray, rating_range: tuple[float, float], clip: float
              ) -> np.ndarray:
    """The device's two values for μ: ``a·[1, m]`` with ``m`` its mean rating placed on the
    scale's ``[0, 1]`` and ``a = clip/√2`` (zeros without ratings). μ is the mean of users'
    means, every user one vote."""
    if not len(ratings):
        return np.zeros(2)
    low, high = rating_range
    m = float(np.clip((np.mean(ratings) - low) / (high - low), 0.0, 1.0))
    return (clip / np.sqrt(2)) * np.array([1.0, m])


def read_mean(total: np.ndarray, rating_range: tuple[float, float]) -> float:
    """μ from the summed mean parts (the scale's middle when the sum holds no vote)."""
    low, high = rating_range
    votes, placed = float(total[0]), float(total[1])
    share = placed / votes if votes > 0 else 0.5
    return low + (high - low) * float(np.clip(share, 0.0, 1.0))
