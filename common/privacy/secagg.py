"""``secagg``: Flower's SecAgg+ sums every device's dense update over the round's public
block of rows (the catalogue, or ``secagg-rows`` of it in turn); the server sees only the
sum (:mod:`fedrec.server.secagg`)."""

from typing import Any

from fedrec.common.privacy import RANKING_FIELDS, RATING_FIELDS, SECURE_SUM, Mode, Replies

SETTINGS = ("secagg_shares", "secagg_threshold")
# What a secure-sum run cannot honour: the checkpoint and delta sync belong to the sparse
# strategy.
# (The negative pool is for runs whose devices sync rows: secagg sends whole tables.)
STATEFUL = ("checkpoint", "checkpoint_key_file", "checkpoint_fresh", "sync", "sync_threshold",
            "negative_pool", "negative_pool_rounds", "stop_patience")


def check_shares(settings: Any) -> None:
    if not (settings.secagg_shares > 0 and 0 < settings.secagg_threshold <= 1):
        raise ValueError("secagg needs secagg-shares > 0 and secagg-threshold in (0, 1]")


def check(settings: Any) -> None:
    check_shares(settings)
    if settings.secagg_bucket < 2:
        raise ValueError("secagg needs secagg-bucket >= 2")
    if settings.secagg_rows < 0:
        raise ValueError("secagg needs secagg-rows >= 0 (0: the whole catalogue)")


MODE = Mode(
    name="secagg",
    guarantee=(
        "Each device's update is hidden in the round's sum (SecAgg+ against an "
        "honest-but-curious server and fewer colluding devices than the reconstruction "
        "threshold); the sum itself is exact, with no differential privacy."),
    server_learns=(
        "Per round, the exact sum over its devices of their dense update vectors over the "
        "round's public block of rows (per item: the weighted row and bias sums, the "
        "weights, how many devices touched it); for a "
        "rating model, one sum per bucket of devices for μ; each device's held-out "
        "evaluation metrics, in the clear."),
    replies=Replies(SECURE_SUM, RATING_FIELDS + RANKING_FIELDS, ()),
    settings=(*SETTINGS, "secagg_bucket", "secagg_rows"),
    unsupported=STATEFUL,
    runner="secagg",
    check=check,
    example=(("secagg_shares", 3.0),),
)
