"""The names of the server's poisoning defences (:mod:`fedrec.server.defences` holds what
each does), and how a run's ``defences`` setting names them: comma-separated, in the order
they screen a round's updates, or ``off`` for none. :data:`DEFAULT` are the ones on by
default: those that cost honest quality at most 1 % on the benches (``fedrec bench
attack``)."""

from __future__ import annotations

NAMES = ("clip", "budget", "coordination")
DEFAULT = "clip,budget,coordination"
OFF = "off"


def defence_names(value: str) -> list[str]:
    """The defences ``value`` names (``off``: none); ValueError naming an unknown one."""
    value = str(value).strip()
    if value in (OFF, ""):
        return []
    names = [n.strip() for n in value.split(",")]
    unknown = [n for n in names if n not in NAMES]
    if unknown or len(set(names)) != len(names):
        raise ValueError(f"defences must be '{OFF}' or distinct names among "
                         f"{', '.join(NAMES)}. Found {value!r}.")
    return names
