"""What the operator does with its key: sign Control API tokens where the stock ``flwr`` CLI
reads them, and sign the app it runs.

* :func:`write_operator_key`: the operator's Ed25519 key pair (OpenSSH, private 0600) and
  the trusted-entities file SuperNodes and the SuperLink read (public).
* :func:`login`: a token for a federation, stored in ``$FLWR_HOME/credentials.yaml`` (what
  the stock CLI sends as ``Authorization: Bearer``); ``flwr supernode register``,
  ``flwr run`` and the rest then work for the operator, for the token's life.
* :func:`sign_app`: the ``fedrec-app-signature="..."`` run-config override ``flwr run``
  needs on a SuperLink started with ``--app-signers``.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from fedrec.server.control import signing, tokens
from fedrec.server.keys import refuse_overwrite, write_file

DEFAULT_TTL = 12 * 3600


def write_operator_key(folder: Path, force: bool = False) -> tuple[Path, Path, Path]:
    """``operator`` (private, 0600), ``operator.pub`` and ``trusted-entities.yaml`` in
    ``folder``; existing files are kept unless ``force``."""
    private, public, trusted = (folder / n for n in ("operator", "operator.pub",
                                                     "trusted-entities.yaml"))
    refuse_overwrite(folder, [p.name for p in (private, public, trusted)], force)
    key = ed25519.Ed25519PrivateKey.generate()
    write_file(private, key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()), private=True)
    write_file(public, (signing.ssh_line(key.public_key()) + " fedrec-operator\n").encode())
    write_file(trusted, trusted_entities([key.public_key()]).encode())
    return private, public, trusted


def trusted_entities(keys: list[ed25519.Ed25519PublicKey]) -> str:
    """The YAML a SuperNode's ``--trusted-entities`` reads: key id → OpenSSH line."""
    return "".join(f"{signing.key_id(k)}: '{signing.ssh_line(k)}'\n" for k in keys)


def login(federation: str | None, key_path: str | Path, audience: str = "fedrec-superlink",
          ttl: int = DEFAULT_TTL) -> str:
    """Sign a token and store it for ``federation`` (the CLI's config names it); returns
    the SuperLink address it is stored for."""
    from flwr.cli.constant import (
        ACCESS_TOKEN_STORE_KEY,
        AUTHN_TYPE_STORE_KEY,
        REFRESH_TOKEN_STORE_KEY,
    )
    from flwr.cli.flower_config import read_superlink_connection
    from flwr.common.constant import AuthnType
    from flwr.supercore.credential_store import get_credential_store

    if not 0 < ttl <= 24 * 3600:
        raise ValueError(f"a token lives between 1 s and 24 h. Found {ttl} s.")
    conn = read_superlink_connection(federation)
    if conn.insecure or not conn.address:
        raise ValueError(f"federation {federation!r}: the connection must use TLS and have "
                         "an address")
    token = tokens.mint(tokens.load_private_key(key_path), audience, ttl)
    store = get_credential_store()
    # The stock CLI picks its auth plugin from the authn-type entry, then sends the access
    # token; it wants a refresh token beside it, which this SuperLink never accepts.
    host = conn.address
    store.set(AUTHN_TYPE_STORE_KEY % host, AuthnType.OIDC.encode())
    store.set(ACCESS_TOKEN_STORE_KEY % host, token.encode())
    store.set(REFRESH_TOKEN_STORE_KEY % host, b"none")
    return host


def sign_app(app_dir: str | Path, key_path: str | Path) -> str:
    """The run-config override that lets ``flwr run APP_DIR`` run (the signature of the FAB
    Flower builds from ``app_dir``)."""
    value = signing.sign_fab(tokens.load_private_key(key_path), signing.build_fab(app_dir))
    return f'{signing.SIG_KEY}="{value}"'


def parse_ttl(text: str) -> int:
    """``90``, ``90s``, ``30m``, ``12h`` as seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip()
    try:
        return int(text[:-1]) * units[text[-1]] if text and text[-1] in units else int(text)
    except ValueError:
        raise ValueError(f"a time is a number of seconds, or with s, m, h. Found {text!r}.") \
            from None
