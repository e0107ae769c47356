"""Progress off a terminal: plain lines a log can show, not a bar that draws nothing."""

from __future__ import annotations

import io

from fedrec.simulations.benches import progress as progress_module
from fedrec.simulations.benches.progress import progress_bar


def test_a_log_file_gets_a_line_per_step_with_where_it_is() -> None:
    out = io.StringIO()  # not a terminal
    with progress_bar("attacks", stream=out) as update:
        update("off: push 0.01 tail", 0, 3)
    assert out.getvalue().startswith("attacks: 0/3 [")
    assert out.getvalue().rstrip().endswith("off: push 0.01 tail")


def test_lines_are_throttled_but_the_last_is_always_written(monkeypatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(progress_module, "EVERY", 3600.0)
    with progress_bar("download", stream=out) as update:
        for done in range(100):
            update(f"{done} MB", done, 100)
        update("done", 100, 100)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines  # the first, then nothing for an hour, then the last
    assert lines[0].startswith("download: 0/100") and lines[1].startswith("download: 100/100")


def test_quiet_writes_nothing() -> None:
    out = io.StringIO()
    with progress_bar("x", quiet=True, stream=out) as update:
        update("y", 1, 1)
    assert out.getvalue() == ""
