"""Operator-signed apps, in the format Flower 1.42's SuperNode already verifies.

A SuperNode started with `--trusted-entities FILE` (FILE: {key_id: "ssh-ed25519 ..."})
runs a run's ClientApp only if the FAB it gets from the SuperLink carries
`verifications = {"valid_license": <non-empty>, key_id: '{"signature": S, "signed_at": T}'}`
with S an Ed25519 signature of `T (8 bytes big-endian) || sha256(fab.content)` by a trusted
key (flwr/supernode/start_client_internal.py:344-367, 606-634;
flwr/supercore/primitives/asymmetric_ed25519.py create_message_to_sign).

Stock Flower never fills `verifications` for an uploaded FAB (control_handlers.py:637,
687-688: `verification_dict = {}`; the request's own `fab.verifications` is ignored). The
SuperLink launcher therefore wraps `control_handlers.start_run`:
  * the signature travels in the run-config override `fedrec-app-signature`
    ("KEYID.SIGNED_AT.B64URL_SIG"), which the wrapper removes before Flower sees it;
  * the wrapper verifies it against the app-signer keys (fail closed: no run, no ServerApp);
  * it passes Flower a LinkState proxy whose store_app() stores the FAB with the
    verifications, before create_run() makes the run visible to anyone.
The SuperNode checks the signature itself, so the SuperLink cannot forge one; it only relays.

What the signature pins: the FAB's bytes (its module references, any modules it carries,
its run-config defaults). fedrec's FAB carries no ``fedrec`` package: a device runs the
fedrec it has installed, and the signed FAB decides which of its components run. Flower
does not check ``signed_at``: an old signed build stays valid until the key changes.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import yaml
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from flwr.common.serde import user_config_from_proto
from flwr.supercore.error import ApiErrorCode, FlowerError
from flwr.supercore.fab import Fab
from flwr.supercore.primitives.asymmetric_ed25519 import (
    create_message_to_sign,
    decode_base64url,
)

from fedrec.server.control.tokens import b64u

SIG_KEY = "fedrec-app-signature"
VALID_LICENSE = "fedrec-operator-signed"


def key_id(public_key: ed25519.Ed25519PublicKey) -> str:
    """The key's id in a trusted-entities file: ``fpk_`` and its hash."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "fpk_" + hashlib.sha256(raw).hexdigest()[:24]


def ssh_line(public_key: ed25519.Ed25519PublicKey) -> str:
    """The key as an OpenSSH public-key line."""
    return public_key.public_bytes(serialization.Encoding.OpenSSH,
                                   serialization.PublicFormat.OpenSSH).decode()


def build_fab(app_dir: str | Path) -> bytes:
    """The bytes `flwr run APP_DIR` uploads (Flower's own deterministic builder)."""
    from flwr.cli.build import build_fab_from_disk

    return build_fab_from_disk(Path(app_dir).expanduser().resolve())


def sign_fab(key: ed25519.Ed25519PrivateKey, fab: bytes, signed_at: int | None = None) -> str:
    """The value of the ``fedrec-app-signature`` run-config key for ``fab``."""
    t = int(time.time() if signed_at is None else signed_at)
    sig = key.sign(create_message_to_sign(hashlib.sha256(fab).digest(), t))
    return f"{key_id(key.public_key())}.{t}.{b64u(sig)}"


def load_signers(trusted_entities_yaml: str | Path) -> dict[str, ed25519.Ed25519PublicKey]:
    """The SuperNode's --trusted-entities file, read the same way."""
    try:
        data = yaml.safe_load(Path(trusted_entities_yaml).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{trusted_entities_yaml}: not a readable trusted-entities file "
                         f"({exc})") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{trusted_entities_yaml}: expected a non-empty mapping")
    out = {}
    for kid, line in data.items():
        try:
            key = serialization.load_ssh_public_key(str(line).encode())
        except ValueError as exc:
            raise ValueError(f"{trusted_entities_yaml}: {kid}: not an OpenSSH public key "
                             f"({exc})") from None
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise ValueError(f"{trusted_entities_yaml}: {kid} is not Ed25519")
        out[str(kid)] = key
    return out


def verifications_for(fab: bytes, value: str,
                      signers: dict[str, ed25519.Ed25519PublicKey]) -> dict[str, str] | None:
    """Flower-format verifications if `value` is a valid signature of `fab`, else None."""
    try:
        kid, signed_at, sig = value.split(".")
        t = int(signed_at)
        key = signers[kid]
        key.verify(decode_base64url(sig), create_message_to_sign(hashlib.sha256(fab).digest(), t))
    except (ValueError, KeyError, TypeError, OverflowError, InvalidSignature,
            binascii.Error):  # any malformed or wrong signature is just "no"
        return None
    return {"valid_license": VALID_LICENSE,
            kid: json.dumps({"signature": sig, "signed_at": t})}


class SigningState:
    """LinkState proxy: store_app() stores the FAB with the operator's verifications."""

    def __init__(self, state: object, verifications: dict[str, str]) -> None:
        self._state, self._verifications = state, verifications

    def store_app(self, fab: Fab, *args: object, **kwargs: object) -> object:
        signed = Fab(fab.hash_str, fab.content, {**fab.verifications, **self._verifications})
        return self._state.store_app(signed, *args, **kwargs)

    def __getattr__(self, name: str) -> object:
        return getattr(self._state, name)


def _refuse(why: str) -> FlowerError:
    return FlowerError(ApiErrorCode.INVALID_RUN_CONFIG, f"fedrec: {why}", public_details=why)


def wrap_start_run(original: Callable, signers: dict[str, ed25519.Ed25519PublicKey]
                   ) -> Callable:
    """Flower's ``start_run`` handler, run only for an uploaded FAB whose run config carries
    a valid signature by one of ``signers``; the signature then travels with the FAB."""
    def start_run(request, account, state, fleet_api_type, *, source="unknown"):  # noqa: ANN001
        if request.app_spec or not request.fab.content:
            raise _refuse("only uploaded, operator-signed apps may run on this SuperLink")
        value = user_config_from_proto(request.override_config).get(SIG_KEY)
        if not isinstance(value, str):
            raise _refuse(f"missing run-config '{SIG_KEY}' (fedrec operator sign-app)")
        verifications = verifications_for(request.fab.content, value, signers)
        if verifications is None:
            raise _refuse("the app signature does not verify for this FAB")
        del request.override_config[SIG_KEY]
        return original(request, account, SigningState(state, verifications),
                        fleet_api_type, source=source)

    start_run.__wrapped__ = original
    return start_run
