"""The built-in synthetic shop: a seeded, fast generator of e-commerce behaviour.

What it models, because each is a problem a shop's recommender faces:

* users with latent tastes, each drawn towards one to three favourite categories;
* items in categories of power-law sizes, with power-law (Zipf) popularity;
* a funnel of event types: every visit is a VIEW, some views lead to CART, some carts to
  PURCHASE, and some purchases to a RATING (1-5) — all timestamped, in that order;
* new items listed over time (item indices follow listing order, so the catalogue grows at
  the end), and users joining over time;
* very uneven activity: per-user visit counts follow a log-normal law, so a few users make
  a large share of the events (the imbalance the brief names).

Choices are sampled from ``softmax(taste_strength · p_u·q_i + log popularity_i)`` over the
items already listed at the event's time, so a model that learns tastes beats popularity.
A million events take a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedrec.common.data.interactions import EventType, IdMap, Interactions, ItemFeatures

DAY = 86_400
START = 1_767_225_600  # 2026-01-01T00:00:00Z


@dataclass(frozen=True)
class ShopConfig:
    """Parameters of the synthetic shop. ``n_events`` is a target; the funnel makes the exact
    count vary by about a percent."""

    n_users: int = 3_000
    n_items: int = 2_000
    n_events: int = 150_000
    n_categories: int = 24
    n_factors: int = 8
    days: int = 90
    new_item_share: float = 0.3
    late_user_share: float = 0.4
    popularity_exponent: float = 0.9
    activity_sigma: float = 1.2
    taste_strength: float = 3.0
    rating_share: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_users", "n_items", "n_events", "n_categories", "n_factors", "days"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1. Found {getattr(self, name)}.")
        for name in ("new_item_share", "late_user_share", "rating_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1]. Found {getattr(self, name)}.")
        if self.n_events < self.n_users:
            raise ValueError(f"n_events ({self.n_events}) must be >= n_users "
                             f"({self.n_users}): every user makes at least one visit.")


# Funnel: P(cart | view) and P(purchase | cart) as logistic functions of standardised affinity.
_CART_OFFSET, _BUY_OFFSET, _FUNNEL_SLOPE = -1.6, -0.4, 1.2


def generate_shop(config: ShopConfig | None = None) -> Interactions:
    """Generate a shop's behaviour log, sorted by time (ties keep generation order)."""
    cfg = config or ShopConfig()
    rng = np.random.default_rng(cfg.seed)
    horizon = cfg.days * DAY

    # Categories and items ------------------------------------------------------------
    centroids = rng.normal(size=(cfg.n_categories, cfg.n_factors))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    cat_weight = 1.0 / np.arange(1, cfg.n_categories + 1) ** 0.8
    category = rng.choice(cfg.n_categories, size=cfg.n_items, p=cat_weight / cat_weight.sum())
    q = centroids[category] + 0.35 * rng.normal(size=(cfg.n_items, cfg.n_factors))
    n_new = round(cfg.new_item_share * cfg.n_items)
    listed = np.zeros(cfg.n_items, dtype=np.int64)
    listed[cfg.n_items - n_new:] = np.sort(rng.integers(1, horizon, size=n_new))
    rank = rng.permutation(cfg.n_items) + 1
    log_pop = -cfg.popularity_exponent * np.log(rank)

    # Users -----------------------------------------------------------------------------
    n_fav = rng.integers(1, 4, size=cfg.n_users)
    cat_p = cat_weight / cat_weight.sum()
    favourites = rng.choice(cfg.n_categories, size=(cfg.n_users, 3), p=cat_p)
    mask = np.arange(3)[None, :] < n_fav[:, None]
    p = (centroids[favourites] * mask[..., None]).sum(axis=1) / n_fav[:, None]
    p += 0.25 * rng.normal(size=p.shape)
    joined = np.where(rng.random(cfg.n_users) < cfg.late_user_share,
                      rng.integers(0, int(0.8 * horizon), size=cfg.n_users), 0)

    # Visits: how many per user, when, and which item -----------------------------------
    events_per_visit = _expected_events_per_visit(cfg, p, q, log_pop, rng)
    n_visits = max(cfg.n_users, round(cfg.n_events / events_per_visit))
    activity = rng.lognormal(0.0, cfg.activity_sigma, size=cfg.n_users)
    visits = 1 + rng.multinomial(n_visits - cfg.n_users, activity / activity.sum())
    v_user = np.repeat(np.arange(cfg.n_users), visits)
    span = horizon - joined[v_user]
    v_time = joined[v_user] + (rng.random(len(v_user)) * span).astype(np.int64)
    v_item = _sample_items(p, q, log_pop, listed, v_user, v_time, cfg.taste_strength, rng)

    # Funnel ----------------------------------------------------------------------------
    affinity = np.einsum("ij,ij->i", p[v_user], q[v_item])
    z = (affinity - affinity.mean()) / (affinity.std() + 1e-9)
    cart = rng.random(len(z)) < _sigmoid(_FUNNEL_SLOPE * z + _CART_OFFSET)
    buy = cart & (rng.random(len(z)) < _sigmoid(_FUNNEL_SLOPE * z + _BUY_OFFSET))
    rate = buy & (rng.random(len(z)) < cfg.rating_share)
    t_cart = v_time + rng.exponential(600, len(z)).astype(np.int64) + 1
    t_buy = t_cart + rng.exponential(3_600, len(z)).astype(np.int64) + 1
    t_rate = t_buy + rng.exponential(2 * DAY, len(z)).astype(np.int64) + 1
    stars = np.clip(np.rint(3.4 + 1.1 * z + rng.normal(0, 0.6, len(z))), 1, 5)

    parts = [
        (v_user, v_item, v_time, EventType.VIEW, np.ones(len(z))),
        (v_user[cart], v_item[cart], t_cart[cart], EventType.CART, np.ones(cart.sum())),
        (v_user[buy], v_item[buy], t_buy[buy], EventType.PURCHASE, np.ones(buy.sum())),
        (v_user[rate], v_item[rate], t_rate[rate], EventType.RATING, stars[rate]),
    ]
    user = np.concatenate([x[0] for x in parts])
    item = np.concatenate([x[1] for x in parts])
    time = np.concatenate([x[2] for x in parts])
    event = np.concatenate([np.full(len(x[0]), x[3], dtype=np.int8) for x in parts])
    value = np.concatenate([x[4] for x in parts]).astype(np.float32)
    order = np.argsort(time, kind="stable")

    names = tuple(f"category-{c:02d}" for c in range(cfg.n_categories))
    features = np.zeros((cfg.n_items, cfg.n_categories), dtype=np.float32)
    features[np.arange(cfg.n_items), category] = 1.0
    return Interactions(
        user=user[order].astype(np.int32), item=item[order].astype(np.int32),
        value=value[order], timestamp=START + time[order], event=event[order],
        users=IdMap(np.arange(cfg.n_users)), items=IdMap(np.arange(cfg.n_items)),
        name="synthetic", item_features=ItemFeatures(features, names),
        item_listed=START + listed,
    )


def _sample_items(p: np.ndarray, q: np.ndarray, log_pop: np.ndarray, listed: np.ndarray,
                  v_user: np.ndarray, v_time: np.ndarray, strength: float,
                  rng: np.random.Generator) -> np.ndarray:
    """For each visit, an item drawn from the user's choice distribution over the items
    listed by then. Items are in listing order, so the available set is a prefix: one
    cumulative sum per user answers every visit of that user."""
    n_items = len(q)
    available = np.searchsorted(listed, v_time, side="right")  # prefix length, >= 1
    out = np.empty(len(v_user), dtype=np.int64)
    order = np.argsort(v_user, kind="stable")
    bounds = np.searchsorted(v_user[order], np.arange(0, len(p) + 1))
    block = max(1, 4_000_000 // n_items)
    for start in range(0, len(p), block):
        users = np.arange(start, min(start + block, len(p)))
        logits = strength * (p[users] @ q.T) + log_pop
        weight = np.exp(logits - logits.max(axis=1, keepdims=True))
        cdf = np.cumsum(weight, axis=1)
        idx = order[bounds[users[0]]:bounds[users[-1] + 1]]
        local = v_user[idx] - start
        limit = cdf[local, available[idx] - 1]
        target = rng.random(len(idx)) * limit
        # One searchsorted over all rows: shift row r's cdf (and targets) by r * total.
        shift = cdf[:, -1].max() * 2
        flat = (cdf + shift * np.arange(len(users))[:, None]).ravel()
        pos = np.searchsorted(flat, target + shift * local, side="right")
        out[idx] = np.minimum(pos - local * n_items, available[idx] - 1)
    return out


def _expected_events_per_visit(cfg: ShopConfig, p: np.ndarray, q: np.ndarray,
                               log_pop: np.ndarray, rng: np.random.Generator) -> float:
    """Events per visit implied by the funnel, estimated on a pilot sample of pairs."""
    pilot = np.random.default_rng(cfg.seed + 1)
    users = pilot.integers(0, len(p), size=2_000)
    items = pilot.integers(0, len(q), size=2_000)
    a = np.einsum("ij,ij->i", p[users], q[items])
    z = (a - a.mean()) / (a.std() + 1e-9)
    # visits concentrate on liked items; approximate with the top half of affinities
    z = np.sort(z)[len(z) // 2:]
    z = (z - z.mean()) / (z.std() + 1e-9)
    p_cart = _sigmoid(_FUNNEL_SLOPE * z + _CART_OFFSET)
    p_buy = p_cart * _sigmoid(_FUNNEL_SLOPE * z + _BUY_OFFSET)
    return float(1 + p_cart.mean() + p_buy.mean() * (1 + cfg.rating_share))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
