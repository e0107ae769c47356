"""The device's encrypted store: its events and its private state in SQLite, every payload
sealed with AES-256-GCM.

* The key is the app's (32 bytes from its keystore) or derived from a passphrase with
  scrypt; only the scrypt salt and parameters are stored, never the key.
* Every row is sealed with a fresh 96-bit nonce and authenticated together with where it
  lives (table and row id, or state name), so a changed, swapped or replayed row fails to
  open and is reported by name: tampering is never silently accepted.
* A known value sealed at creation tells a wrong key apart from a damaged row.
* Writes are SQLite transactions (WAL journal, so an app and a Flower SuperNode can share
  the file): a batch is stored whole or not at all.

Events are ``(item, event type, value, timestamp)``; state entries are numpy arrays (the
user vector) stored as ``.npy`` bytes, never pickled.
"""

from __future__ import annotations

import io
import os
import sqlite3
import struct
from pathlib import Path

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from fedrec.common.keyfile import read_key_file

__all__ = ["CorruptStoreError", "DeviceStore", "StoreError", "TamperedError", "WrongKeyError",
           "derive_key", "read_key_file"]

FORMAT = b"fedrec-store-1"
_EVENT = struct.Struct("<qbfq")  # item, event type, value, timestamp
_NONCE = 12
SCRYPT = {"n": 2**15, "r": 8, "p": 1}


class StoreError(Exception):
    """The store cannot be used; the message names the file and what is wrong."""


class WrongKeyError(StoreError):
    """The key (or passphrase) does not open this store."""


class TamperedError(StoreError):
    """A row failed authentication: it was changed, moved or damaged."""


class CorruptStoreError(StoreError):
    """The file is not a readable fedrec store (truncated, overwritten, not SQLite)."""


def derive_key(passphrase: str, salt: bytes, n: int = SCRYPT["n"], r: int = SCRYPT["r"],
               p: int = SCRYPT["p"]) -> bytes:
    """A 32-byte key from a passphrase (scrypt)."""
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


class DeviceStore:
    """An encrypted, append-mostly store of one device's events and state.

    Open with ``key=`` (32 bytes) or ``passphrase=``; a new file is created on first open.
    Every commit is atomic. By default SQLite's WAL is synced to disk at checkpoints
    (``synchronous=NORMAL``, what SQLite advises for WAL): a crash of the app loses nothing and
    never corrupts the file, a power cut may lose the last commits (the last events seen, a
    table the next sync sends again). ``durable=True`` syncs every commit (``FULL``), at
    about half a millisecond per event on this machine's disk.
    """

    def __init__(self, path: str | Path, *, key: bytes | None = None,
                 passphrase: str | None = None, timeout: float = 30.0,
                 durable: bool = False) -> None:
        if (key is None) == (passphrase is None):
            raise ValueError("give exactly one of key or passphrase")
        if key is not None and len(key) != 32:
            raise ValueError(f"key must be 32 bytes (AES-256). Found {len(key)}.")
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            with self._transaction():
                self._db.execute("CREATE TABLE IF NOT EXISTS meta "
                                 "(name TEXT PRIMARY KEY, value BLOB NOT NULL)")
                self._db.execute("CREATE TABLE IF NOT EXISTS events "
                                 "(id INTEGER PRIMARY KEY, sealed BLOB NOT NULL)")
                self._db.execute("CREATE TABLE IF NOT EXISTS state "
                                 "(name TEXT PRIMARY KEY, sealed BLOB NOT NULL)")
                meta = dict(self._db.execute("SELECT name, value FROM meta"))
                if not meta:
                    meta = self._create_meta(key, passphrase)
        except sqlite3.DatabaseError as exc:
            raise CorruptStoreError(f"{self.path}: not a readable fedrec store ({exc})") \
                from exc
        if meta.get("format") != FORMAT:
            raise CorruptStoreError(f"{self.path}: unknown store format "
                                    f"{meta.get('format')!r}")
        if passphrase is not None:
            n, r, p = struct.unpack("<III", meta["kdf"])
            key = derive_key(passphrase, meta["salt"], n, r, p)
        self._aead = AESGCM(key)
        try:
            self._open(meta["check"], b"meta:check")
        except TamperedError:
            raise WrongKeyError(f"{self.path}: the key does not open this store") from None

    def _create_meta(self, key: bytes | None, passphrase: str | None) -> dict:
        salt = os.urandom(16)
        if passphrase is not None:
            key = derive_key(passphrase, salt)
        aead = AESGCM(key)
        nonce = os.urandom(_NONCE)
        check = nonce + aead.encrypt(nonce, FORMAT, b"meta:check")
        meta = {"format": FORMAT, "salt": salt,
                "kdf": struct.pack("<III", SCRYPT["n"], SCRYPT["r"], SCRYPT["p"]),
                "check": check}
        self._db.executemany("INSERT INTO meta (name, value) VALUES (?, ?)", meta.items())
        return meta

    # ---- sealing ---------------------------------------------------------------------------
    def _seal(self, plain: bytes, where: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, plain, where)

    def _open(self, sealed: bytes, where: bytes) -> bytes:
        try:
            return self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], where)
        except InvalidTag:
            raise TamperedError(f"{self.path}: {where.decode()} failed authentication "
                                "(changed, moved or damaged)") from None

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def _query(self, sql: str, args: tuple = ()) -> list:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise CorruptStoreError(f"{self.path}: could not read ({exc})") from exc

    # ---- events ------------------------------------------------------------------------------
    def append(self, items: np.ndarray, events: np.ndarray, values: np.ndarray,
               timestamps: np.ndarray, state: dict[str, np.ndarray] | None = None
               ) -> np.ndarray:
        """Store a batch of events (all or nothing), and with ``state`` named arrays in the
        same transaction (an event and the user vector it moved); returns the events' ids."""
        items = np.asarray(items, dtype=np.int64)
        events = np.asarray(events, dtype=np.int8)
        values = np.asarray(values, dtype=np.float32)
        timestamps = np.asarray(timestamps, dtype=np.int64)
        n = len(items)
        if not (len(events) == len(values) == len(timestamps) == n):
            raise ValueError("items, events, values and timestamps must have the same length")
        if n and (items.min() < 0 or not np.isfinite(values).all()):
            raise ValueError("items must be >= 0 and values finite")
        try:
            with self._transaction():
                last = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
                ids = np.arange(last + 1, last + 1 + n, dtype=np.int64)
                rows = [(int(i), self._seal(_EVENT.pack(int(it), int(ev), float(va), int(ts)),
                                            b"events:%d" % i))
                        for i, it, ev, va, ts in zip(ids, items, events, values, timestamps,
                                                     strict=True)]
                self._db.executemany("INSERT INTO events (id, sealed) VALUES (?, ?)", rows)
                for name, array in (state or {}).items():
                    self._put(name, array)
        except sqlite3.DatabaseError as exc:
            raise CorruptStoreError(f"{self.path}: could not write ({exc})") from exc
        return ids

    def events(self, after: int = 0) -> dict[str, np.ndarray]:
        """Events with row id > ``after``, in id order: ``id, item, event, value, time``."""
        rows = self._query("SELECT id, sealed FROM events WHERE id > ? ORDER BY id",
                           (int(after),))
        fields = [_EVENT.unpack(self._open(sealed, b"events:%d" % i)) for i, sealed in rows]
        cols = list(zip(*fields, strict=True)) if fields else [(), (), (), ()]
        return {"id": np.array([i for i, _ in rows], dtype=np.int64),
                "item": np.array(cols[0], dtype=np.int64),
                "event": np.array(cols[1], dtype=np.int8),
                "value": np.array(cols[2], dtype=np.float32),
                "time": np.array(cols[3], dtype=np.int64)}

    def __len__(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM events")[0][0])

    # ---- state -------------------------------------------------------------------------------
    def put(self, name: str, array: np.ndarray) -> None:
        """Store (or replace) a named array, such as the user vector."""
        self.put_many({name: array})

    def put_many(self, arrays: dict[str, np.ndarray]) -> None:
        """Store (or replace) several named arrays in one transaction: all or none."""
        try:
            with self._transaction():
                for name, array in arrays.items():
                    self._put(name, array)
        except sqlite3.DatabaseError as exc:
            raise CorruptStoreError(f"{self.path}: could not write ({exc})") from exc

    def _put(self, name: str, array: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, np.asarray(array), allow_pickle=False)
        sealed = self._seal(buf.getvalue(), b"state:" + name.encode("utf-8"))
        self._db.execute("INSERT OR REPLACE INTO state (name, sealed) VALUES (?, ?)",
                         (name, sealed))

    def get(self, name: str) -> np.ndarray | None:
        """A named array, or None if it was never stored."""
        rows = self._query("SELECT sealed FROM state WHERE name = ?", (name,))
        if not rows:
            return None
        plain = self._open(rows[0][0], b"state:" + name.encode("utf-8"))
        return np.load(io.BytesIO(plain), allow_pickle=False)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> DeviceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, or ``ROLLBACK`` on any error (autocommit mode)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: type | None, *rest: object) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
