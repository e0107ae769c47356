"""``decoy+dp``: decoy padding, then the dp mode's clipping and noise."""

from fedrec.common.privacy import SPARSE_REPLIES, Mode, decoy, dp

MODE = Mode(
    name="decoy+dp",
    guarantee=dp.MODE.guarantee.replace("which rows a reply names", "the decoy padding"),
    server_learns=(
        "Each device's padded update with every value noised (the rows it names are its "
        "real ones among decoys), its training loss; num-examples fixed at 1; evaluation "
        "replies as in decoy (no held-out counts or error sums); query replies as in "
        "plain."),
    replies=SPARSE_REPLIES,
    settings=decoy.SETTINGS + dp.SETTINGS,
    unsupported=decoy.POOL,
    layers=("decoy", "dp"),
    check=dp.check,
    example=(("decoy_rows", 20),),
)
