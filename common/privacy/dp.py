"""``dp``: each device clips its whole update and adds Gaussian noise to every value it
sends (:mod:`fedrec.common.privacy.gaussian`); the server accounts ε over the run."""

from typing import Any

from fedrec.common.privacy import SEGMENTED_REPLIES, Mode

SETTINGS = ("dp_clip", "dp_noise", "dp_delta", "dp_epsilon")


def check(settings: Any) -> None:
    if not (settings.dp_clip > 0 and settings.dp_noise > 0 and 0 < settings.dp_delta < 1
            and settings.dp_epsilon >= 0):
        raise ValueError("dp needs dp-clip > 0, dp-noise > 0, dp-delta in (0, 1) and "
                         "dp-epsilon >= 0")


MODE = Mode(
    name="dp",
    guarantee=(
        "(ε, δ) at the user level for the values of each train reply's rows and biases "
        "(clipped to dp-clip, Gaussian noise dp-noise·dp-clip on every value), accounted "
        "over the run with amplification by sampling at fraction-train; it does not cover "
        "which rows a reply names, its training loss or event count, nor evaluation or "
        "query replies."),
    server_learns=(
        "Each device's noised update and the ids of its rows (its positives and sampled "
        "negatives: membership stays visible), its training loss and number of training "
        "events un-noised; evaluation and query replies as in plain."),
    replies=SEGMENTED_REPLIES,
    settings=SETTINGS,
    layers=("dp",),
    check=check,
)
