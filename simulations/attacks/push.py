"""The target push: train honestly on a crafted history, then move the target's row
towards the mean of the highest-bias rows and raise its bias, as far as the server's
published norm bound allows.

Knows: the table it is sent and the server's norm bound. Nothing about other users.
"""

from __future__ import annotations

import numpy as np

from fedrec.common.schema import ItemUpdate
from fedrec.simulations.attacks.base import Attack, Request, merge, movement_update


class TargetPush(Attack):
    name = "push"
    knows = "the table it is sent and the server's norm bound"

    def craft(self, request: Request, device: int) -> tuple[ItemUpdate, dict[str, float]]:
        update, metrics = self.honest(request, device)
        t = self.k.target
        top = np.argsort(-request.bias, kind="stable")[:max(10, len(request.bias) // 20)]
        towards = request.factors[top].mean(axis=0) - request.factors[t]
        lift = max(1.0, float(request.bias[top].mean() - request.bias[t]))
        crafted = movement_update(np.array([t]), towards[None, :], np.array([lift]),
                                  self.k.max_norm)
        return merge(update, crafted), metrics


class NoisyPush(TargetPush):
    """The target push with each device's row direction blurred by its own random noise
    (as long as the push itself), so that no two devices' rows on the target point the
    same way, while their mean still does. Knows also that the server sets aside devices
    whose rows point alike (``coordination``)."""

    name = "push-noise"
    knows = "the table, the norm bound, and that alike rows are set aside"

    def craft(self, request: Request, device: int) -> tuple[ItemUpdate, dict[str, float]]:
        update, metrics = super().craft(request, device)
        at = int(np.searchsorted(update.ids, self.k.target))
        rows, bias = update.rows.copy(), update.bias.copy()
        row = np.append(rows[at], bias[at]).astype(np.float64)
        noise = self.rng(device, request.server_round).standard_normal(len(row))
        row = row + noise * np.linalg.norm(row) / np.linalg.norm(noise)
        row *= self.k.max_norm * (1 - 1e-5) / np.linalg.norm(row)
        rows[at], bias[at] = row[:-1], row[-1]
        return ItemUpdate(update.ids, rows, bias, update.counts), metrics


class JitteredPush(TargetPush):
    """The target push with each device's row turned by a small random angle (``degrees``,
    3° by default) in a direction of its own: the push keeps nearly all its strength and
    every device's mean still points where the push does, but no two rows are copies.
    Knows also that the server compares the directions of devices' rows on an item
    (``coordination``) after taking off the item's own row, along which the push mostly
    lies, so a small turn of the whole row is a large one of what is compared."""

    name = "push-jitter"
    knows = "the table, the norm bound, and how alike rows are found"
    degrees = 3.0

    def craft(self, request: Request, device: int) -> tuple[ItemUpdate, dict[str, float]]:
        update, metrics = super().craft(request, device)
        at = int(np.searchsorted(update.ids, self.k.target))
        rows, bias = update.rows.copy(), update.bias.copy()
        row = np.append(rows[at], bias[at]).astype(np.float64)
        norm = np.linalg.norm(row)
        side = self.rng(device, request.server_round).standard_normal(len(row))
        side -= (side @ row) / norm**2 * row  # a direction at right angles to the row
        side *= norm / np.linalg.norm(side)
        turn = np.radians(self.degrees)
        row = np.cos(turn) * row + np.sin(turn) * side  # the same length, turned
        rows[at], bias[at] = row[:-1], row[-1]
        return ItemUpdate(update.ids, rows, bias, update.counts), metrics
