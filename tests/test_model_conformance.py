"""One conformance suite over every model that learns: the centralized batch MF (each
loss), a device's batch training (``Device``), a streaming device (``StreamDevice``), the
edge client (``EdgeClient``) and the replay's online models (``OnlineMF``,
``OnlineBias``).

Each model, through a small adapter that feeds it the same small shop, must

* give the same result for the same seed, bit for bit (and a different seed changes it,
  where the model draws anything at random);
* never write into what it was given (tables, events, ratings);
* refuse a user or item it does not have by name (a ``ValueError`` naming ``user`` or
  ``item``), never wrap around or read past a table;
* where it keeps state across sessions, give the same predictions after saving and
  loading it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from fedrec.client.device import Device, UserState
from fedrec.client.edge import EdgeClient, EdgeSettings, UnknownItemError
from fedrec.client.store import DeviceStore
from fedrec.client.stream import Cursor, StreamDevice
from fedrec.common.mf import MatrixFactorization, MFConfig
from fedrec.common.schema import TrainConfig
from fedrec.simulations.models.stream import OnlineBias, OnlineMF
from tests.conftest import low_rank_ratings

N_USERS, N_ITEMS, K = 30, 25, 4
DATA = low_rank_ratings(n_users=N_USERS, n_items=N_ITEMS, density=0.4)
TABLE_RNG = np.random.default_rng(7)
Q = TABLE_RNG.normal(0, 0.1, (N_ITEMS, K)).astype(np.float32)
B = TABLE_RNG.normal(0, 0.1, N_ITEMS).astype(np.float32)
KEY = bytes(range(32))


def _inputs() -> dict[str, np.ndarray]:
    """Fresh copies of everything a model is given."""
    return {"user": DATA.user.copy(), "item": DATA.item.copy(),
            "value": DATA.value.astype(np.float32), "q": Q.copy(), "b": B.copy()}


@dataclass
class Adapter:
    """How the suite drives one model: ``run(seed, inputs, tmp)`` learns and returns its
    outputs; ``unknown(tmp)`` asks about an id the model does not have; ``roundtrip(tmp)``
    returns predictions before and after saving and loading (None: nothing is kept)."""

    run: Callable[[int, dict, Path], dict[str, np.ndarray]]
    unknown: Callable[[Path], object]
    roundtrip: Callable[[Path], tuple[np.ndarray, np.ndarray]] | None
    random: bool = True  # does the seed matter at all


# ---- centralized batch MF -------------------------------------------------------------
def _mf(loss: str, seed: int) -> MatrixFactorization:
    return MatrixFactorization(MFConfig(loss=loss, n_factors=K, epochs=3, lr=0.05,
                                        negatives=2, seed=seed))


def _mf_run(loss: str) -> Callable:
    def run(seed: int, x: dict, tmp: Path) -> dict[str, np.ndarray]:
        m = _mf(loss, seed).fit(x["user"], x["item"], x["value"], N_USERS, N_ITEMS)
        return {"scores": m.score_items(np.arange(N_USERS)),
                "predict": m.predict(x["user"], x["item"])}
    return run


def _mf_unknown(loss: str) -> Callable:
    def unknown(tmp: Path) -> object:
        m = _mf(loss, 0).fit(DATA.user, DATA.item, DATA.value, N_USERS, N_ITEMS)
        return m.predict(np.array([N_USERS]), np.array([0]))
    return unknown


def _mf_roundtrip(loss: str) -> Callable:
    def roundtrip(tmp: Path) -> tuple[np.ndarray, np.ndarray]:
        m = _mf(loss, 0).fit(DATA.user, DATA.item, DATA.value, N_USERS, N_ITEMS)
        loaded = MatrixFactorization.load(m.save(tmp / "model.npz"))
        users = np.arange(N_USERS)
        return (np.r_[m.score_items(users).ravel(), m.predict(DATA.user, DATA.item)],
                np.r_[loaded.score_items(users).ravel(), loaded.predict(DATA.user, DATA.item)])
    return roundtrip


# ---- a device's batch training -----------------------------------------------------------
def _device_config(loss: str) -> TrainConfig:
    return TrainConfig(loss=loss, local_epochs=2, lr=0.05, negatives=2, batch_size=4)


def _one_user(x: dict) -> tuple[np.ndarray, np.ndarray]:
    mine = x["user"] == 0
    return x["item"][mine], x["value"][mine]


def _device_run(loss: str) -> Callable:
    def run(seed: int, x: dict, tmp: Path) -> dict[str, np.ndarray]:
        items, values = _one_user(x)
        dev = Device(items, values, seed=seed)
        update, _ = dev.train(x["q"], x["b"], 3.0, _device_config(loss))
        return {"ids": update.ids, "rows": update.rows, "bias": update.bias,
                "counts": update.counts, "user": dev.user.factors}
    return run


def _device_unknown(loss: str) -> Callable:
    def unknown(tmp: Path) -> object:
        dev = Device(np.array([1, N_ITEMS]), np.array([4.0, 5.0]), seed=0)
        return dev.train(Q, B, 3.0, _device_config(loss))
    return unknown


def _device_roundtrip(loss: str) -> Callable:
    def roundtrip(tmp: Path) -> tuple[np.ndarray, np.ndarray]:
        items, values = _one_user(_inputs())
        dev = Device(items, values, seed=0)
        dev.train(Q, B, 3.0, _device_config(loss))
        saved = tmp / "user.npz"  # what an app keeps: the user vector and bias
        np.savez(saved, factors=dev.user.factors, bias=dev.user.bias)
        with np.load(saved) as f:
            again = Device(items, values, state=UserState(f["factors"], float(f["bias"])))
        every = np.arange(N_ITEMS)
        return dev.predict(Q, B, 3.0, every), again.predict(Q, B, 3.0, every)
    return roundtrip


# ---- a streaming device -----------------------------------------------------------------
def _stream_device(x: dict, seed: int, **kw) -> StreamDevice:
    items, values = _one_user(x)
    return StreamDevice(items, values, np.arange(len(items)) * 60, seed=seed, **kw)


def _stream_run(loss: str) -> Callable:
    def run(seed: int, x: dict, tmp: Path) -> dict[str, np.ndarray]:
        dev = _stream_device(x, seed)
        cfg = _device_config(loss)
        sums = dev.arrive(len(dev.items), x["q"], x["b"], 3.0, cfg)
        update, _ = dev.train(x["q"], x["b"], 3.0, cfg, "incremental", 50, 1.0)
        return {"ids": update.ids, "rows": update.rows, "user": dev.user.factors,
                "sums": np.array(sorted(sums.items()), dtype=object)[:, 1].astype(float)}
    return run


def _stream_unknown(loss: str) -> Callable:
    def unknown(tmp: Path) -> object:
        dev = StreamDevice(np.array([1, N_ITEMS]), np.array([4.0, 5.0]), np.array([0, 60]))
        return dev.arrive(2, Q, B, 3.0, _device_config(loss))
    return unknown


def _stream_roundtrip(tmp: Path) -> tuple[np.ndarray, np.ndarray]:
    """Ratings (no random draw once the user exists): a device saved after half its
    events and loaded again scores the other half as the one that ran on."""
    x, cfg = _inputs(), _device_config("mse")
    ran = _stream_device(x, 0)
    half = len(ran.items) // 2
    ran.arrive(half, Q, B, 3.0, cfg)
    saved = (UserState(ran.user.factors.copy(), ran.user.bias), Cursor(ran.cursor.seen))
    loaded = _stream_device(x, 0, state=saved[0], cursor=saved[1])
    a = ran.arrive(len(ran.items), Q, B, 3.0, cfg)
    b = loaded.arrive(len(loaded.items), Q, B, 3.0, cfg)
    return (np.array(sorted(a.items()), dtype=object)[:, 1].astype(float),
            np.array(sorted(b.items()), dtype=object)[:, 1].astype(float))


# ---- the edge client --------------------------------------------------------------------
def _edge(path: Path, kind: str, seed: int, create: bool = True) -> EdgeClient:
    store = DeviceStore(path, key=KEY, create=create)
    return EdgeClient(store, EdgeSettings(kind=kind, seed=seed, negatives=2))


def _edge_events(client: EdgeClient, x: dict, explicit: bool) -> None:
    items, values = _one_user(x)
    for item, value in zip(items.tolist(), values.tolist(), strict=True):
        if explicit:
            client.record(item, "rating", value)
        else:
            client.record(item, "purchase")


def _edge_run(kind: str) -> Callable:
    def run(seed: int, x: dict, tmp: Path) -> dict[str, np.ndarray]:
        path = tmp / f"edge-{seed}-{len(list(tmp.iterdir()))}.db"
        client = _edge(path, kind, seed)
        client.set_table(x["q"], x["b"], 3.0)
        _edge_events(client, x, kind == "explicit")
        rec = client.recommend(k=5, exclude=())
        out = {"items": rec.items, "scores": rec.scores, "user": client.user}
        client.store.close()
        return out
    return run


def _edge_unknown(kind: str) -> Callable:
    def unknown(tmp: Path) -> object:
        client = _edge(tmp / "unknown.db", kind, 0)
        client.set_table(Q, B, 3.0)
        try:
            return client.record(N_ITEMS, "rating" if kind == "explicit" else "view", 4.0)
        finally:
            client.store.close()
    return unknown


def _edge_roundtrip(kind: str) -> Callable:
    def roundtrip(tmp: Path) -> tuple[np.ndarray, np.ndarray]:
        path = tmp / "kept.db"
        client = _edge(path, kind, 0)
        client.set_table(Q, B, 3.0)
        _edge_events(client, _inputs(), kind == "explicit")
        before = client.recommend(k=N_ITEMS, exclude=())
        client.store.close()
        again = _edge(path, kind, 0, create=False)
        after = again.recommend(k=N_ITEMS, exclude=())
        again.store.close()
        return (np.r_[before.items, before.scores], np.r_[after.items, after.scores])
    return roundtrip


# ---- the replay's online models ---------------------------------------------------------
def _online_mf_run(explicit: bool, item_rule: str = "sgd", item_rule_lr: float = 1.0
                   ) -> Callable:
    def run(seed: int, x: dict, tmp: Path) -> dict[str, np.ndarray]:
        m = OnlineMF(N_USERS, N_ITEMS, K, explicit, lr=0.05, reg=0.01, reg_bias=0.0,
                     negatives=2, seed=seed, item_rule=item_rule, item_rule_lr=item_rule_lr)
        scores = []
        for u, i, v in zip(x["user"].tolist(), x["item"].tolist(), x["value"].tolist(),
                           strict=True):
            scores.append(np.atleast_1d(m.score(u, i, N_ITEMS)).sum())
            m.learn(u, i, v, N_ITEMS)
        return {"scores": np.array(scores), "q": m.q, "p": m.p}
    return run


def _online_bias_run(seed: int, x: dict, tmp: Path) -> dict[str, np.ndarray]:
    m = OnlineBias(N_USERS, N_ITEMS)
    scores = []
    for u, i, v in zip(x["user"].tolist(), x["item"].tolist(), x["value"].tolist(),
                       strict=True):
        scores.append(m.score(u, i, N_ITEMS))
        m.learn(u, i, v)
    return {"scores": np.array(scores), "bu": m.bu, "bi": m.bi}


def _online_unknown(make: Callable) -> Callable:
    def unknown(tmp: Path) -> object:
        return make().learn(N_USERS, 0, 4.0, N_ITEMS)
    return unknown


MODELS: dict[str, Adapter] = {
    **{f"mf-{loss}": Adapter(_mf_run(loss), _mf_unknown(loss), _mf_roundtrip(loss))
       for loss in ("mse", "bce", "bpr")},
    **{f"device-{loss}": Adapter(_device_run(loss), _device_unknown(loss),
                                 _device_roundtrip(loss)) for loss in ("mse", "bce")},
    "stream-device-mse": Adapter(_stream_run("mse"), _stream_unknown("mse"),
                                 _stream_roundtrip),
    "stream-device-bce": Adapter(_stream_run("bce"), _stream_unknown("bce"), None),
    **{f"edge-{kind}": Adapter(_edge_run(kind), _edge_unknown(kind), _edge_roundtrip(kind))
       for kind in ("explicit", "implicit")},
    "online-mf-explicit": Adapter(_online_mf_run(True), _online_unknown(
        lambda: OnlineMF(N_USERS, N_ITEMS, K, True, 0.05, 0.01, 0.0)), None),
    "online-mf-implicit": Adapter(_online_mf_run(False), _online_unknown(
        lambda: OnlineMF(N_USERS, N_ITEMS, K, False, 0.05, 0.01, 0.0)), None),
    "online-mf-implicit-adagrad": Adapter(_online_mf_run(False, "adagrad", 0.2),
                                          _online_unknown(lambda: OnlineMF(
                                              N_USERS, N_ITEMS, K, False, 0.05, 0.01, 0.0,
                                              item_rule="adagrad", item_rule_lr=0.2)), None),
    "online-bias": Adapter(_online_bias_run, lambda tmp: OnlineBias(N_USERS, N_ITEMS).learn(
        N_USERS, 0, 4.0), None, random=False),
}


def _equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", list(MODELS))
def test_the_same_seed_gives_the_same_model_and_another_seed_another(name, tmp_path):
    model = MODELS[name]
    one, two = model.run(3, _inputs(), tmp_path), model.run(3, _inputs(), tmp_path)
    assert _equal(one, two)
    if model.random:
        assert not _equal(one, model.run(4, _inputs(), tmp_path))


@pytest.mark.parametrize("name", list(MODELS))
def test_a_model_never_writes_into_what_it_was_given(name, tmp_path):
    given = _inputs()
    MODELS[name].run(0, given, tmp_path)
    for key, value in _inputs().items():
        assert np.array_equal(given[key], value), f"{name} wrote into its {key}"


@pytest.mark.parametrize("name", list(MODELS))
def test_a_user_or_item_the_model_does_not_have_is_refused_by_name(name, tmp_path):
    with pytest.raises(ValueError, match=r"\b(user|item)\b") as info:
        MODELS[name].unknown(tmp_path)
    if name.startswith("edge"):
        assert isinstance(info.value, UnknownItemError)


@pytest.mark.parametrize("name", [n for n, m in MODELS.items() if m.roundtrip is not None])
def test_a_saved_and_loaded_model_predicts_as_before(name, tmp_path):
    before, after = MODELS[name].roundtrip(tmp_path)
    assert len(before) and np.array_equal(before, after)


def test_every_kept_model_is_in_the_round_trip():
    """What is not round-tripped keeps nothing across sessions: the replay's online
    models live for one replay, and an implicit streaming device keeps exactly what the
    rating one does (user vector and cursor; its negatives are drawn afresh)."""
    assert {n for n, m in MODELS.items() if m.roundtrip is None} == {
        "stream-device-bce", "online-mf-explicit", "online-mf-implicit",
        "online-mf-implicit-adagrad", "online-bias"}


@pytest.mark.parametrize("damage", ["missing", "shape", "nan", "config", "not-npz",
                                    "range-nan", "config-list"])
def test_a_damaged_saved_model_is_refused_naming_the_field(damage, tmp_path):
    m = _mf("mse", 0).fit(DATA.user, DATA.item, DATA.value, N_USERS, N_ITEMS)
    path = m.save(tmp_path / "model.npz")
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    if damage == "missing":
        arrays.pop("item_bias")
    elif damage == "shape":
        arrays["item_factors"] = arrays["item_factors"][:, :2]
    elif damage == "nan":
        arrays["user_factors"][0, 0] = np.nan
    elif damage == "config":
        arrays["config"] = np.array('{"loss": "hinge"}')
    elif damage == "config-list":
        arrays["config"] = np.array("[1, 2]")
    elif damage == "range-nan":
        arrays["rating_range"] = np.array([np.nan, 5.0])
    if damage == "not-npz":
        path.write_bytes(b"not a model")
    else:
        with path.open("wb") as out:
            np.savez(out, **arrays)
    field = {"missing": "item_bias", "shape": "item_factors", "nan": "user_factors",
             "config": "config", "not-npz": "not a saved model", "range-nan": "rating_range",
             "config-list": "config"}[damage]
    with pytest.raises(ValueError, match=field):
        MatrixFactorization.load(path)
