"""Operator tokens for the SuperLink's Control API: Ed25519-signed claims with an expiry.

The Control API (registering and unregistering SuperNodes, listing nodes and runs,
submitting and stopping runs) is the operator's alone: the SuperLink accepts a request only
with a token signed by an operator key (:mod:`fedrec.server.control.auth`).

    token   = "fedrec1." + b64url(claims JSON) + "." + b64url(signature)
    signed  = b"fedrec-control-token/v1\\0" + b64url(claims JSON)      (domain-separated)
    claims  = {"typ": "access", "aud": AUDIENCE, "sub": NAME, "iat": T, "exp": T + ttl,
               "jti": random}

The operator's private key (OpenSSH Ed25519, 0600) stays with the operator; the SuperLink
holds only the public key(s). Nothing here is secret on the server side. A token lives at
most ``max_ttl`` (24 h by default); there is no refresh: the operator signs a new one
(``fedrec operator login``).
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

PREFIX = "fedrec1"
DOMAIN = b"fedrec-control-token/v1\x00"
MAX_TOKEN_CHARS = 4096
CLOCK_SKEW = 60  # seconds a token's iat may lie in the future


def b64u(data: bytes) -> str:
    """URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64u(text: str) -> bytes:
    """The bytes of :func:`b64u` text; ValueError for anything else."""
    if not text or any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                       "0123456789-_" for c in text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_private_key(path: str | Path) -> ed25519.Ed25519PrivateKey:
    """The operator's OpenSSH Ed25519 private key; ValueError naming the file otherwise."""
    try:
        key = serialization.load_ssh_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not a readable OpenSSH private key ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def load_public_keys(path: str | Path) -> list[ed25519.Ed25519PublicKey]:
    """One OpenSSH public key per line (authorized_keys style; '#' comments)."""
    keys = []
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the operator's public keys ({exc})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key = serialization.load_ssh_public_key(line.encode())
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: not an OpenSSH public key ({exc})") from None
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise ValueError(f"{path}: not an Ed25519 public key: {line[:40]}")
        keys.append(key)
    if not keys:
        raise ValueError(f"{path}: no public key")
    return keys


def mint(key: ed25519.Ed25519PrivateKey, audience: str, ttl: int, sub: str = "operator",
         typ: str = "access", now: float | None = None) -> str:
    """A token for ``audience`` (the SuperLink's name), valid ``ttl`` seconds from now."""
    iat = int(time.time() if now is None else now)
    claims = {"typ": typ, "aud": audience, "sub": sub, "iat": iat, "exp": iat + int(ttl),
              "jti": secrets.token_hex(8)}
    payload = b64u(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    return f"{PREFIX}.{payload}.{b64u(key.sign(DOMAIN + payload.encode()))}"


@dataclass(frozen=True)
class Verifier:
    """Checks tokens against the operator's public keys, for one audience."""

    keys: tuple[ed25519.Ed25519PublicKey, ...]
    audience: str
    max_ttl: int

    def verify(self, token: str, now: float | None = None) -> dict | None:
        """The claims of a valid access token, else None (never raises)."""
        try:
            if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
                return None
            prefix, payload, sig = token.split(".")
            if prefix != PREFIX:
                return None
            signature = unb64u(sig)
            for key in self.keys:
                try:
                    key.verify(signature, DOMAIN + payload.encode("ascii"))
                    break
                except InvalidSignature:
                    continue
            else:
                return None
            claims = json.loads(unb64u(payload))
            t = time.time() if now is None else now
            iat, exp = claims["iat"], claims["exp"]
            if not (isinstance(iat, int) and isinstance(exp, int)):
                return None
            if (claims.get("typ") != "access" or claims.get("aud") != self.audience
                    or iat > t + CLOCK_SKEW or exp <= t or exp - iat > self.max_ttl):
                return None
            return claims
        except (ValueError, KeyError, TypeError, UnicodeError, binascii.Error,
                json.JSONDecodeError):
            return None
