"""The running server's catalogue: the operator's file, watched between rounds.

:class:`Listings` reads the catalogue file (:mod:`fedrec.common.catalogue`) when the server
starts and checks it again before every round. A new version that extends the running one
grows the item table with a row per new item, started from its content
(:func:`~fedrec.server.catalogue.content_rows`, fitted on the rows devices have trained) or
neutral, with old rows, their versions and optimiser state untouched; devices receive the new
rows, SKUs and categories with the next round's table. A version that cannot be used (damaged,
or not an extension: an item removed, reordered or recategorised) is refused with the
reason logged and counted, and the server keeps running on the version it has.

Each round the items hidden by their listing times (not yet listed, or delisted) are
recomputed from the clock: they go to devices as the table's ``hidden`` rows (never
recommended), and the server drops their rows from every aggregate (never trained).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from logging import INFO, WARNING
from pathlib import Path
from typing import Protocol

import numpy as np
from flwr.common.logger import log

from fedrec.common.catalogue import Catalogue, CatalogueError, read_catalogue
from fedrec.server.catalogue import content_rows, neutral_rows
from fedrec.server.item_model import ItemModel

STATE = "catalogue"  # the checkpoint's run-state entry


class ListingSource(Protocol):
    """What the round loop asks of a server's catalogue before each round: grow the table
    (:meth:`refresh`), the rows to hide and drop from aggregates (``hidden``), the arrays
    sent whole with every table, the round's history entries and the checkpoint's."""

    hidden: np.ndarray

    def refresh(self, model: ItemModel, static: dict[str, np.ndarray],
                server_round: int) -> None: ...

    def table_arrays(self) -> dict[str, np.ndarray]: ...

    def summary(self) -> dict[str, float]: ...

    def state(self, n_rows: int) -> dict: ...


def grow_table(model: ItemModel, n_items: int, content: np.ndarray | None, explicit: bool,
               rng: np.random.Generator, init_std: float) -> str:
    """Grow ``model`` to ``n_items`` rows: each new row started from its item's ``content``
    (a ridge fit over the rows devices have trained; ``content`` holds every item's
    features, old and new) or, without content or trained rows, neutral. Old rows, their
    versions and optimiser state are untouched; new rows have version 0 (not trained yet,
    so a later content fit leaves them out). Returns how the rows were started."""
    n_old = model.n_items
    if n_items <= n_old:
        return "nothing"
    rows = None
    if content is not None:
        p = model.params
        rows = content_rows(content[:n_old], model.version > 0, p.factors, p.bias,
                            content[n_old:n_items], with_bias=explicit)
    how = "content"
    if rows is None:
        rows, how = neutral_rows(n_items - n_old, model.params.n_factors, rng, init_std), \
            "neutral rows"
    model.grow(*rows, round_number=0)
    return how


class Listings:
    """The catalogue file a server runs on, and what it tells the table."""

    def __init__(self, path: str | Path, *, explicit: bool, init_std: float = 0.1,
                 seed: int = 0, clock: Callable[[], float] = time.time) -> None:
        self.path, self.explicit, self.init_std = Path(path), explicit, init_std
        self.rng = np.random.default_rng([seed, 17])
        self.clock = clock
        self.catalogue: Catalogue = read_catalogue(self.path)  # (a bad file at start: fatal)
        self._stamp = self._stat()
        self.version = 1  # versions taken while running (1: the one it started with)
        self.refused = 0  # versions refused
        self.added = 0  # rows added since the last summary
        self.hidden = np.empty(0, dtype=np.int64)
        self._built: Catalogue | None = None  # the version _cache holds the arrays of
        self._cache: dict[str, np.ndarray] = {}

    @property
    def n_items(self) -> int:
        return self.catalogue.n_items

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            s = self.path.stat()
        except OSError:
            return None
        return s.st_mtime_ns, s.st_size, s.st_ino

    # ---- what the table carries ------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        """The catalogue's arrays, built once per version (a Python pass over the items)."""
        if self._built is not self.catalogue:
            c = self.catalogue
            names = c.category_names
            self._cache = {"sku": c.sku_array(), "categories": c.category_matrix(),
                           "category-names": np.array([n.encode() for n in names],
                                                      dtype=bytes)
                           if names else np.empty(0, dtype="S1")}
            self._built = c
        return self._cache

    def static(self, n: int) -> dict[str, np.ndarray]:
        """The per-row arrays of the first ``n`` items: SKUs and category indices."""
        a = self._arrays()
        return {"sku": a["sku"][:n], "categories": a["categories"][:n]}

    def table_arrays(self) -> dict[str, np.ndarray]:
        """What goes whole with every table: the hidden rows and the category names."""
        return {"hidden": self.hidden, "category-names": self._arrays()["category-names"]}

    # ---- between rounds --------------------------------------------------------------
    def refresh(self, model: ItemModel, static: dict[str, np.ndarray],
                server_round: int) -> None:
        """Take a changed catalogue file (if it extends the running one), grow ``model``
        with its new items and update ``static``; recompute the hidden rows."""
        stamp = self._stat()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                new = read_catalogue(self.path)
                new.check_extends(self.catalogue)
            except CatalogueError as exc:
                self.refused += 1
                log(WARNING, "round %s: catalogue refused, still on version %s: %s",
                    server_round, self.version, exc)
            else:
                self.catalogue = new
                self.version += 1
                log(INFO, "round %s: catalogue version %s, %s items", server_round,
                    self.version, new.n_items)
        self.grow(model, static, server_round)
        n = model.n_items
        self.hidden = np.flatnonzero(self.catalogue.hidden(self.clock())[:n]).astype(np.int64)

    def grow(self, model: ItemModel, static: dict[str, np.ndarray],
             server_round: int = 0) -> None:
        """Rows for the catalogue's items the table lacks: from content, or neutral."""
        n_new = self.catalogue.n_items - model.n_items
        if n_new > 0:
            content = self.catalogue.content()
            how = grow_table(model, self.catalogue.n_items,
                             content if content.shape[1] else None, self.explicit, self.rng,
                             self.init_std)
            self.added += n_new
            log(INFO, "round %s: %s new items listed, from %s", server_round, n_new, how)
        static.update(self.static(model.n_items))

    def summary(self) -> dict[str, float]:
        out = {"catalogue-version": float(self.version), "items": float(self.n_items),
               "hidden": float(len(self.hidden)), "listed-new": float(self.added),
               "catalogue-refused": float(self.refused)}
        self.added = 0
        return out

    # ---- the checkpoint --------------------------------------------------------------
    def state(self, n_rows: int) -> dict:
        """Which catalogue the table's rows are of (a checkpoint's run-state entry)."""
        return {STATE: {"version": self.version, "rows": n_rows,
                        "digest": self.catalogue.digest(n_rows)}}

    def check_resumed(self, run: dict, n_rows: int, source: str) -> None:
        """Raise ValueError unless the checkpoint's rows are the file's first items."""
        saved = run.get(STATE)
        if saved is None:
            raise ValueError(f"{source}: the checkpoint was not made with a catalogue file, "
                             f"this run names {self.path}")
        if not isinstance(saved, dict) or not isinstance(saved.get("version"), int) \
                or isinstance(saved.get("version"), bool) or saved["version"] < 1 \
                or saved.get("rows") != n_rows or not isinstance(saved.get("digest"), str):
            raise ValueError(f"{source}: the checkpoint's catalogue entry is damaged")
        if n_rows > self.n_items:
            raise ValueError(f"{self.path}: {self.n_items} items, but the checkpoint's table "
                             f"has {n_rows} rows: items were removed from the catalogue")
        if self.catalogue.digest(n_rows) != saved["digest"]:
            raise ValueError(f"{self.path}: its first {n_rows} items are not the ones "
                             "the checkpoint's rows were trained for (items reordered, "
                             "renamed, removed or recategorised)")
        self.version = saved["version"] + (self.n_items > n_rows)


class TimedListings:
    """A catalogue whose listing times the server knows ahead (a shop's timeline, replayed):
    before each round the table grows to the items listed by the clock, each row started
    from its item's content or neutral (:func:`grow_table`). Items appear in listing order
    (a timeline's item ids), none is delisted; ``static["listed"]`` tells devices each row's
    listing time (what is new)."""

    def __init__(self, listed: np.ndarray, content: np.ndarray | None, *, explicit: bool,
                 clock: Callable[[], float], rng: np.random.Generator,
                 init_std: float = 0.1) -> None:
        self.listed = np.asarray(listed)
        if len(self.listed) > 1 and (np.diff(self.listed) < 0).any():
            raise ValueError("a timed catalogue lists its items in order of listing time")
        self.content, self.explicit, self.clock = content, explicit, clock
        self.rng, self.init_std = rng, init_std
        self.hidden = np.empty(0, dtype=np.int64)  # (nothing delisted; unlisted not grown)
        self.added = self.n_items = 0

    def listed_by(self, now: float) -> int:
        """How many items are listed at ``now`` (at least one: a table has a row)."""
        return max(1, int(np.searchsorted(self.listed, now, side="right")))

    def refresh(self, model: ItemModel, static: dict[str, np.ndarray],
                server_round: int) -> None:
        n_old = model.n_items
        grow_table(model, self.listed_by(self.clock()), self.content, self.explicit,
                   self.rng, self.init_std)
        self.added += model.n_items - n_old
        self.n_items = model.n_items
        static["listed"] = self.listed[:model.n_items]

    def summary(self) -> dict[str, float]:
        out = {"items": float(self.n_items), "listed-new": float(self.added)}
        self.added = 0
        return out

    def table_arrays(self) -> dict[str, np.ndarray]:
        return {}  # (listing times go per row, in static)

    def state(self, n_rows: int) -> dict:
        return {}  # (a replay keeps no checkpoint)
