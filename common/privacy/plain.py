"""``plain``: no protection beyond what never leaves a device (raw events, user vectors)."""

from fedrec.common.privacy import SPARSE_REPLIES, Mode

MODE = Mode(
    name="plain",
    guarantee="None: the server sees each device's item update as it was computed.",
    server_learns=(
        "Each device's update: which items it touched (its rated items, or its positives "
        "and sampled negatives; with negative-pool < 1 the negatives come from a public "
        "pool, so its positives outside the pool stand apart), how their rows and biases "
        "moved, its number of training events and its training loss; its held-out error "
        "sums and count (ratings) or ranking metrics; for a rating model, whether it has "
        "ratings and their mean."),
    replies=SPARSE_REPLIES,
)
