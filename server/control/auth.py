"""A Control API authentication plugin for Flower 1.42's SuperLink: a request is the
operator's iff its ``Authorization: Bearer`` token is an access token signed by an operator
key (:mod:`fedrec.server.control.tokens`).

Flower's open-source SuperLink authenticates nothing on its Control API (its plugin is a
no-op; OIDC accounts come only with Flower's enterprise package): anyone who reaches the
port could register nodes and run apps. This plugin takes the no-op's place
(:mod:`fedrec.server.control.superlink`). The account it maps a valid token to is Flower's
no-op account, because the no-op federation manager admits only that one
(``flwr/superlink/federation/noop_federation_manager.py``): one operator, no identities.
"""

from __future__ import annotations

from collections.abc import Sequence
from logging import INFO, WARNING

from flwr.common.constant import ACCESS_TOKEN_KEY, NOOP_ACCOUNT_NAME, NOOP_FLWR_AID
from flwr.supercore import log
from flwr.supercore.auth.typing import (
    AccountAuthCredentials,
    AccountAuthLoginDetails,
    AccountInfo,
)
from flwr.supercore.error import ApiErrorCode, FlowerError
from flwr.superlink.auth_plugin import ControlAuthnPlugin

from fedrec.server.control.tokens import Verifier


class OperatorKeyAuthnPlugin(ControlAuthnPlugin):
    """Accept only operator-signed, unexpired access tokens; no login/refresh server-side."""

    def __init__(self, verifier: Verifier | None = None) -> None:
        if verifier is None:
            raise ValueError("OperatorKeyAuthnPlugin needs a Verifier")
        self.verifier = verifier

    def get_login_details(self) -> AccountAuthLoginDetails | None:
        """There is no login at the SuperLink: the operator signs tokens itself."""
        hint = ("This SuperLink takes operator-signed tokens: run "
                "`fedrec operator login FEDERATION --key OPERATOR_KEY`.")
        raise FlowerError(ApiErrorCode.NO_ACCOUNT_AUTH, hint, public_details=hint)

    def validate_tokens_in_metadata(
        self, metadata: Sequence[tuple[str, str | bytes]]
    ) -> tuple[bool, AccountInfo | None]:
        """Valid iff exactly one access token, signed by an operator key, unexpired."""
        tokens = [v for k, v in metadata if k == ACCESS_TOKEN_KEY]
        if len(tokens) != 1 or not isinstance(tokens[0], str):
            log(WARNING, "Control API request without an operator token refused")
            return False, None
        claims = self.verifier.verify(tokens[0])
        if claims is None:
            log(WARNING, "Control API request with an invalid operator token refused")
            return False, None
        log(INFO, "Control API request by operator token jti=%s", claims.get("jti"))
        return True, AccountInfo(flwr_aid=NOOP_FLWR_AID, account_name=NOOP_ACCOUNT_NAME)

    def get_auth_tokens(self, device_code: str) -> AccountAuthCredentials | None:
        """No device flow: nothing for anyone to collect."""
        return None

    def refresh_tokens(
        self, metadata: Sequence[tuple[str, str | bytes]]
    ) -> tuple[Sequence[tuple[str, str | bytes]] | None, AccountInfo | None]:
        """No refresh: an expired token is replaced by the operator signing a new one."""
        return None, None
