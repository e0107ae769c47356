"""``plain``: no protection beyond what never leaves a device (raw events, user vectors)."""

from fedrec.common.privacy import SEGMENTED_REPLIES, Mode

MODE = Mode(
    name="plain",
    guarantee="None: the server sees each device's item update as it was computed.",
    server_learns=(
        "Each device's update: which items it touched (its rated items, or its positives "
        "and sampled negatives; with negative-pool < 1 the negatives come from a public "
        "pool, so its positives outside the pool stand apart), how their rows and biases "
        "moved, its number of training events and its training loss; its held-out error "
        "sums and count (ratings) or ranking metrics (in a simulation's evaluation also "
        "its segment: light, middle or heavy by its count of training events, and how "
        "many of its recommended places, hits and held-out items are tail items); with "
        "stop-patience, the same figures for the latest training event it holds out; for "
        "a rating model, whether it has ratings and their mean; in a ratings stream with "
        "the neighbours part, the items it rated since its last reply and its residual "
        "on each (rating minus its baseline, which the bias moves above already reveal)."),
    replies=SEGMENTED_REPLIES,
)
