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
        with DeviceStore(path, **kind, create=True) as store:
            ids = store.append([3, 9], [1, 3], [1.0, 4.5], [100, 200])
            store.put("user", np.array([0.1, -0.2, 0.3], np.float32))
        with DeviceStore(path, **kind, create=True) as store:
            ev = store.events()
            assert ev["id"].tolist() == ids.tolist() == [1, 2]
            assert ev["item"].tolist() == [3, 9] and ev["event"].tolist() == [1, 3]
            assert ev["value"].tolist() == [1.0, 4.5] and ev["time"].tolist() == [100, 200]
            np.testing.assert_array_equal(store.get("user"),
                                          np.array([0.1, -0.2, 0.3], np.float32))
            assert store.get("missing") is None
            assert store.events(after=1)["item"].tolist() == [9]


def test_a_wrong_key_or_passphrase_is_a_clear_error(tmp_path):
    with DeviceStore(tmp_path / "a.db", key=KEY, create=True) as store:
        fill(store)
    with pytest.raises(WrongKeyError, match=r"a\.db: the key does not open"):
        DeviceStore(tmp_path / "a.db", key=bytes(32))
    with DeviceStore(tmp_path / "b.db", passphrase="right", create=True) as store:
        fill(store)
    with pytest.raises(WrongKeyError):
        DeviceStore(tmp_path / "b.db", passphrase="wrong")
    with DeviceStore(tmp_path / "a.db", key=KEY, create=True) as store:
        assert len(store) == 5  # nothing lost by the failed attempts


def _raw(path):
    return sqlite3.connect(path, isolation_level=None)


def test_a_changed_or_swapped_row_is_detected_and_named(tmp_path):
    path = tmp_path / "s.db"
    with DeviceStore(path, key=KEY, create=True) as store:
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
    with DeviceStore(path, key=KEY, create=True) as store:
        with pytest.raises(TamperedError, match="events:1"):
            store.events()
        assert store.events(after=2)["item"].tolist() == [2, 3, 4]  # the rest still opens
        with pytest.raises(TamperedError, match="state:other"):
            store.get("other")  # a state entry moved under another name


def test_a_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "t.db"
    with DeviceStore(path, key=KEY, create=True) as store:
        for k in range(40):
            fill(store, 50, start=50 * k)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptStoreError, match=r"t\.db"), DeviceStore(path, key=KEY) as store:
        store.events()


def test_a_batch_is_stored_whole_or_not_at_all(tmp_path, monkeypatch):
    with DeviceStore(tmp_path / "b.db", key=KEY, create=True) as store:
        fill(store, 3)
        with pytest.raises(ValueError, match="same length"):
            store.append([1, 2], [1], [1.0, 2.0], [1, 2])
        real = store._seal
        calls = []

        def failing(plain, where, *counter):
            calls.append(where)
            if len(calls) == 3:
                raise RuntimeError("power cut")
            return real(plain, where, *counter)

        monkeypatch.setattr(store, "_seal", failing)
        with pytest.raises(RuntimeError, match="power cut"):
            fill(store, 5, start=3)
        monkeypatch.setattr(store, "_seal", real)
        assert len(store) == 3  # the failed batch left nothing behind
        fill(store, 2, start=3)
        assert store.events()["id"].tolist() == [1, 2, 3, 4, 5]


def test_two_connections_share_one_store(tmp_path):
    path = tmp_path / "shared.db"
    with DeviceStore(path, key=KEY, create=True) as app, DeviceStore(path, key=KEY) as node:
        fill(app, 3)
        fill(node, 2, start=3)
        fill(app, 1, start=5)
        assert node.events()["item"].tolist() == [0, 1, 2, 3, 4, 5]
        node.put("user", np.zeros(2))
        np.testing.assert_array_equal(app.get("user"), np.zeros(2))


def test_neither_key_nor_passphrase_is_written_to_the_file(tmp_path):
    path = tmp_path / "k.db"
    with DeviceStore(path, key=KEY, create=True) as store:
        fill(store)
    with DeviceStore(tmp_path / "p.db", passphrase="s3cret-passphrase", create=True) as store:
        fill(store)
    assert KEY not in path.read_bytes()
    assert b"s3cret-passphrase" not in (tmp_path / "p.db").read_bytes()
    with pytest.raises(ValueError, match="exactly one"):
        DeviceStore(path)
    with pytest.raises(ValueError, match="32 bytes"):
        DeviceStore(path, key=b"short")


# ---- freshness and completeness: what someone with the device's disk tries ---------------
def test_a_row_put_back_from_an_earlier_write_is_a_rollback(tmp_path):
    from fedrec.client.store import RolledBackError

    path = tmp_path / "r.db"
    with DeviceStore(path, key=KEY, create=True) as store:
        store.put("user", np.zeros(4, np.float32))
        (old,) = _raw(path).execute("SELECT sealed FROM state WHERE name='user'").fetchone()
        store.put("user", np.ones(4, np.float32))
    db = _raw(path)
    db.execute("UPDATE state SET sealed = ? WHERE name = 'user'", (old,))
    db.close()
    with DeviceStore(path, key=KEY) as store, pytest.raises(
            RolledBackError, match=r"state:user is an earlier write"):
        store.get("user")


def test_the_manifest_put_back_from_an_earlier_write_is_a_rollback(tmp_path):
    from fedrec.client.store import RolledBackError

    path = tmp_path / "m.db"
    with DeviceStore(path, key=KEY, create=True) as store:
        fill(store, 3)
        store.put("user", np.zeros(4, np.float32))
        (old,) = _raw(path).execute("SELECT value FROM meta WHERE name='manifest'").fetchone()
        fill(store, 2, start=3)
        store.put("user", np.ones(4, np.float32))
    db = _raw(path)
    db.execute("UPDATE meta SET value = ? WHERE name = 'manifest'", (old,))
    db.close()
    with DeviceStore(path, key=KEY) as store:
        with pytest.raises(RolledBackError, match="events the manifest does not"):
            store.events()
        with pytest.raises(RolledBackError, match="manifest was rolled back"):
            store.get("user")


def test_the_whole_file_put_back_is_caught_with_the_generation_the_app_kept(tmp_path):
    from fedrec.client.store import RolledBackError

    path = tmp_path / "w.db"
    with DeviceStore(path, key=KEY, create=True) as store:
        fill(store, 2)
    copy = path.read_bytes()  # (the WAL was checkpointed on close)
    with DeviceStore(path, key=KEY) as store:
        fill(store, 2, start=2)
        seen = store.generation
    assert seen == 2
    path.write_bytes(copy)
    with pytest.raises(RolledBackError, match="generation 1, older than the 2"):
        DeviceStore(path, key=KEY, min_generation=seen)
    with DeviceStore(path, key=KEY) as store:  # (without it, nothing inside can tell)
        assert len(store) == 2


@pytest.mark.parametrize("which", [1, 3, 5])
def test_a_deleted_event_is_named(tmp_path, which):
    from fedrec.client.store import MissingDataError

    path = tmp_path / "d.db"
    with DeviceStore(path, key=KEY, create=True) as store:
        fill(store, 5)
    db = _raw(path)
    db.execute("DELETE FROM events WHERE id = ?", (which,))
    db.close()
    with DeviceStore(path, key=KEY) as store:
        with pytest.raises(MissingDataError, match=rf"1 of 5 events were deleted \(ids {which}\)"):
            store.events()
        with pytest.raises(MissingDataError):
            len(store)
        if which == 5:  # the last one: an append sees it too, and writes nothing
            with pytest.raises(MissingDataError):
                fill(store, 1, start=5)


def test_a_deleted_state_entry_or_manifest_is_named(tmp_path):
    from fedrec.client.store import MissingDataError

    path = tmp_path / "s.db"
    with DeviceStore(path, key=KEY, create=True) as store:
        store.put("user", np.ones(3, np.float32))
    db = _raw(path)
    db.execute("DELETE FROM state WHERE name = 'user'")
    db.close()
    with DeviceStore(path, key=KEY) as store, pytest.raises(
            MissingDataError, match="state:user was written"):
        store.get("user")
    db = _raw(path)
    db.execute("DELETE FROM meta WHERE name = 'manifest'")
    db.close()
    with pytest.raises(MissingDataError, match="manifest is gone"):
        DeviceStore(path, key=KEY)


def test_a_row_from_another_store_under_the_same_key_is_foreign(tmp_path):
    from fedrec.client.store import ForeignRowError

    mine, theirs = tmp_path / "mine.db", tmp_path / "theirs.db"
    for path, value in ((mine, 0.0), (theirs, 9.0)):
        with DeviceStore(path, key=KEY, create=True) as store:
            fill(store, 3)
            store.put("user", np.full(4, value, np.float32))
    db = _raw(theirs)
    user = db.execute("SELECT sealed FROM state WHERE name = 'user'").fetchone()[0]
    event = db.execute("SELECT sealed FROM events WHERE id = 2").fetchone()[0]
    db.close()
    db = _raw(mine)
    db.execute("UPDATE state SET sealed = ? WHERE name = 'user'", (user,))
    db.execute("UPDATE events SET sealed = ? WHERE id = 2", (event,))
    db.close()
    with DeviceStore(mine, key=KEY) as store:
        with pytest.raises(ForeignRowError, match="state:user was sealed by another store"):
            store.get("user")
        with pytest.raises(ForeignRowError, match="events:2 was sealed by another store"):
            store.events()


def test_no_store_is_made_unless_asked(tmp_path):
    from fedrec.client.store import StoreNotFoundError

    with pytest.raises(StoreNotFoundError, match=r"typo\.db: no store here"):
        DeviceStore(tmp_path / "typo.db", key=KEY)
    assert not (tmp_path / "typo.db").exists()
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with pytest.raises(CorruptStoreError, match="empty"):
        DeviceStore(empty, key=KEY)
    with DeviceStore(empty, key=KEY, create=True) as store:  # asked: made in its place
        assert len(store) == 0
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE x (y)").connection.close()
    with pytest.raises(CorruptStoreError, match="not a fedrec store"):
        DeviceStore(other, key=KEY)


def test_random_damage_is_always_a_store_error(tmp_path):
    """Flip bytes anywhere in a store: opening and reading it raises a StoreError subclass
    (or reads what was written), never KeyError, TypeError or ValueError."""
    from fedrec.client.store import StoreError

    path = tmp_path / "f.db"
    with DeviceStore(path, key=KEY, create=True) as store:
        fill(store, 20)
        store.put("user", np.arange(6, dtype=np.float32))
        expected = store.events()
    original = path.read_bytes()
    rng = np.random.default_rng(1)
    outcomes = {"refused": 0, "intact": 0}
    for pos in rng.choice(len(original), 150, replace=False):
        damaged = bytearray(original)
        damaged[pos] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(damaged))
        for extra in path.parent.glob("f.db-*"):
            extra.unlink()
        try:
            with DeviceStore(path, key=KEY) as store:
                events, user = store.events(), store.get("user")
        except StoreError:
            outcomes["refused"] += 1
            continue
        assert all(np.array_equal(events[k], expected[k]) for k in expected)
        np.testing.assert_array_equal(user, np.arange(6, dtype=np.float32))
        outcomes["intact"] += 1
    assert outcomes["refused"] > 0


def test_a_format_1_store_is_upgraded_only_when_asked_and_keeps_everything(tmp_path):
    import os
    import struct

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    path = tmp_path / "v1.db"
    aead = AESGCM(KEY)

    def seal(plain, where):
        nonce = os.urandom(12)
        return nonce + aead.encrypt(nonce, plain, where)

    db = _raw(path)
    db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)")
    db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, sealed BLOB NOT NULL)")
    db.execute("CREATE TABLE state (name TEXT PRIMARY KEY, sealed BLOB NOT NULL)")
    db.executemany("INSERT INTO meta VALUES (?, ?)", [
        ("format", b"fedrec-store-1"), ("salt", os.urandom(16)),
        ("kdf", struct.pack("<III", 2**15, 8, 1)),
        ("check", seal(b"fedrec-store-1", b"meta:check"))])
    event = struct.pack("<qbfq", 7, 2, 1.0, 1_700_000_000)
    db.execute("INSERT INTO events VALUES (1, ?)", (seal(event, b"events:1"),))
    import io
    buf = io.BytesIO()
    np.save(buf, np.ones(3, np.float32))
    db.execute("INSERT INTO state VALUES ('user', ?)", (seal(buf.getvalue(), b"state:user"),))
    db.close()
    with pytest.raises(CorruptStoreError, match=r"format-1 store.*upgrade=True"):
        DeviceStore(path, key=KEY)
    DeviceStore(path, key=KEY, upgrade=True).close()
    with DeviceStore(path, key=KEY) as store:
        assert store.events()["item"].tolist() == [7]
        np.testing.assert_array_equal(store.get("user"), np.ones(3, np.float32))


def test_the_readme_s_online_backup_keeps_the_wal_s_last_commits(tmp_path):
    path, copy = tmp_path / "live.db", tmp_path / "backup.db"
    with DeviceStore(path, key=KEY, create=True) as store:
        fill(store, 7)
        store.put("user", np.ones(3, np.float32))
        assert (tmp_path / "live.db-wal").stat().st_size > 0  # commits still in the WAL
        source, target = sqlite3.connect(path), sqlite3.connect(copy)
        source.backup(target)
        target.close()
        source.close()
        generation = store.generation
    with DeviceStore(copy, key=KEY, min_generation=generation) as restored:
        assert len(restored) == 7
        np.testing.assert_array_equal(restored.get("user"), np.ones(3, np.float32))
