"""The device's encrypted store: its events and its private state in SQLite, every payload
sealed with AES-256-GCM, and the whole store's freshness and completeness checked.

* The key is the app's (32 bytes from its keystore) or derived from a passphrase with
  scrypt; only the scrypt salt and parameters are stored, never the key.
* Every row is sealed with a fresh 96-bit nonce and authenticated together with the store's
  random id, where it lives (table and row id, or state name) and its write counter, so a
  changed, swapped or moved row fails to open and is reported by name.
* A sealed *manifest*, rewritten in the same transaction as every write, records how many
  events the store holds and each state entry's last write counter. Against it:
  a row put back from an earlier write is :class:`RolledBackError`; a deleted event or
  state entry is :class:`MissingDataError`; a row sealed by another store under the same
  key is :class:`ForeignRowError`. Its ``generation`` counts the store's writes: an app that
  keeps it elsewhere (its keystore) and passes ``min_generation`` on open also detects the
  whole file put back to an earlier copy, which nothing inside a file can.
* A known value sealed at creation tells a wrong key apart from a damaged row.
* A store is created only when asked (``create=True``): a mistyped path, a missing or a
  zero-byte file is a :class:`StoreNotFoundError` or :class:`CorruptStoreError`, never a
  new empty store.
* Writes are SQLite transactions (WAL journal, so an app and a Flower SuperNode can share
  the file); reads see one consistent snapshot. A batch is stored whole or not at all.

Every failure is a :class:`StoreError` subclass whose message names the file and what is
wrong. Events are ``(item, event type, value, timestamp)``; state entries are numpy arrays
(the user vector) stored as ``.npy`` bytes, never pickled.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from fedrec.common.keyfile import read_key_file

__all__ = ["CorruptStoreError", "DeviceStore", "ForeignRowError", "MissingDataError",
           "RolledBackError", "StoreError", "StoreNotFoundError", "TamperedError",
           "WrongKeyError", "derive_key", "read_key_file"]

FORMAT = b"fedrec-store-2"
FORMAT_1 = b"fedrec-store-1"  # before store ids and the manifest: opened with upgrade=True
_EVENT = struct.Struct("<qbfq")  # item, event type, value, timestamp
_NONCE = 12
_ID = 16  # bytes of the store's random id
_HEAD = struct.Struct(">16sQ")  # a sealed row starts with the store's id and its counter
SCRYPT = {"n": 2**15, "r": 8, "p": 1}
# What SQLite raises on a damaged file (a damaged schema's text fails to decode).
_DAMAGE = (sqlite3.DatabaseError, UnicodeDecodeError)


class StoreError(Exception):
    """The store cannot be used; the message names the file and what is wrong."""


class WrongKeyError(StoreError):
    """The key (or passphrase) does not open this store."""


class TamperedError(StoreError):
    """A row failed authentication: it was changed, moved or damaged."""


class RolledBackError(TamperedError):
    """A row (or the manifest, or with ``min_generation`` the whole store) was put back to
    an earlier write."""


class MissingDataError(TamperedError):
    """Events or state entries the store wrote are gone."""


class ForeignRowError(TamperedError):
    """A row was sealed by another store (under the same key) and put into this one."""


class CorruptStoreError(StoreError):
    """The file is not a readable fedrec store (truncated, overwritten, empty, not SQLite)."""


class StoreNotFoundError(StoreError):
    """There is no store at the path, and creating one was not asked for."""


def derive_key(passphrase: str, salt: bytes, n: int = SCRYPT["n"], r: int = SCRYPT["r"],
               p: int = SCRYPT["p"]) -> bytes:
    """A 32-byte key from a passphrase (scrypt)."""
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


class DeviceStore:
    """An encrypted, append-mostly store of one device's events and state.

    Open with ``key=`` (32 bytes) or ``passphrase=``; ``create=True`` makes a new store when
    there is none (and only then). Every commit is atomic. By default SQLite's WAL is
    synced to disk at checkpoints (``synchronous=NORMAL``, what SQLite advises for WAL): a
    crash of the app loses nothing and never corrupts the file, a power cut may lose the
    last commits (the last events seen, a table the next sync sends again).
    ``durable=True`` syncs every commit (``FULL``), at about half a millisecond per event
    on this machine's disk. ``min_generation``: the :attr:`generation` the app saw last (a
    store older than that was rolled back whole). ``upgrade=True`` reseals a format-1 store
    (no store id, no manifest) under this format, trusting what it holds at that moment.
    """

    def __init__(self, path: str | Path, *, key: bytes | None = None,
                 passphrase: str | None = None, create: bool = False, timeout: float = 30.0,
                 durable: bool = False, min_generation: int = 0,
                 upgrade: bool = False) -> None:
        if (key is None) == (passphrase is None):
            raise ValueError("give exactly one of key or passphrase")
        if key is not None and len(key) != 32:
            raise ValueError(f"key must be 32 bytes (AES-256). Found {len(key)}.")
        self.path = Path(path)
        exists = self.path.exists()
        if not exists and not create:
            raise StoreNotFoundError(f"{self.path}: no store here (create=True makes one)")
        if exists and self.path.is_file() and self.path.stat().st_size == 0 and not create:
            raise CorruptStoreError(f"{self.path}: the file is empty (zero bytes), not a "
                                    "store (create=True makes a new one in its place)")
        try:
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            with self._transaction():
                tables = {r[0] for r in self._db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
                if not tables and not create:
                    raise CorruptStoreError(f"{self.path}: not a fedrec store (no tables)")
                self._db.execute("CREATE TABLE IF NOT EXISTS meta "
                                 "(name TEXT PRIMARY KEY, value BLOB NOT NULL)")
                self._db.execute("CREATE TABLE IF NOT EXISTS events "
                                 "(id INTEGER PRIMARY KEY, sealed BLOB NOT NULL)")
                self._db.execute("CREATE TABLE IF NOT EXISTS state "
                                 "(name TEXT PRIMARY KEY, sealed BLOB NOT NULL)")
                meta = dict(self._db.execute("SELECT name, value FROM meta"))
                if not meta:
                    if not create:
                        raise CorruptStoreError(f"{self.path}: not a fedrec store (no "
                                                "metadata)")
                    meta = self._create_meta(key, passphrase)
                self._open_meta(meta, key, passphrase, upgrade)
        except _DAMAGE as exc:
            self._close_quietly()
            raise CorruptStoreError(f"{self.path}: not a readable fedrec store ({exc})") \
                from exc
        except BaseException:
            self._close_quietly()
            raise
        if min_generation and self.generation < min_generation:
            generation = self.generation
            self.close()
            raise RolledBackError(f"{self.path}: the store is at generation {generation}, "
                                  f"older than the {min_generation} the app saw: the whole "
                                  "file was put back to an earlier copy")

    def _close_quietly(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()

    def _create_meta(self, key: bytes | None, passphrase: str | None) -> dict:
        salt = os.urandom(16)
        if passphrase is not None:
            key = derive_key(passphrase, salt)
        store_id = os.urandom(_ID)
        aead = AESGCM(key)
        nonce = os.urandom(_NONCE)
        check = nonce + aead.encrypt(nonce, FORMAT, b"meta:check|" + store_id)
        meta = {"format": FORMAT, "salt": salt,
                "kdf": struct.pack("<III", SCRYPT["n"], SCRYPT["r"], SCRYPT["p"]),
                "store-id": store_id, "check": check}
        self._db.executemany("INSERT INTO meta (name, value) VALUES (?, ?)", meta.items())
        self._aead, self._id = aead, store_id
        self._write_manifest({"generation": 0, "events": 0, "state": {}})
        return dict(self._db.execute("SELECT name, value FROM meta"))

    def _open_meta(self, meta: dict, key: bytes | None, passphrase: str | None,
                   upgrade: bool) -> None:
        fmt = meta.get("format")
        if fmt == FORMAT_1:
            if not upgrade:
                raise CorruptStoreError(f"{self.path}: a format-1 store (before freshness "
                                        "protection); open it once with upgrade=True")
        elif fmt != FORMAT:
            raise CorruptStoreError(f"{self.path}: unknown store format {fmt!r}")
        try:
            salt, kdf, check = bytes(meta["salt"]), bytes(meta["kdf"]), bytes(meta["check"])
            n, r, p = struct.unpack("<III", kdf)
        except (KeyError, TypeError, struct.error) as exc:
            raise CorruptStoreError(f"{self.path}: damaged metadata ({exc})") from None
        if passphrase is not None:
            if not (2 <= n <= 2**22 and 1 <= r <= 64 and 1 <= p <= 16) or n & (n - 1):
                raise CorruptStoreError(f"{self.path}: damaged key-derivation settings")
            key = derive_key(passphrase, salt, n, r, p)
        self._aead = AESGCM(key)
        if fmt == FORMAT_1:
            self._upgrade(check)
            return
        store_id = meta.get("store-id")
        if not isinstance(store_id, bytes) or len(store_id) != _ID:
            raise CorruptStoreError(f"{self.path}: damaged metadata (store id)")
        self._id = store_id
        try:
            self._aead.decrypt(check[:_NONCE], check[_NONCE:], b"meta:check|" + store_id)
        except InvalidTag:
            raise WrongKeyError(f"{self.path}: the key does not open this store (or its "
                                "metadata was changed)") from None
        self._read_manifest()  # a damaged or missing manifest is reported at open

    # ---- sealing ---------------------------------------------------------------------------
    def _aad(self, where: bytes, counter: int) -> bytes:
        return b"%s|%s|%d" % (self._id, where, counter)

    def _seal(self, plain: bytes, where: bytes, counter: int = 0) -> bytes:
        nonce = os.urandom(_NONCE)
        return (_HEAD.pack(self._id, counter) + nonce
                + self._aead.encrypt(nonce, plain, self._aad(where, counter)))

    def _open(self, sealed: bytes, where: bytes, expected: int | None = None) -> bytes:
        """The plaintext of a row sealed at ``where``; ``expected`` is the write counter
        the manifest records for it (None: any, an event's counter is its id)."""
        name = where.decode("utf-8", "replace")
        if not isinstance(sealed, bytes) or len(sealed) < _HEAD.size + _NONCE + 16:
            raise TamperedError(f"{self.path}: {name} is damaged (too short)")
        store_id, counter = _HEAD.unpack_from(sealed)
        if store_id != self._id:
            raise ForeignRowError(f"{self.path}: {name} was sealed by another store and "
                                  "put into this one")
        if expected is not None and counter != expected:
            if counter < expected:
                raise RolledBackError(f"{self.path}: {name} is an earlier write (#{counter})"
                                      f" than the store's last (#{expected}): rolled back")
            raise RolledBackError(f"{self.path}: {name} is newer (#{counter}) than the "
                                  f"store's manifest says (#{expected}): the manifest was "
                                  "rolled back")
        body = memoryview(sealed)[_HEAD.size:]  # (no copy of a large table's bytes)
        try:
            return self._aead.decrypt(bytes(body[:_NONCE]), body[_NONCE:],
                                      self._aad(where, counter))
        except InvalidTag:
            raise TamperedError(f"{self.path}: {name} failed authentication "
                                "(changed, moved or damaged)") from None

    # ---- the manifest ------------------------------------------------------------------------
    def _read_manifest(self) -> dict:
        rows = self._query("SELECT value FROM meta WHERE name = 'manifest'")
        if not rows:
            raise MissingDataError(f"{self.path}: the store's manifest is gone")
        plain = self._open(rows[0][0], b"meta:manifest")
        try:
            manifest = json.loads(plain)
            generation, events = int(manifest["generation"]), int(manifest["events"])
            state = {str(k): int(v) for k, v in manifest["state"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptStoreError(f"{self.path}: damaged manifest ({exc})") from None
        if generation < 0 or events < 0:
            raise CorruptStoreError(f"{self.path}: damaged manifest (negative counts)")
        return {"generation": generation, "events": events, "state": state}

    def _write_manifest(self, manifest: dict) -> None:
        sealed = self._seal(json.dumps(manifest).encode(), b"meta:manifest",
                            manifest["generation"])
        self._db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('manifest', ?)",
                         (sealed,))

    @property
    def generation(self) -> int:
        """How many write transactions the store has committed (keep it to detect a whole
        file put back later: ``min_generation``)."""
        with self._snapshot():
            return self._read_manifest()["generation"]

    # ---- transactions ------------------------------------------------------------------------
    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """One consistent view for a read of several statements (another connection may
        commit in between otherwise)."""
        try:
            self._db.execute("BEGIN")
        except _DAMAGE as exc:
            raise CorruptStoreError(f"{self.path}: could not read ({exc})") from exc
        try:
            yield
        finally:
            try:
                self._db.execute("COMMIT")
            except _DAMAGE as exc:
                raise CorruptStoreError(f"{self.path}: could not read ({exc})") from exc

    @contextmanager
    def _writing(self) -> Iterator[dict]:
        """A write transaction with the manifest read at its start and written, one
        generation on, at its end."""
        try:
            with self._transaction():
                manifest = self._read_manifest()
                yield manifest
                manifest["generation"] += 1
                self._write_manifest(manifest)
        except _DAMAGE as exc:
            raise CorruptStoreError(f"{self.path}: could not write ({exc})") from exc

    def _query(self, sql: str, args: tuple = ()) -> list:
        try:
            return self._db.execute(sql, args).fetchall()
        except _DAMAGE as exc:
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
        with self._writing() as manifest:
            last = manifest["events"]
            self._check_events(last, full=False)
            ids = np.arange(last + 1, last + 1 + n, dtype=np.int64)
            rows = [(int(i), self._seal(_EVENT.pack(int(it), int(ev), float(va), int(ts)),
                                        b"events:%d" % i, int(i)))
                    for i, it, ev, va, ts in zip(ids, items, events, values, timestamps,
                                                 strict=True)]
            self._db.executemany("INSERT INTO events (id, sealed) VALUES (?, ?)", rows)
            manifest["events"] = last + n
            for name, array in (state or {}).items():
                self._put(manifest, name, array)
        return ids

    def _check_events(self, expected: int, full: bool = True) -> None:
        """The events table holds exactly ids 1..``expected``, as the manifest says (with
        ``full=False`` only its last id, which costs no scan: what an append checks)."""
        if full:
            count, top = self._query("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM events")[0]
        else:
            top = self._query("SELECT COALESCE(MAX(id), 0) FROM events")[0][0]
            count = expected if top == expected else top
        if type(count) is not int or type(top) is not int:
            raise CorruptStoreError(f"{self.path}: damaged events table")
        if count == expected and top == expected:
            return
        if top > expected or count > expected:
            raise RolledBackError(f"{self.path}: the store holds events the manifest does "
                                  f"not ({count} rows up to id {top}, manifest {expected}): "
                                  "the manifest was rolled back, or events were inserted")
        missing = self._missing_events(expected)
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise MissingDataError(f"{self.path}: {len(missing)} of {expected} events were "
                               f"deleted (ids {shown})")

    def _missing_events(self, expected: int) -> list[int]:
        present = [r[0] for r in self._query("SELECT id FROM events")]
        if not all(type(i) is int for i in present):
            raise CorruptStoreError(f"{self.path}: damaged events table (an id is not a "
                                    "number)")
        return np.setdiff1d(np.arange(1, expected + 1), np.array(present, np.int64)).tolist()

    def events(self, after: int = 0) -> dict[str, np.ndarray]:
        """Events with row id > ``after``, in id order: ``id, item, event, value, time``."""
        with self._snapshot():
            self._check_events(self._read_manifest()["events"])
            rows = self._query("SELECT id, sealed FROM events WHERE id > ? ORDER BY id",
                               (int(after),))
        if not all(type(i) is int for i, _ in rows):
            raise CorruptStoreError(f"{self.path}: damaged events table (an id is not a "
                                    "number)")
        fields = [_EVENT.unpack(self._open(sealed, b"events:%d" % i)) for i, sealed in rows]
        cols = list(zip(*fields, strict=True)) if fields else [(), (), (), ()]
        return {"id": np.array([i for i, _ in rows], dtype=np.int64),
                "item": np.array(cols[0], dtype=np.int64),
                "event": np.array(cols[1], dtype=np.int8),
                "value": np.array(cols[2], dtype=np.float32),
                "time": np.array(cols[3], dtype=np.int64)}

    def __len__(self) -> int:
        with self._snapshot():
            expected = self._read_manifest()["events"]
            self._check_events(expected)
        return expected

    # ---- state -------------------------------------------------------------------------------
    def put(self, name: str, array: np.ndarray) -> None:
        """Store (or replace) a named array, such as the user vector."""
        self.put_many({name: array})

    def put_many(self, arrays: dict[str, np.ndarray]) -> None:
        """Store (or replace) several named arrays in one transaction: all or none."""
        with self._writing() as manifest:
            for name, array in arrays.items():
                self._put(manifest, name, array)

    def _put(self, manifest: dict, name: str, array: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, np.asarray(array), allow_pickle=False)
        counter = manifest["state"].get(name, 0) + 1
        sealed = self._seal(buf.getvalue(), b"state:" + name.encode("utf-8"), counter)
        self._db.execute("INSERT OR REPLACE INTO state (name, sealed) VALUES (?, ?)",
                         (name, sealed))
        manifest["state"][name] = counter

    def get(self, name: str) -> np.ndarray | None:
        """A named array, or None if it was never stored."""
        with self._snapshot():
            expected = self._read_manifest()["state"].get(name)
            rows = self._query("SELECT sealed FROM state WHERE name = ?", (name,))
        where = b"state:" + name.encode("utf-8")
        if not rows:
            if expected is not None:
                raise MissingDataError(f"{self.path}: state:{name} was written "
                                       f"({expected} times) and is gone")
            return None
        if expected is None:
            store_id = rows[0][0][:_ID] if isinstance(rows[0][0], bytes) else b""
            if store_id != self._id:
                raise ForeignRowError(f"{self.path}: state:{name} was sealed by another "
                                      "store and put into this one")
            raise TamperedError(f"{self.path}: state:{name} is not in the store's manifest "
                                "(moved from another name, or the manifest was rolled back)")
        plain = self._open(rows[0][0], where, expected)
        try:
            return np.load(io.BytesIO(plain), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise CorruptStoreError(f"{self.path}: state:{name} holds no array ({exc})") \
                from None

    # ---- format 1 ------------------------------------------------------------------------------
    def _upgrade(self, check: bytes) -> None:
        """Reseal a format-1 store (rows bound only to their place) under this format."""
        try:
            self._aead.decrypt(check[:_NONCE], check[_NONCE:], b"meta:check")
        except InvalidTag:
            raise WrongKeyError(f"{self.path}: the key does not open this store") from None

        def old(sealed: bytes, where: bytes) -> bytes:
            try:
                return self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], where)
            except InvalidTag:
                raise TamperedError(f"{self.path}: {where.decode()} failed authentication "
                                    "(changed, moved or damaged)") from None

        events = self._db.execute("SELECT id, sealed FROM events ORDER BY id").fetchall()
        state = self._db.execute("SELECT name, sealed FROM state").fetchall()
        if [i for i, _ in events] != list(range(1, len(events) + 1)):
            raise MissingDataError(f"{self.path}: events are missing; not upgraded")
        plain_events = [(i, old(s, b"events:%d" % i)) for i, s in events]
        plain_state = [(n, old(s, b"state:" + n.encode("utf-8"))) for n, s in state]
        self._id = os.urandom(_ID)
        nonce = os.urandom(_NONCE)
        check = nonce + self._aead.encrypt(nonce, FORMAT, b"meta:check|" + self._id)
        self._db.executemany("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)",
                             [("format", FORMAT), ("store-id", self._id), ("check", check)])
        self._db.executemany("UPDATE events SET sealed = ? WHERE id = ?",
                             [(self._seal(p, b"events:%d" % i, i), i) for i, p in plain_events])
        self._db.executemany("UPDATE state SET sealed = ? WHERE name = ?",
                             [(self._seal(p, b"state:" + n.encode("utf-8"), 1), n)
                              for n, p in plain_state])
        self._write_manifest({"generation": 1, "events": len(events),
                              "state": {n: 1 for n, _ in plain_state}})

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
