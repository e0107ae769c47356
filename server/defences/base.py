"""What every defence shares: it sees the round's accepted updates together, before any is
folded into the table, and may shorten rows or set whole replies aside; what it did each
round goes to the round's summary, what it set aside is counted by its name."""

from __future__ import annotations

import numpy as np

from fedrec.common.schema import ItemUpdate


def scaled(update: ItemUpdate, scale: float | np.ndarray) -> ItemUpdate:
    """``update`` with its rows and biases multiplied by ``scale`` (one number, or one per
    row); its ids and counts as they were."""
    row_scale = scale[:, None] if np.ndim(scale) else scale
    return ItemUpdate(update.ids, (update.rows * row_scale).astype(np.float32),
                      (update.bias * scale).astype(np.float32), update.counts)


class Defence:
    """A defence that changes nothing; each defence overrides :meth:`screen`."""

    name = "defence"

    def __init__(self) -> None:
        self.last: dict[str, float] = {}  # what the last round's screen did

    def screen(self, updates: list[ItemUpdate], factors: np.ndarray | None = None,
               nodes: list[int] | None = None) -> list[ItemUpdate | None]:
        """The round's updates as they may be folded: each kept, changed, or None (its
        reply set aside). ``factors``: the item rows the devices were sent; ``nodes``: the
        node each update came from (None: unknown). Never mutates its input."""
        return list(updates)

    def state(self) -> dict:
        """What the defence remembers across rounds, as a checkpoint's run-state entries
        (JSON); none by default."""
        return {}

    def load(self, run: dict) -> None:
        """Restore :meth:`state` from a checkpoint's run state (values checked by the
        checkpoint's loader)."""

    def summary(self) -> dict[str, float]:
        """The last round's figures, keyed ``<name>-<figure>``."""
        return {f"{self.name}-{k}": float(v) for k, v in self.last.items()}
