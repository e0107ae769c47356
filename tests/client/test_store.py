"""The encrypted device store: round trip, wrong key, tampering, truncation, atomic
batches, and the key never beside the data."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from fedrec.client.store import (
    CorruptStoreError,
    DeviceStore,
    TamperedError,
    WrongKeyError,
)

KEY = bytes(range(32))


def fill(store: DeviceStore, n: int = 5, start: int = 0) -> None:
    store.append(np.arange(start, start + n) % 7, np.arange(n) % 4,
                 np.linspace(1, 5, n), 1_700_000_000 + np.arange(start, start + n))


def test_round_trip_with_a_key_and_with_a_passphrase(tmp_path):
    for kind in ({"key": KEY}, {"passphrase": "correct horse battery staple"}):
        path = tmp_path / f"{next(iter(kind))}.db"
        with DeviceStore(path, **kind) as store:
            ids = store.append([3, 9], [1, 3], [1.0, 4.5], [100, 200])
            store.put("user", np.array([0.1, -0.2, 0.3], np.float32))
        with DeviceStore(path, **kind) as store:
            ev = store.events()
            assert ev["id"].tolist() == ids.tolist() == [1, 2]
            assert ev["item"].tolist() == [3, 9] and ev["event"].tolist() == [1, 3]
            assert ev["value"].tolist() == [1.0, 4.5] and ev["time"].tolist() == [100, 200]
            np.testing.assert_array_equal(store.get("user"),
                                          np.array([0.1, -0.2, 0.3], np.float32))
            assert store.get("missing") is None
            assert store.events(after=1)["item"].tolist() == [9]


def test_a_wrong_key_or_passphrase_is_a_clear_error(tmp_path):
    with DeviceStore(tmp_path / "a.db", key=KEY) as store:
        fill(store)
    with pytest.raises(WrongKeyError, match=r"a\.db: the key does not open"):
        DeviceStore(tmp_path / "a.db", key=bytes(32))
    with DeviceStore(tmp_path / "b.db", passphrase="right") as store:
        fill(store)
    with pytest.raises(WrongKeyError):
        DeviceStore(tmp_path / "b.db", passphrase="wrong")
    with DeviceStore(tmp_path / "a.db", key=KEY) as store:
        assert len(store) == 5  # nothing lost by the failed attempts


def _raw(path):
    return sqlite3.connect(path, isolation_level=None)


def test_a_changed_or_swapped_row_is_detected_and_named(tmp_path):
    path = tmp_path / "s.db"
    with DeviceStore(path, key=KEY) as store:
        fill(store)
        store.put("user", np.ones(4, np.float32))
    db = _raw(path)
    (blob,) = db.execute("SELECT sealed FROM events WHERE id = 3").fetchone()
    flipped = bytes([blob[0]]) + bytes([blob[1] ^ 1]) + blob[2:]
    db.execute("UPDATE events SET sealed = ? WHERE id = 3", (flipped,))
    db.close()
    with DeviceStore(path, key=KEY) as store, pytest.raises(TamperedError, match="events:3"):
        store.events()
    db = _raw(path)  # restore row 3, then swap rows 1 and 2
    db.execute("UPDATE events SET sealed = ? WHERE id = 3", (blob,))
    one, two = (db.execute("SELECT sealed FROM events WHERE id = ?", (i,)).fetchone()[0]
                for i in (1, 2))
    db.execute("UPDATE events SET sealed = ? WHERE id = 1", (two,))
    db.execute("UPDATE events SET sealed = ? WHERE id = 2", (one,))
    (state,) = db.execute("SELECT sealed FROM state WHERE name = 'user'").fetchone()
    db.execute("INSERT INTO state (name, sealed) VALUES ('other', ?)", (state,))
    db.close()
    with DeviceStore(path, key=KEY) as store:
        with pytest.raises(TamperedError, match="events:1"):
            store.events()
        assert store.events(after=2)["item"].tolist() == [2, 3, 4]  # the rest still opens
        with pytest.raises(TamperedError, match="state:other"):
            store.get("other")  # a state entry moved under another name


def test_a_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "t.db"
    with DeviceStore(path, key=KEY) as store:
        for k in range(40):
            fill(store, 50, start=50 * k)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptStoreError, match=r"t\.db"), DeviceStore(path, key=KEY) as store:
        store.events()


def test_a_batch_is_stored_whole_or_not_at_all(tmp_path, monkeypatch):
    with DeviceStore(tmp_path / "b.db", key=KEY) as store:
        fill(store, 3)
        with pytest.raises(ValueError, match="same length"):
            store.append([1, 2], [1], [1.0, 2.0], [1, 2])
        real = store._seal
        calls = []

        def failing(plain, where):
            calls.append(where)
            if len(calls) == 3:
                raise RuntimeError("power cut")
            return real(plain, where)

        monkeypatch.setattr(store, "_seal", failing)
        with pytest.raises(RuntimeError, match="power cut"):
            fill(store, 5, start=3)
        monkeypatch.setattr(store, "_seal", real)
        assert len(store) == 3  # the failed batch left nothing behind
        fill(store, 2, start=3)
        assert store.events()["id"].tolist() == [1, 2, 3, 4, 5]


def test_two_connections_share_one_store(tmp_path):
    path = tmp_path / "shared.db"
    with DeviceStore(path, key=KEY) as app, DeviceStore(path, key=KEY) as node:
        fill(app, 3)
        fill(node, 2, start=3)
        fill(app, 1, start=5)
        assert node.events()["item"].tolist() == [0, 1, 2, 3, 4, 5]
        node.put("user", np.zeros(2))
        np.testing.assert_array_equal(app.get("user"), np.zeros(2))


def test_neither_key_nor_passphrase_is_written_to_the_file(tmp_path):
    path = tmp_path / "k.db"
    with DeviceStore(path, key=KEY) as store:
        fill(store)
    with DeviceStore(tmp_path / "p.db", passphrase="s3cret-passphrase") as store:
        fill(store)
    assert KEY not in path.read_bytes()
    assert b"s3cret-passphrase" not in (tmp_path / "p.db").read_bytes()
    with pytest.raises(ValueError, match="exactly one"):
        DeviceStore(path)
    with pytest.raises(ValueError, match="32 bytes"):
        DeviceStore(path, key=b"short")
