"""Losses as one concept (:class:`fedrec.common.losses.Loss`), over every registered loss:
each knows its feedback; where devices do not train it, every way onto a device refuses it
by name; where a model trains it, it trains that loss and no other."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.common import records
from fedrec.common.losses import LOSSES, for_feedback, loss_named
from fedrec.common.mf import MatrixFactorization, MFConfig
from fedrec.common.schema import TrainConfig
from fedrec.common.settings import RunSettings
from tests.conftest import low_rank_ratings


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_knows_its_feedback_and_where_it_trains(name):
    loss = loss_named(name)
    assert loss is LOSSES[name] and loss.name == name and loss.what
    assert loss.feedback == ("explicit" if loss.explicit else "implicit")
    assert not (loss.explicit and loss.pairwise)  # a pair ranks events, not ratings
    assert MFConfig(loss=name).explicit == loss.explicit  # the centralized model trains all
    if loss.on_devices:
        assert TrainConfig(loss=name).explicit == loss.explicit
        assert for_feedback(loss.explicit) is loss
    else:
        with pytest.raises(ValueError, match=f"on devices.*Found '{name}'"):
            TrainConfig(loss=name)


@pytest.mark.parametrize("name", [n for n, loss in LOSSES.items() if not loss.on_devices])
def test_a_round_asking_devices_for_a_loss_they_do_not_train_is_refused_by_name(name):
    """A server's round config is a device's only way to a loss: a device refuses one it
    does not train, naming it, rather than training another in its place."""
    record = records.config_to_record(TrainConfig(loss="bce"), mean=0.0, seed=1)
    record["loss"] = name
    with pytest.raises(ValueError, match=f"Found '{name}'"):
        records.record_to_config(record)


@pytest.mark.parametrize("explicit", [True, False])
def test_a_run_trains_on_devices_the_loss_of_its_protocols_feedback(explicit):
    protocol = "explicit-80-20" if explicit else "implicit-80-20"
    config = RunSettings(protocol=protocol).train_config()
    assert config.loss_kind is for_feedback(explicit) and config.explicit == explicit


def test_unknown_losses_are_refused_with_the_choices():
    for bad in ("hinge", "", None, 3):
        with pytest.raises(ValueError, match="mse, bce, bpr"):
            loss_named(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="must be one of"):
            TrainConfig(loss=bad)  # type: ignore[arg-type]


def test_each_implicit_loss_trains_itself_in_the_centralized_model():
    """BPR is not BCE under another name: the same data, seed and steps give different
    tables, and each lowers its own objective."""
    data = low_rank_ratings(n_users=40, n_items=30, density=0.3)
    tables, histories = {}, {}
    for name in ("bce", "bpr"):
        model = MatrixFactorization(MFConfig(loss=name, n_factors=4, epochs=6, lr=0.05,
                                             negatives=2, seed=3))
        model.fit(data.user, data.item, None, n_users=40, n_items=30)
        tables[name], histories[name] = model.items.factors.copy(), model.history
    assert not np.allclose(tables["bce"], tables["bpr"])
    for name in ("bce", "bpr"):
        assert histories[name][-1] < histories[name][0], name
