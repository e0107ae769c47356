"""The centralized reference ranks by the devices' rule (fedrec.common.ranking.ranked):
its batched scoring gives each user exactly what a device holding that user's training
items would rank by."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.client.device import rank_metrics
from fedrec.common.data.registry import load_dataset
from fedrec.common.mf import MatrixFactorization, MFConfig
from fedrec.common.ranking import ranked
from fedrec.common.segments import Segments
from fedrec.common.split import split
from fedrec.simulations.models.centralized import evaluate


@pytest.mark.parametrize(("bonus", "similarity"), [(0.0, 0.0), (0.2, 0.0), (0.2, 0.5),
                                                    (0.0, 2.0)])
def test_the_centralized_ranking_is_each_users_device_ranking(bonus, similarity) -> None:
    s = next(split(load_dataset("synthetic:n_users=60,n_items=40,n_events=900,seed=4"),
                   "implicit-80-20"))
    model = MatrixFactorization(MFConfig(loss="bce", n_factors=4, epochs=3, negatives=2,
                                         seed=1))
    model.fit(s.train.user, s.train.item, s.train.value, s.train.n_users, s.train.n_items)
    got = evaluate(model, s, bonus, similarity)
    segments = Segments.of(s.train)
    head = ~segments.tail_mask(s.train.n_items)
    per_user = []
    for u in np.unique(s.test.user):
        trained = np.unique(s.train.item[s.train.user == u])
        scores = ranked(model.score_items(np.array([u]))[0], model.items.factors, trained,
                        similarity, head, bonus)
        per_user.append(rank_metrics(scores, trained, s.test.item[s.test.user == u], 10,
                                     segments))
    rows = [r for r in per_user if r["num-users"]]
    assert got["ndcg@10"] == pytest.approx(np.mean([r["ndcg@10"] for r in rows]), abs=1e-12)
    assert got["hr@10"] == pytest.approx(np.mean([r["hr@10"] for r in rows]), abs=1e-12)
    share = sum(r["tail-recs"] for r in rows) / sum(r["recs"] for r in rows)
    assert got["tail-share@10"] == pytest.approx(share, abs=1e-12)

