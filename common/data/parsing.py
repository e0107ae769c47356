"""Fast table parsing with exact error locations.

The fast path hands the whole file to numpy. Only when that fails is the file walked line by
line, to name the first bad line and field in a :class:`DataFormatError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from fedrec.common.data.errors import DataFormatError


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """The file's text, with CRLF line ends and a UTF-8 byte-order mark tolerated; a clear
    error if missing or undecodable."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataFormatError(path, None, None, "file not found") from None
    if encoding.replace("-", "").lower() == "utf8" and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # a byte-order mark (a spreadsheet's "CSV UTF-8"): not part of the text
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataFormatError(path, line, None, f"not valid {encoding} text") from None
    return text.replace("\r\n", "\n")


def parse_numeric_table(
    path: Path,
    text: str,
    sep: str | None,
    fields: Sequence[tuple[str, Callable[[str], object]]],
    first_line: int = 1,
) -> list[np.ndarray]:
    """Parse ``text`` (rows of ``len(fields)`` numbers split by ``sep``) into columns.

    ``fields`` gives each column's name and a converter (``int`` or ``float``) used for the
    column's dtype and for checking. ``first_line`` is the file line number of the text's first
    line (2 when a header was removed).
    """
    body = text.rstrip("\n")
    n_fields = len(fields)
    if not body:
        return [np.empty(0, dtype=np.int64 if conv is int else np.float64) for _, conv in fields]
    flat = body.replace(sep, " ") if sep else body
    try:
        values = np.array(flat.split(), dtype=np.float64)
        n_lines = body.count("\n") + 1
        if values.size != n_lines * n_fields:
            raise ValueError
        table = values.reshape(n_lines, n_fields)
    except ValueError:
        _locate_error(path, body, sep, fields, first_line)
        raise DataFormatError(path, None, None, "could not be parsed") from None
    columns = []
    for col, (name, conv) in enumerate(fields):
        column = table[:, col]
        if conv is int:
            as_int = column.astype(np.int64)
            if not np.array_equal(as_int, column):
                row = int(np.flatnonzero(as_int != column)[0])
                raise DataFormatError(path, first_line + row, name,
                                      f"expected an integer, found {column[row]!r}")
            column = as_int
        if not np.all(np.isfinite(column)):
            row = int(np.flatnonzero(~np.isfinite(column))[0])
            raise DataFormatError(path, first_line + row, name,
                                  f"expected a finite number, found {column[row]!r}")
        columns.append(column)
    return columns


def _locate_error(
    path: Path, body: str, sep: str | None,
    fields: Sequence[tuple[str, Callable[[str], object]]], first_line: int,
) -> None:
    for offset, line in enumerate(body.split("\n")):
        number = first_line + offset
        parts = line.split(sep) if sep else line.split()
        if len(parts) != len(fields):
            raise DataFormatError(path, number, None,
                                  f"expected {len(fields)} fields, found {len(parts)}: {line!r}")
        for (name, conv), part in zip(fields, parts, strict=True):
            try:
                conv(part.strip())
            except ValueError:
                kind = "an integer" if conv is int else "a number"
                raise DataFormatError(path, number, name,
                                      f"expected {kind}, found {part!r}") from None
