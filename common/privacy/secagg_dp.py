"""``secagg+dp``: user-level (ε, δ) over everything the server receives: every device adds
its share of Skellam noise to its integer vector before SecAgg+ (:mod:`fedrec.common.ddp`,
:mod:`fedrec.common.als`, :mod:`fedrec.server.secagg_dp`)."""

from typing import Any

from fedrec.common.ddp import MAX_BITS
from fedrec.common.privacy import SECURE_SUM, Mode, Replies
from fedrec.common.privacy.secagg import STATEFUL, check_shares

SETTINGS = ("secagg_shares", "secagg_threshold", "dp_delta", "dp_epsilon", "ddp_rows",
            "ddp_select_share", "ddp_bits", "ddp_provisioned", "ddp_user_reg", "ddp_item_reg",
            "ddp_select_values")
# The learner solves rows exactly (alternating least squares over every item): the
# gradient learner's knobs mean nothing here, and there is no federated evaluation.
LEARNER = ("optimizer", "local_epochs", "lr", "reg", "reg_bias", "batch_size", "negatives",
           "negative_weight", "user_steps", "user_lr",
           "server_optimizer", "server_lr", "server_bias_optimizer", "server_bias_lr",
           "server_step_halving", "weighting", "cap", "max_norm", "evaluate_every",
           "fraction_evaluate")


def check(settings: Any) -> None:
    check_shares(settings)
    if not settings.dp_epsilon > 0 or not 0 < settings.dp_delta < 1:
        raise ValueError("secagg+dp needs a budget: dp-epsilon > 0 and dp-delta in (0, 1)")
    # SecAgg+ refuses more key shares than 2**32 / 2**bits.
    if not 2 <= settings.ddp_bits <= MAX_BITS or settings.secagg_shares > 2 ** (
            32 - settings.ddp_bits):
        raise ValueError(f"ddp-bits must be in [2, {MAX_BITS}] and leave 2**(32 - bits) >= "
                         f"secagg-shares")
    if settings.ddp_rows < 1 or not 0 < settings.ddp_select_share < 1 \
            or not 0 < settings.ddp_provisioned <= 1:
        raise ValueError("secagg+dp needs ddp-rows >= 1, ddp-select-share in (0, 1) and "
                         "ddp-provisioned in (0, 1]")
    if not (settings.ddp_user_reg > 0 and settings.ddp_item_reg > 0):
        raise ValueError("ddp-user-reg and ddp-item-reg must be > 0")
    if settings.ddp_select_values < 3:
        raise ValueError("ddp-select-values must be >= 3 (a sketch has 3 rows)")


MODE = Mode(
    name="secagg+dp",
    guarantee=(
        "User-level (ε, δ) over everything the server receives: each round is one sum, "
        "noised with Skellam noise the devices added, of every device's contribution "
        "clipped to one norm, composed over the run in Rényi DP with no reliance on "
        "sampling; it assumes a server that runs SecAgg+ as specified and fewer dropouts "
        "than ddp-provisioned allows for."),
    server_learns=(
        "Per round one noisy sum: every item's popularity (the round that chooses the row "
        "set), or the summed Gram matrix and the per-row sums of user vectors (fit "
        "rounds); how many devices finished. Nothing per device: no metrics, no counts, "
        "no evaluation or query replies."),
    replies=Replies(SECURE_SUM, (), ()),
    settings=SETTINGS,
    unsupported=STATEFUL + LEARNER,
    runner="secagg+dp",
    check=check,
    example=(("dp_epsilon", 8.0), ("ddp_rows", 20), ("secagg_shares", 3.0)),
)
