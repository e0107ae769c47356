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
    norm = float(np.linalg.norm(x))
    return x * (clip / norm) if norm > 0 else x


def read(total: np.ndarray, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """The summed Gram matrix (symmetric d×d) and the per-row sums (rows × d)."""
    total = np.asarray(total, dtype=np.float64)
    if total.shape != (layout.dim,):
        raise ValueError(f"a sum of this layout has {layout.dim} values; found "
                         f"{total.shape}")
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
