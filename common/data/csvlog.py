"""A generic CSV event log: the format a shop exports.

The first line is a header naming the columns (any order, case-insensitive):

* ``user``, ``item`` (required): raw ids, any text;
* ``event`` (optional): view, cart, purchase or rating; without it every row is a rating;
* ``value`` (required for ratings): the rating, on a scale within [0, 10] (stars: 1–5,
  0.5–5, 1–10; rescale other scales); implicit events may leave it empty (1.0);
* ``timestamp`` (optional): integer seconds since the epoch or an ISO 8601 date-time;
  without it the row number stands in, so file order is time order.

A byte-order mark (what spreadsheets write as "CSV UTF-8") is accepted. Every bad value
stops the load with ``FILE:LINE: field: problem``.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from pathlib import Path

import numpy as np

from fedrec.common.atomic import atomic_open
from fedrec.common.data.errors import DataFormatError
from fedrec.common.data.interactions import EventType, IdMap, Interactions
from fedrec.common.data.parsing import read_text

COLUMNS = ("user", "item", "event", "value", "timestamp")
RATING_SCALE = (0.0, 10.0)  # what a rating in a CSV log may be
FLOAT32_MAX = float(np.finfo(np.float32).max)


def load_csv_log(path: Path, name: str | None = None) -> Interactions:
    """Read a CSV event log into :class:`Interactions` (rows in file order)."""
    path = Path(path)
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise DataFormatError(path, 1, None, "empty file; expected a header line") from None
    col = _columns(path, header)
    users, items, events, values, times = [], [], [], [], []
    for line, row in enumerate(reader, start=2):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != len(header):
            raise DataFormatError(path, line, None,
                                  f"expected {len(header)} fields, found {len(row)}")
        user, item = row[col["user"]].strip(), row[col["item"]].strip()
        for field, text in (("user", user), ("item", item)):
            if not text:
                raise DataFormatError(path, line, field, "empty id")
        event = _event(path, line, row[col["event"]]) if "event" in col else EventType.RATING
        text = row[col["value"]].strip() if "value" in col else ""
        value = _number(path, line, "value", text) if event == EventType.RATING or text else 1.0
        if event == EventType.RATING and not RATING_SCALE[0] <= value <= RATING_SCALE[1]:
            raise DataFormatError(path, line, "value", f"a rating must be within "
                                  f"[{RATING_SCALE[0]:g}, {RATING_SCALE[1]:g}], found {text!r}"
                                  " (a star scale: rescale the column)")
        stamp = _timestamp(path, line, row[col["timestamp"]]) if "timestamp" in col else line
        users.append(user)
        items.append(item)
        events.append(int(event))
        values.append(value)
        times.append(stamp)
    user_map, user_idx = IdMap.from_raw(np.array(users, dtype=str))
    item_map, item_idx = IdMap.from_raw(np.array(items, dtype=str))
    return Interactions(
        user=user_idx, item=item_idx, value=np.array(values, dtype=np.float32),
        timestamp=np.array(times, dtype=np.int64), event=np.array(events, dtype=np.int8),
        users=user_map, items=item_map, name=name or f"csv:{path}",
    )


def write_csv_log(data: Interactions, path: Path) -> Path:
    """Write ``data`` as a CSV event log (raw ids, event names) that :func:`load_csv_log`
    reads back; atomically."""
    with atomic_open(path, newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["user", "item", "event", "value", "timestamp"])
        names = [e.name.lower() for e in EventType]
        users, items = data.users.raw, data.items.raw
        writer.writerows(
            (users[u], items[i], names[e], f"{v:g}", t) for u, i, e, v, t in zip(
                data.user.tolist(), data.item.tolist(), data.event.tolist(),
                data.value.tolist(), data.timestamp.tolist(), strict=True))
    return Path(path)


def _columns(path: Path, header: list[str]) -> dict[str, int]:
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        raise DataFormatError(path, 1, unknown[0],
                              f"unknown column; expected some of {', '.join(COLUMNS)}")
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise DataFormatError(path, 1, dup, "column named twice")
    for needed in ("user", "item"):
        if needed not in header:
            raise DataFormatError(path, 1, needed, "required column missing from the header")
    if "event" not in header and "value" not in header:
        raise DataFormatError(path, 1, "value",
                              "a log without an 'event' column needs a 'value' (rating) column")
    return {h: k for k, h in enumerate(header)}


def _event(path: Path, line: int, text: str) -> EventType:
    try:
        return EventType.parse(text)
    except ValueError as exc:
        raise DataFormatError(path, line, "event", str(exc)) from None


def _number(path: Path, line: int, field: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataFormatError(path, line, field, f"expected a number, found {text!r}") from None
    if not np.isfinite(value):
        raise DataFormatError(path, line, field, f"expected a finite number, found {text!r}")
    if abs(value) > FLOAT32_MAX:
        raise DataFormatError(path, line, field, f"{text!r} is beyond a 32-bit float "
                              f"(at most {FLOAT32_MAX:.4g})")
    return value


def _timestamp(path: Path, line: int, text: str) -> int:
    text = text.strip()
    try:
        stamp = int(text)
    except ValueError:
        pass
    else:
        if not -2**62 <= stamp <= 2**62:
            raise DataFormatError(path, line, "timestamp",
                                  f"{text!r} is not a time in seconds (out of range)")
        return stamp
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())
    except ValueError:
        raise DataFormatError(
            path, line, "timestamp",
            f"expected integer seconds or an ISO 8601 date-time, found {text!r}") from None
