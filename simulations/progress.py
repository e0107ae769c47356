"""Progress bars on stderr (stdout stays clean for JSON), built on Flower's ``rich``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


@contextmanager
def progress_bar(title: str, quiet: bool = False) -> Iterator[Callable[[str, int, int], None]]:
    """Yields ``update(what, done, total)``; draws nothing when ``quiet``."""
    if quiet:
        yield lambda what, done, total: None
        return
    console = Console(stderr=True)
    with Progress(TextColumn("[bold]{task.fields[title]}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=not console.is_terminal) as bar:
        task = bar.add_task("", total=None, title=title)

        def update(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        yield update
