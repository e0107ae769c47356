"""The server's durable state: one SQLite file written in one transaction per round, sealed
with a digest (and the operator's MAC) and checked whole before anything in it is used.

A :class:`Checkpoint` holds everything needed to resume training where it stopped: the item
table, each row's version, the server optimiser's per-row state, μ, the last round applied,
the run's history and its state (delta sync's memory, privacy spend, early stopping's
rule and best table). :meth:`Checkpoint.save` replaces all of it in a single SQLite
transaction (rollback journal, ``synchronous=FULL``): after a crash at any point, the file
holds either the previous round's state or the new one, never a mix. Arrays are stored as
``.npy`` bytes and read back without unpickling.

The file is not trusted on load. Every array's bytes and every setting's text are covered
by a SHA-256 digest stored beside them, and, when the operator gives a key
(``checkpoint-key-file``), by an HMAC-SHA256 under that key: the digest catches damage
(a flipped bit, a truncated or half-written file), the MAC also catches a deliberate change
by someone who can write the file but does not hold the key. Then every value is checked:
finite arrays of consistent shapes, versions and rounds within range, a known step rule,
a finite positive learning rate. Whatever is wrong is a :class:`CheckpointError` naming the
file and the problem. A checkpoint file that exists but holds nothing (zero bytes, or
emptied) is an error too, unless the operator asks for a fresh start (``fresh=True``; the
old file is kept beside as ``NAME.before-fresh``).

A new run, or the same run restarted after a crash, loads the checkpoint and continues
with the next round: the updates applied in checkpointed rounds are all there, and none is
applied twice.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import math
import sqlite3
from itertools import pairwise
from pathlib import Path

import numpy as np

from fedrec.server.defences.window import MAX_WINDOW
from fedrec.server.item_model import ItemModel
from fedrec.server.layers import HeadLayer
from fedrec.server.neighbours import STATE as NEIGHBOUR_STATE
from fedrec.server.stopping import STATE as STOP_STATE

FORMAT = 2  # 2: sealed (digest, optional MAC). 1 had no seal and is refused.
_DOMAIN = b"fedrec-checkpoint-2\n"
RUN_ARRAY = "run/"  # the name prefix of the run's state arrays beside the model's
# The parts of the server that keep arrays in a checkpoint (``run/OWNER.FIELD``); an array
# under ``run/`` that none of them owns is refused on load, as an unknown model array is.
RUN_ARRAY_OWNERS = (STOP_STATE, NEIGHBOUR_STATE, HeadLayer.name)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


class Checkpoint:
    """The item model and run history of one training, in SQLite at ``path``.

    ``key`` (32 bytes, the operator's) adds a MAC on save and requires a valid one on load.
    ``fresh`` starts over whatever the file holds (kept aside at the first save).
    """

    def __init__(self, path: str | Path, key: bytes | None = None, fresh: bool = False
                 ) -> None:
        if key is not None and len(key) < 32:
            raise ValueError(f"a checkpoint key has at least 32 bytes. Found {len(key)}.")
        self.path = Path(path)
        self.key, self.fresh = key, fresh

    # ---- saving --------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        conn.execute("PRAGMA synchronous=FULL")
        for table in ("arrays (name TEXT PRIMARY KEY, npy BLOB NOT NULL)",
                      "meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
                      "seal (name TEXT PRIMARY KEY, value TEXT NOT NULL)"):
            conn.execute(f"CREATE TABLE IF NOT EXISTS {table}")
        return conn

    def save(self, model: ItemModel, server_round: int, history: list[dict],
             run: dict | None = None,
             arrays: dict[str, dict[str, np.ndarray]] | None = None) -> None:
        """Replace the stored state with ``model`` after ``server_round``, atomically.
        ``run``: the run's state entries (JSON); ``arrays``: its state arrays by owner (one
        of :data:`RUN_ARRAY_OWNERS`; early stopping's best table), given back by
        :meth:`load` the same way as ``run["arrays"]``."""
        unknown = sorted(set(arrays or {}) - set(RUN_ARRAY_OWNERS))
        if unknown:
            raise ValueError(f"run arrays of {', '.join(map(repr, unknown))}: a checkpoint "
                             f"keeps arrays of {', '.join(RUN_ARRAY_OWNERS)} only")
        if self.fresh:
            self._set_aside()
        model_arrays, meta = model.state()
        meta = {**meta, "format": FORMAT, "server-round": int(server_round),
                "history": history, "run": run or {}}
        blobs = {name: _npy(value) for name, value in model_arrays.items()}
        blobs.update({f"{RUN_ARRAY}{owner}.{name}": _npy(value)
                      for owner, owned in (arrays or {}).items()
                      for name, value in owned.items()})
        texts = {k: json.dumps(v) for k, v in meta.items()}
        seal = {"sha256": hashlib.sha256(_canonical(blobs, texts)).hexdigest()}
        if self.key is not None:
            seal["hmac-sha256"] = _mac(self.key, blobs, texts)
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for table in ("arrays", "meta", "seal"):
                    conn.execute(f"DELETE FROM {table}")
                conn.executemany("INSERT INTO arrays VALUES (?, ?)", blobs.items())
                conn.executemany("INSERT INTO meta VALUES (?, ?)", texts.items())
                conn.executemany("INSERT INTO seal VALUES (?, ?)", seal.items())
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()

    def _set_aside(self) -> None:
        """A fresh start keeps whatever the file held beside it, once."""
        if self.path.exists():
            self.path.replace(self.path.with_name(self.path.name + ".before-fresh"))
        self.fresh = False

    # ---- loading -------------------------------------------------------------------------
    def load(self) -> tuple[ItemModel, int, list[dict], dict] | None:
        """``(model, last round, history, run)``, or None when there is no checkpoint yet
        (no file, or a fresh start). Raises :class:`CheckpointError` for anything else
        that is not a whole, sealed, valid checkpoint."""
        if self.fresh or not self.path.exists():
            return None
        if self.path.stat().st_size == 0:
            raise self._error("the file is empty (zero bytes); to start over, ask for a "
                              "fresh start (checkpoint-fresh=true)")
        blobs, texts, seal = self._read()
        if not (blobs or texts or seal):
            raise self._error("the checkpoint holds nothing (emptied); to start over, ask "
                              "for a fresh start (checkpoint-fresh=true)")
        self._check_seal(blobs, texts, seal)
        try:
            meta = {k: json.loads(v) for k, v in texts.items()}
            arrays = {name: _array(blob) for name, blob in blobs.items()}
        except (ValueError, OSError, EOFError) as exc:
            raise self._error(f"inconsistent checkpoint ({exc})") from None
        if meta.get("format") != FORMAT:
            raise self._error(f"checkpoint format {meta.get('format')!r}, expected {FORMAT}")
        run_arrays: dict[str, dict[str, np.ndarray]] = {}
        for name in [n for n in arrays if n.startswith(RUN_ARRAY)]:
            owner, _, field = name[len(RUN_ARRAY):].partition(".")
            if owner not in RUN_ARRAY_OWNERS or not field:
                raise self._error(f"array {name!r} belongs to no part of the server's "
                                  f"state (it keeps {', '.join(RUN_ARRAY_OWNERS)})")
            run_arrays.setdefault(owner, {})[field] = arrays.pop(name)
        try:
            model = ItemModel.from_state(arrays, meta)
            server_round, history, run = _checked_meta(meta, model)
        except (KeyError, ValueError, TypeError) as exc:
            raise self._error(f"inconsistent checkpoint ({exc})") from None
        if run_arrays:
            run["arrays"] = run_arrays  # by owner (who checks them: EarlyStop.load)
        return model, server_round, history, run

    def _read(self) -> tuple[dict[str, bytes], dict[str, str], dict[str, str]]:
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30.0)
            try:
                tables = {row[0] for row in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
                out = []
                for table in ("arrays", "meta", "seal"):
                    rows = (conn.execute(f"SELECT * FROM {table}").fetchall()
                            if table in tables else [])
                    out.append(dict(rows))
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise self._error(f"not a readable checkpoint ({exc})") from None
        blobs, texts, seal = out
        for kind, table in (("array", blobs), ("setting", texts), ("seal", seal)):
            for name, value in table.items():
                want = bytes if kind == "array" else str
                if not isinstance(name, str) or not isinstance(value, want):
                    raise self._error(f"{kind} {name!r} is not what a checkpoint holds")
        return blobs, texts, seal

    def _check_seal(self, blobs: dict[str, bytes], texts: dict[str, str],
                    seal: dict[str, str]) -> None:
        if texts.get("format") == "1" and "sha256" not in seal:
            raise self._error("written by an older fedrec (format 1, unsealed): its content "
                              "cannot be checked; start fresh (checkpoint-fresh=true)")
        digest = seal.get("sha256")
        if digest is None:
            raise self._error("no digest: the checkpoint is incomplete or not fedrec's")
        actual = hashlib.sha256(_canonical(blobs, texts)).hexdigest()
        if not hmac.compare_digest(digest, actual):
            raise self._error("the digest does not match the content: the file was changed "
                              "or damaged after it was written")
        if self.key is not None:
            mac = seal.get("hmac-sha256")
            if mac is None:
                raise self._error("no MAC, but the operator's key is given: the checkpoint "
                                  "was written without it (or its MAC was removed)")
            if not hmac.compare_digest(mac, _mac(self.key, blobs, texts)):
                raise self._error("the MAC does not match: the content was changed by "
                                  "someone without the operator's key (or the key differs)")

    def _error(self, problem: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: {problem}")


def _canonical(blobs: dict[str, bytes], texts: dict[str, str]) -> bytes:
    """Every name and value, length-prefixed, in name order: what the seal covers."""
    parts = [_DOMAIN]
    for tag, table in ((b"A", blobs), (b"M", texts)):
        for name in sorted(table):
            value = table[name]
            raw = value if isinstance(value, bytes) else value.encode("utf-8")
            key = name.encode("utf-8")
            parts += [tag, len(key).to_bytes(8, "big"), key, len(raw).to_bytes(8, "big"), raw]
    return b"".join(parts)


def _mac(key: bytes, blobs: dict[str, bytes], texts: dict[str, str]) -> str:
    return hmac.new(key, _canonical(blobs, texts), hashlib.sha256).hexdigest()


def _checked_meta(meta: dict, model: ItemModel) -> tuple[int, list[dict], dict]:
    """The round, history and run record, each checked against the model."""
    server_round = meta["server-round"]
    if not _whole(server_round) or not model.round <= server_round < 2**53:
        raise ValueError(f"server-round must be a whole number >= the model's round "
                         f"{model.round}. Found {server_round!r}.")
    if len(model.version) and model.version.max() > server_round:
        raise ValueError(f"a row's version {int(model.version.max())} is after the last "
                         f"round {server_round}")
    history = meta["history"]
    if not isinstance(history, list) or not all(
            isinstance(r, dict) and _whole(r.get("round")) and 0 <= r["round"] <= server_round
            for r in history):
        raise ValueError("history must be a list of rounds, each numbered up to the last")
    rounds = [r["round"] for r in history]
    if any(b <= a for a, b in pairwise(rounds)):
        raise ValueError("history rounds must increase")
    if rounds and rounds[-1] != server_round:
        raise ValueError(f"the history ends at round {rounds[-1]}, the checkpoint says "
                         f"server-round {server_round}")
    run = meta["run"]
    if not isinstance(run, dict):
        raise ValueError(f"run must be a mapping. Found {type(run).__name__}.")
    for key, what in (("rejected", "reasons"), ("set-aside", "defences")):
        counts = run.get(key, {})
        if not isinstance(counts, dict) or not all(
                isinstance(k, str) and _whole(v) and v >= 0 for k, v in counts.items()):
            raise ValueError(f"run.{key} must map {what} to counts")
    acked = run.get("acked", {})  # delta sync: each node's table (version, rows)
    if not isinstance(acked, dict) or not all(
            isinstance(k, str) and k.isdigit() and isinstance(v, list) and len(v) == 2
            and all(_whole(x) for x in v) and 0 <= v[0] <= server_round
            and 0 <= v[1] <= model.n_items for k, v in acked.items()):
        raise ValueError(f"run.acked must map node ids to [version <= {server_round}, "
                         f"rows <= {model.n_items}]")
    seen = run.get("seen", [])
    if not isinstance(seen, list) or not all(_whole(n) and n >= 0 for n in seen):
        raise ValueError("run.seen must list node ids")
    for key, what in (("clip-recent", "longest row"), ("budget-recent", "energy")):
        recent = run.get(key, [])  # a learned bound's window (fedrec.server.defences.window)
        if not isinstance(recent, list) or len(recent) > MAX_WINDOW or not all(
                isinstance(e, list) and len(e) == 2 and _whole(e[0]) and 0 <= e[0] < 2**64
                and isinstance(e[1], int | float) and not isinstance(e[1], bool)
                and math.isfinite(e[1]) and e[1] >= 0 for e in recent) \
                or len({int(e[0]) for e in recent}) != len(recent):
            raise ValueError(f"run.{key} must list distinct [node id, {what} >= 0] "
                             f"pairs, at most {MAX_WINDOW}")
    dp_rounds = run.get("dp-rounds", 0)
    if not _whole(dp_rounds) or not 0 <= dp_rounds <= server_round:
        raise ValueError(f"run.dp-rounds must be in [0, {server_round}]. Found {dp_rounds!r}.")
    return int(server_round), list(history), dict(run)


def _whole(value: object) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and math.isfinite(value) and value == int(value))


def _npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, np.ascontiguousarray(array), allow_pickle=False)
    return out.getvalue()


def _array(blob: bytes) -> np.ndarray:
    return np.load(io.BytesIO(blob), allow_pickle=False)
