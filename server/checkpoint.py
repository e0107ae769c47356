"""The server's durable state: one SQLite file written in one transaction per round.

A :class:`Checkpoint` holds everything needed to resume training where it stopped: the item
table, each row's version, the server optimiser's per-row state, μ, the last round applied
and the run's history. :meth:`Checkpoint.save` replaces all of it in a single SQLite
transaction (rollback journal, ``synchronous=FULL``): after a crash at any point, the file
holds either the previous round's state or the new one, never a mix. Arrays are stored as
``.npy`` bytes and read back without unpickling.

A new run, or the same run restarted after a crash, loads the checkpoint and continues
with the next round: the updates applied in checkpointed rounds are all there, and none is
applied twice.
"""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import numpy as np

from fedrec.server.item_model import ItemModel

FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


class Checkpoint:
    """The item model and run history of one training, in SQLite at ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE IF NOT EXISTS arrays (name TEXT PRIMARY KEY, npy BLOB)")
        conn.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
        return conn

    def save(self, model: ItemModel, server_round: int, history: list[dict],
             run: dict | None = None) -> None:
        """Replace the stored state with ``model`` after ``server_round``, atomically."""
        arrays, meta = model.state()
        meta = {**meta, "format": FORMAT, "server-round": int(server_round),
                "history": history, "run": run or {}}
        blobs = [(name, _npy(value)) for name, value in arrays.items()]
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM arrays")
                conn.execute("DELETE FROM meta")
                conn.executemany("INSERT INTO arrays VALUES (?, ?)", blobs)
                conn.executemany("INSERT INTO meta VALUES (?, ?)",
                                 [(k, json.dumps(v)) for k, v in meta.items()])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()

    def load(self) -> tuple[ItemModel, int, list[dict], dict] | None:
        """``(model, last round, history, run)``, or None when there is no checkpoint yet."""
        if not self.path.exists():
            return None
        try:
            conn = self._connect()
            try:
                rows = dict(conn.execute("SELECT name, npy FROM arrays").fetchall())
                meta = {k: json.loads(v)
                        for k, v in conn.execute("SELECT name, value FROM meta").fetchall()}
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            raise CheckpointError(f"{self.path}: not a readable checkpoint ({exc})") from exc
        if not rows and not meta:
            return None
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{self.path}: checkpoint format {meta.get('format')!r}, "
                                  f"expected {FORMAT}")
        try:
            arrays = {name: _array(blob) for name, blob in rows.items()}
            model = ItemModel.from_state(arrays, meta)
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{self.path}: inconsistent checkpoint ({exc})") from exc
        return model, int(meta["server-round"]), list(meta["history"]), dict(meta["run"])


def _npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, np.ascontiguousarray(array), allow_pickle=False)
    return out.getvalue()


def _array(blob: bytes) -> np.ndarray:
    return np.load(io.BytesIO(blob), allow_pickle=False)
