"""MovieLens loaders: 100K (``u.data``), 1M (``ratings.dat``) and latest (``ratings.csv``).

Each returns :class:`Interactions` of RATING events in file order, with genres as item
features when the dataset's item file is present.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from fedrec.common.data.errors import DataFormatError
from fedrec.common.data.interactions import EventType, IdMap, Interactions, ItemFeatures
from fedrec.common.data.parsing import parse_numeric_table, read_text

_RATING_FIELDS = (("user", int), ("item", int), ("rating", float), ("timestamp", int))

ML_100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)


def load_ml_100k(directory: Path) -> Interactions:
    """MovieLens 100K: tab-separated ``u.data``; genres from ``u.item`` (19 flags)."""
    directory = Path(directory)
    path = directory / "u.data"
    cols = parse_numeric_table(path, read_text(path), "\t", _RATING_FIELDS)
    data = _ratings(path, *cols, name="ml-100k")
    item_path = directory / "u.item"
    if item_path.exists():
        genres = _read_100k_genres(item_path)
        data = _with_genres(data, genres, ML_100K_GENRES)
    return data


def load_ml_1m(directory: Path) -> Interactions:
    """MovieLens 1M: ``::``-separated ``ratings.dat``; genres from ``movies.dat``."""
    directory = Path(directory)
    path = directory / "ratings.dat"
    cols = parse_numeric_table(path, read_text(path, "latin-1"), "::", _RATING_FIELDS)
    data = _ratings(path, *cols, name="ml-1m")
    movies = directory / "movies.dat"
    if movies.exists():
        rows = {}
        for number, line in enumerate(read_text(movies, "latin-1").splitlines(), 1):
            parts = line.split("::")
            if len(parts) != 3:
                raise DataFormatError(movies, number, None,
                                      f"expected 3 fields, found {len(parts)}")
            rows[_int(movies, number, "movieId", parts[0])] = parts[2].split("|")
        data = _with_genre_lists(data, rows)
    return data


def load_ml_latest(directory: Path, name: str = "ml-latest-small") -> Interactions:
    """MovieLens latest(-small): ``ratings.csv`` with a header (CRLF tolerated);
    genres from ``movies.csv``."""
    directory = Path(directory)
    path = directory / "ratings.csv"
    text = read_text(path)
    header, _, body = text.partition("\n")
    expected = "userId,movieId,rating,timestamp"
    if header.strip() != expected:
        raise DataFormatError(path, 1, None, f"expected header {expected!r}, found {header!r}")
    cols = parse_numeric_table(path, body, ",", _RATING_FIELDS, first_line=2)
    data = _ratings(path, *cols, name=name)
    movies = directory / "movies.csv"
    if movies.exists():
        reader = csv.reader(io.StringIO(read_text(movies)))
        rows = {}
        for number, parts in enumerate(reader, 1):
            if number == 1:
                continue
            if len(parts) != 3:
                raise DataFormatError(movies, number, None,
                                      f"expected 3 fields, found {len(parts)}")
            genres = [] if parts[2] == "(no genres listed)" else parts[2].split("|")
            rows[_int(movies, number, "movieId", parts[0])] = genres
        data = _with_genre_lists(data, rows)
    return data


def _ratings(path: Path, user: np.ndarray, item: np.ndarray, rating: np.ndarray,
             timestamp: np.ndarray, name: str) -> Interactions:
    bad = np.flatnonzero((rating < 0) | (rating > 10))
    if bad.size:
        row = int(bad[0])
        first = 2 if path.suffix == ".csv" else 1
        raise DataFormatError(path, first + row, "rating",
                              f"expected a rating in [0, 10], found {rating[row]}")
    users, u = IdMap.from_raw(user)
    items, i = IdMap.from_raw(item)
    return Interactions(
        user=u, item=i, value=rating.astype(np.float32), timestamp=timestamp.astype(np.int64),
        event=np.full(len(u), EventType.RATING, dtype=np.int8), users=users, items=items,
        name=name,
    )


def _read_100k_genres(path: Path) -> dict[int, np.ndarray]:
    genres = {}
    n = len(ML_100K_GENRES)
    for number, line in enumerate(read_text(path, "latin-1").splitlines(), 1):
        parts = line.split("|")
        if len(parts) != 5 + n:
            raise DataFormatError(path, number, None,
                                  f"expected {5 + n} fields, found {len(parts)}")
        flags = parts[5:]
        if any(f not in ("0", "1") for f in flags):
            bad = next(k for k, f in enumerate(flags) if f not in ("0", "1"))
            raise DataFormatError(path, number, ML_100K_GENRES[bad],
                                  f"expected a 0/1 genre flag, found {flags[bad]!r}")
        genres[_int(path, number, "movie id", parts[0])] = np.array(flags, dtype=np.float32)
    return genres


def _with_genres(data: Interactions, genres: dict[int, np.ndarray],
                 names: tuple[str, ...]) -> Interactions:
    matrix = np.zeros((data.n_items, len(names)), dtype=np.float32)
    for idx, raw in enumerate(data.items.raw.tolist()):
        if raw in genres:
            matrix[idx] = genres[raw]
    return _replace_features(data, ItemFeatures(matrix, names))


def _with_genre_lists(data: Interactions, rows: dict[int, list[str]]) -> Interactions:
    names = tuple(sorted({g for gs in rows.values() for g in gs}))
    col = {g: k for k, g in enumerate(names)}
    matrix = np.zeros((data.n_items, len(names)), dtype=np.float32)
    for idx, raw in enumerate(data.items.raw.tolist()):
        for g in rows.get(raw, ()):
            matrix[idx, col[g]] = 1.0
    return _replace_features(data, ItemFeatures(matrix, names))


def _replace_features(data: Interactions, features: ItemFeatures) -> Interactions:
    from dataclasses import replace

    return replace(data, item_features=features)


def _int(path: Path, line: int, field: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataFormatError(path, line, field, f"expected an integer, found {text!r}") from None
