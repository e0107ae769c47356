"""The shop's catalogue file: its items (SKUs), their categories, content and listing times.

The operator owns it. A CSV file with this header (columns in any order; the first three
are required)::

    sku,title,categories,listed,delisted,feature:NAME,...

- ``sku``: the shop's item id, any string of 1–64 printable characters, unique.
- ``title``: free text (shown by ``fedrec catalogue``; never sent to devices).
- ``categories``: ``|``-separated category names, none to eight per item.
- ``listed`` / ``delisted``: when the item is offered, and when it stops being offered:
  empty (always / never), Unix seconds, or an ISO 8601 date or time (UTC unless it says).
- ``feature:NAME``: a numeric content feature (empty is 0), with the categories what a new
  listing's first vector is fitted from (:mod:`fedrec.server.catalogue`).

Row *i* of the item table is the *i*-th item of the file. A new version of the catalogue may
append items, change titles, features and listing times, and delist items; it may not remove,
reorder or recategorise an item that has a row (:meth:`Catalogue.check_extends`). That keeps
the mapping from SKUs to rows a function of the file, which the server, devices and the shop's
app can each read. An item is *hidden* (never recommended, never trained) before its
``listed`` time and from its ``delisted`` time on.

Every problem is a :class:`CatalogueError` reading ``FILE:LINE: field 'NAME': PROBLEM``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from fedrec.common.atomic import atomic_open
from fedrec.common.data.errors import DataFormatError

REQUIRED = ("sku", "title", "categories")
OPTIONAL = ("listed", "delisted")
FEATURE = "feature:"
SEPARATOR = "|"
MAX_CATEGORIES = 8  # per item: the width of the category matrix devices hold
MAX_SKU = 64
MAX_NAME = 64
MAX_ITEMS = 5_000_000
MAX_BYTES = 1 << 30


class CatalogueError(DataFormatError):
    """A catalogue file, or a new version of it, that cannot be used."""


@dataclass(frozen=True)
class Catalogue:
    """A validated catalogue: one entry per item, in row order."""

    skus: tuple[str, ...]
    titles: tuple[str, ...]
    categories: tuple[tuple[str, ...], ...]
    listed: np.ndarray  # (n,) float64 Unix seconds; NaN: always listed
    delisted: np.ndarray  # (n,) float64; NaN: never delisted
    feature_names: tuple[str, ...] = ()
    features: np.ndarray | None = None  # (n, f) float32
    path: str = ""
    lines: tuple[int, ...] = ()  # each item's line in the file

    @property
    def n_items(self) -> int:
        return len(self.skus)

    @property
    def category_names(self) -> tuple[str, ...]:
        """Every category, in order of first appearance (so a new version only appends)."""
        return tuple(dict.fromkeys(c for cats in self.categories for c in cats))

    def rows(self) -> dict[str, int]:
        """SKU -> row."""
        return {sku: i for i, sku in enumerate(self.skus)}

    def category_matrix(self) -> np.ndarray:
        """(n, MAX_CATEGORIES) int16 category indices into :attr:`category_names`, -1
        padded: what devices filter by."""
        index = {name: i for i, name in enumerate(self.category_names)}
        if len(index) >= 2**15:
            raise CatalogueError(self.path, None, "categories",
                                 f"{len(index)} categories; at most {2**15 - 1}")
        out = np.full((self.n_items, MAX_CATEGORIES), -1, dtype=np.int16)
        for row, cats in enumerate(self.categories):
            out[row, :len(cats)] = [index[c] for c in cats]
        return out

    def sku_array(self) -> np.ndarray:
        """The SKUs as UTF-8 bytes (numpy ``S``): what a table message carries per row."""
        return np.array([s.encode() for s in self.skus], dtype=bytes) if self.skus \
            else np.empty(0, dtype="S1")

    def content(self) -> np.ndarray:
        """(n, categories + features) float32 content: one-hot categories, then the numeric
        features."""
        names = self.category_names
        index = {name: i for i, name in enumerate(names)}
        onehot = np.zeros((self.n_items, len(names)), dtype=np.float32)
        for row, cats in enumerate(self.categories):
            onehot[row, [index[c] for c in cats]] = 1.0
        if self.features is None or not self.features.shape[1]:
            return onehot
        return np.hstack([onehot, self.features.astype(np.float32)])

    def hidden(self, now: float) -> np.ndarray:
        """(n,) bool: items not offered at ``now`` (not listed yet, or delisted)."""
        with np.errstate(invalid="ignore"):
            return (self.listed > now) | (self.delisted <= now)

    def digest(self, n: int | None = None) -> str:
        """SHA-256 of the first ``n`` items' SKUs and categories (all by default): which
        rows a table is of."""
        n = self.n_items if n is None else n
        lines = (f"{sku}\t{SEPARATOR.join(cats)}"
                 for sku, cats in zip(self.skus[:n], self.categories[:n], strict=True))
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    def check_extends(self, old: Catalogue) -> None:
        """Raise CatalogueError unless this version keeps every item ``old`` has at its
        row with its categories (items may be appended; titles, features and listing
        times may change)."""
        if self.n_items < old.n_items:
            raise CatalogueError(self.path, None, "sku",
                                 f"{old.n_items - self.n_items} items of the running "
                                 f"catalogue are missing (it had {old.n_items}); delist "
                                 "items with a delisted time instead of removing them")
        for row in range(old.n_items):
            line = self.lines[row] if self.lines else None
            if self.skus[row] != old.skus[row]:
                raise CatalogueError(self.path, line, "sku",
                                     f"row {row} is {old.skus[row]!r} in the running "
                                     f"catalogue, here {self.skus[row]!r}: items keep their "
                                     "order; append new ones at the end")
            if self.categories[row] != old.categories[row]:
                raise CatalogueError(self.path, line, "categories",
                                     f"{self.skus[row]!r} had categories "
                                     f"{SEPARATOR.join(old.categories[row])!r}; an item's "
                                     "categories cannot change once it has a row")


def parse_time(text: str) -> float:
    """Unix seconds from ``text``: empty (NaN), a number, or ISO 8601 (UTC when no
    offset). Raises ValueError."""
    text = text.strip()
    if not text:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        try:
            stamp = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{text!r} is neither Unix seconds nor an ISO 8601 "
                             "date or time") from None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        return stamp.timestamp()
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite time")
    return value


def _printable(text: str) -> bool:
    return text.isprintable() and text == text.strip()


def parse_catalogue(text: str, path: str = "<catalogue>") -> Catalogue:
    """Validate and read a catalogue's CSV ``text`` (see the module docs)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise CatalogueError(path, 1, None, "empty file: it needs the header "
                             f"{','.join(REQUIRED + OPTIONAL)}") from None
    except csv.Error as exc:
        raise CatalogueError(path, 1, None, f"not CSV ({exc})") from None
    header = [h.strip() for h in header]
    for name in REQUIRED:
        if name not in header:
            raise CatalogueError(path, 1, name, f"missing column (the header needs "
                                 f"{', '.join(REQUIRED)})")
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise CatalogueError(path, 1, name, "column given twice")
        seen.add(name)
        if name not in REQUIRED + OPTIONAL and not (name.startswith(FEATURE)
                                                    and len(name) > len(FEATURE)):
            raise CatalogueError(path, 1, name, "unknown column (known: "
                                 f"{', '.join(REQUIRED + OPTIONAL)}, feature:NAME)")
    col = {name: i for i, name in enumerate(header)}
    feature_cols = [name for name in header if name.startswith(FEATURE)]
    skus, titles, categories, lines = [], [], [], []
    listed, delisted, features = [], [], []
    rows_of: dict[str, int] = {}
    try:
        for fields in reader:
            line = reader.line_num
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            if len(fields) != len(header):
                raise CatalogueError(path, line, None, f"{len(fields)} fields, the header "
                                     f"has {len(header)}")
            sku = fields[col["sku"]]
            if not sku or len(sku) > MAX_SKU or not _printable(sku):
                raise CatalogueError(path, line, "sku", f"{sku!r}: a SKU is 1 to {MAX_SKU} "
                                     "printable characters without surrounding spaces")
            if sku in rows_of:
                raise CatalogueError(path, line, "sku", f"{sku!r} is already the item of "
                                     f"line {lines[rows_of[sku]]}")
            title = fields[col["title"]].strip()
            if not title.isprintable():
                raise CatalogueError(path, line, "title", "holds control characters")
            raw = fields[col["categories"]].strip()
            cats = tuple(c.strip() for c in raw.split(SEPARATOR)) if raw else ()
            for c in cats:
                if not c or len(c) > MAX_NAME or not c.isprintable():
                    raise CatalogueError(path, line, "categories", f"{raw!r}: each category "
                                         f"is 1 to {MAX_NAME} printable characters, "
                                         f"separated by {SEPARATOR!r}")
            if len(set(cats)) != len(cats):
                raise CatalogueError(path, line, "categories", f"{raw!r} names a category "
                                     "twice")
            if len(cats) > MAX_CATEGORIES:
                raise CatalogueError(path, line, "categories", f"{len(cats)} categories; "
                                     f"at most {MAX_CATEGORIES} per item")
            times = []
            for name in OPTIONAL:
                try:
                    times.append(parse_time(fields[col[name]]) if name in col else math.nan)
                except ValueError as exc:
                    raise CatalogueError(path, line, name, str(exc)) from None
            if times[0] == times[0] and times[1] == times[1] and times[1] <= times[0]:
                raise CatalogueError(path, line, "delisted", "is not after listed")
            values = []
            for name in feature_cols:
                text = fields[col[name]].strip()
                try:
                    value = float(text) if text else 0.0
                except ValueError:
                    raise CatalogueError(path, line, name, f"{text!r} is not a number") \
                        from None
                if not math.isfinite(value) or abs(value) > 1e6:
                    raise CatalogueError(path, line, name, f"{text!r}: a feature is a "
                                         "finite number within ±1e6")
                values.append(value)
            rows_of[sku] = len(skus)
            if len(skus) >= MAX_ITEMS:
                raise CatalogueError(path, line, None, f"more than {MAX_ITEMS} items")
            skus.append(sku)
            titles.append(title)
            categories.append(cats)
            listed.append(times[0])
            delisted.append(times[1])
            features.append(values)
            lines.append(line)
    except csv.Error as exc:
        raise CatalogueError(path, reader.line_num, None, f"not CSV ({exc})") from None
    if not skus:
        raise CatalogueError(path, None, None, "no items")
    return Catalogue(tuple(skus), tuple(titles), tuple(categories),
                     np.array(listed, dtype=np.float64), np.array(delisted, dtype=np.float64),
                     tuple(n[len(FEATURE):] for n in feature_cols),
                     np.array(features, dtype=np.float32).reshape(len(skus), len(feature_cols)),
                     str(path), tuple(lines))


def read_catalogue(path: str | Path) -> Catalogue:
    """Validate and read the catalogue file at ``path``."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise CatalogueError(path, None, None, f"{size} bytes; at most {MAX_BYTES}")
        raw = path.read_bytes()
    except OSError as exc:
        raise CatalogueError(path, None, None, f"cannot read it ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise CatalogueError(path, line, None, "not UTF-8 text") from None
    return parse_catalogue(text, str(path))


def _time_text(value: float) -> str:
    if value != value:
        return ""
    return datetime.fromtimestamp(value, UTC).isoformat().replace("+00:00", "Z")


def catalogue_text(cat: Catalogue) -> str:
    """``cat`` as catalogue CSV (what :func:`parse_catalogue` reads back)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*REQUIRED, *OPTIONAL, *(FEATURE + n for n in cat.feature_names)])
    for i in range(cat.n_items):
        feats = [] if cat.features is None else [f"{v:.9g}" for v in cat.features[i]]
        writer.writerow([cat.skus[i], cat.titles[i], SEPARATOR.join(cat.categories[i]),
                         _time_text(cat.listed[i]), _time_text(cat.delisted[i]), *feats])
    return out.getvalue()


def write_catalogue(path: str | Path, cat: Catalogue) -> None:
    """Write ``cat`` to ``path`` completely or not at all (temp file, then rename)."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as out:
        out.write(catalogue_text(cat))


def with_changes(cat: Catalogue, add: list[dict] = (), delist: dict[str, float] | None = None
                 ) -> Catalogue:
    """``cat`` with items appended (dicts of CSV field text: sku, title, categories,
    listed, delisted, feature:NAME) and SKUs delisted at the given times, validated as a
    whole file and as an extension of ``cat``."""
    delist = delist or {}
    rows = cat.rows()
    for sku in delist:
        if sku not in rows:
            raise CatalogueError(cat.path, None, "sku", f"{sku!r} is not in the catalogue")
    text = catalogue_text(cat)
    lines = text.splitlines()
    header = next(csv.reader([lines[0]]))
    body = io.StringIO()
    writer = csv.writer(body, lineterminator="\n")
    writer.writerow(header)
    for line in csv.reader(lines[1:]):
        if line[0] in delist:
            line[header.index("delisted")] = _time_text(delist[line[0]])
        writer.writerow(line)
    for item in add:
        unknown = set(item) - set(header)
        if unknown:
            raise CatalogueError(cat.path, None, sorted(unknown)[0],
                                 "not a column of this catalogue")
        writer.writerow([str(item.get(name, "")) for name in header])
    new = parse_catalogue(body.getvalue(), cat.path)
    new.check_extends(cat)
    return new
