"""The one error type bad input raises: it names the file, the line and the field."""

from __future__ import annotations

from pathlib import Path


class DataFormatError(ValueError):
    """A dataset file does not have the expected format.

    The message reads ``FILE:LINE: field 'NAME': PROBLEM`` so an editor can jump to it.
    """

    def __init__(self, path: str | Path, line: int | None, field: str | None, problem: str):
        self.path, self.line, self.field, self.problem = str(path), line, field, problem
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"field {field!r}: " if field else ""
        super().__init__(f"{where}: {what}{problem}")
