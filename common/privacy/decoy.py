"""``decoy``: every train reply names the same number of rows, its real rows among decoys
(:mod:`fedrec.client.decoy`)."""

from fedrec.common.privacy import SPARSE_REPLIES, Mode

SETTINGS = ("decoy_rows",)
# A public negative pool would let the server set a reply's pool rows aside and look for
# the positives among fewer rows: refused with the decoys (decoy and decoy+dp).
POOL = ("negative_pool", "negative_pool_rounds")

MODE = Mode(
    name="decoy",
    guarantee=("No formal guarantee: a reply's size and the rows it names no longer tell "
               "which items a device has or how active it is, as far as the bench's "
               "attacks measure (membership AUC, decoy audit)."),
    server_learns=(
        "Each device's update padded to decoy-rows rows (the real ones among decoys drawn "
        "by popularity), its training loss, and num-examples fixed at 1; evaluation "
        "replies with no held-out counts or error sums (ranking metrics are the device's "
        "own ratios, with no segment or tail counts; rating replies its mean squared and "
        "absolute error, counted as one example, so the pooled RMSE averages over users, "
        "not ratings); query replies as in plain (whether it has ratings, and their "
        "mean)."),
    replies=SPARSE_REPLIES,
    settings=SETTINGS,
    unsupported=POOL,
    layers=("decoy",),
    example=(("decoy_rows", 20),),
)
