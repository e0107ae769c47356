"""Progress on stderr (stdout stays clean for JSON): a bar built on Flower's ``rich`` on a
terminal, and one plain line per step elsewhere (a log file, CI), so long work run in the
background still says where it is."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

EVERY = 2.0  # seconds between two lines when stderr is not a terminal


@contextmanager
def progress_bar(title: str, quiet: bool = False, stream: TextIO | None = None
                 ) -> Iterator[Callable[[str, int, int], None]]:
    """Yields ``update(what, done, total)``; draws nothing when ``quiet``. ``stream``
    (default stderr) that is not a terminal gets a line per update, at most one every
    :data:`EVERY` seconds and always the last: the title, ``done/total``, the seconds since
    the start and what is being done."""
    if quiet:
        yield lambda what, done, total: None
        return
    out = sys.stderr if stream is None else stream
    if not out.isatty():
        start = time.monotonic()
        last = [-EVERY]

        def line(what: str, done: int, total: int) -> None:
            now = time.monotonic() - start
            if now - last[0] < EVERY and done < total:
                return  # at most a line every EVERY seconds, and the last one
            last[0] = now
            print(f"{title}: {done}/{total} [{now:.0f} s] {what}", file=out, flush=True)

        yield line
        return
    console = Console(file=out)
    with Progress(TextColumn("[bold]{task.fields[title]}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("", total=None, title=title)

        def update(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        yield update
