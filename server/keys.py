"""``fedrec keys``: the credentials a TLS deployment with node authentication needs.

Built with ``cryptography`` (no OpenSSL shell scripts):

* a certificate authority (``ca.crt``, ``ca.key``; EC P-384, self-signed, CA only);
* the SuperLink's certificate for the given hosts (``server.pem``, ``server.key``; DNS names
  and IP addresses in its subject alternative names, signed by the CA, for server
  authentication only);
* one ECDSA P-384 key pair per SuperNode in OpenSSH format (``node-N`` and ``node-N.pub``),
  as Flower's node authentication expects: the public key is registered with
  ``flwr supernode register node-N.pub FEDERATION``, the private key is given to
  ``flower-supernode --auth-supernode-private-key node-N``.

Private keys are written with mode 0600, every file through a temporary file and a rename;
existing files are never overwritten unless asked.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedrec.common.atomic import atomic_open

CURVE = ec.SECP384R1()
VALID_DAYS = 825  # the longest validity TLS clients commonly accept for a server certificate


@dataclass(frozen=True)
class Credentials:
    """The files :func:`write_credentials` wrote."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    node_keys: tuple[Path, ...]  # private keys; each public key is beside it as ``.pub``


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedrec"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def make_ca(now: dt.datetime | None = None) -> tuple[ec.EllipticCurvePrivateKey,
                                                     x509.Certificate]:
    """A self-signed certificate authority that may sign certificates, nothing else."""
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(CURVE)
    name = _name("fedrec CA")
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA384()))
    return key, cert


def make_server_cert(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
                     hosts: Sequence[str], now: dt.datetime | None = None
                     ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The SuperLink's key and certificate, valid for ``hosts`` (names or IP addresses)."""
    if not hosts:
        raise ValueError("the server certificate needs at least one host name or address")
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(CURVE)
    cert = (x509.CertificateBuilder().subject_name(_name(hosts[0]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(_san(hosts), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA384()))
    return key, cert


def make_node_key() -> tuple[bytes, bytes]:
    """One SuperNode's ECDSA P-384 key pair: (private, public), both in OpenSSH format."""
    key = ec.generate_private_key(CURVE)
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH)
    return private, public + b"\n"


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_credentials(folder: str | Path, hosts: Sequence[str], nodes: int,
                      force: bool = False) -> Credentials:
    """Create the CA, the SuperLink's certificate for ``hosts`` and ``nodes`` node key pairs
    in ``folder``. Refuses to overwrite an existing file unless ``force``."""
    if nodes < 0:
        raise ValueError(f"nodes must be >= 0. Found {nodes}.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = ["ca.crt", "ca.key", "server.pem", "server.key"]
    names += [f"node-{i}{suffix}" for i in range(1, nodes + 1) for suffix in ("", ".pub")]
    refuse_overwrite(folder, names, force)
    ca_key, ca_cert = make_ca()
    server_key, server_cert = make_server_cert(ca_key, ca_cert, hosts)
    write_file(folder / "ca.crt", _pem_cert(ca_cert))
    write_file(folder / "ca.key", _pem_key(ca_key), private=True)
    write_file(folder / "server.pem", _pem_cert(server_cert))
    write_file(folder / "server.key", _pem_key(server_key), private=True)
    node_keys = []
    for i in range(1, nodes + 1):
        private, public = make_node_key()
        write_file(folder / f"node-{i}", private, private=True)
        write_file(folder / f"node-{i}.pub", public)
        node_keys.append(folder / f"node-{i}")
    return Credentials(folder / "ca.crt", folder / "ca.key", folder / "server.pem",
                       folder / "server.key", tuple(node_keys))


def write_file(path: Path, data: bytes, private: bool = False) -> None:
    """Write ``data`` through a temporary file and a rename, 0600 if ``private``."""
    with atomic_open(path, "wb") as out:  # the temporary file is created 0600
        os.fchmod(out.fileno(), 0o600 if private else 0o644)
        out.write(data)


def refuse_overwrite(folder: Path, names: Sequence[str], force: bool = False) -> None:
    """Raise FileExistsError naming the files of ``names`` in ``folder`` that exist, unless
    ``force``: credentials are never replaced by accident."""
    existing = [n for n in names if (folder / n).exists()]
    if existing and not force:
        raise FileExistsError(f"{folder}: {', '.join(existing)} already exist "
                              "(use --force to replace them)")


def write_secret(path: Path, force: bool = False, hex_digits: bool = False) -> Path:
    """32 random bytes (or their 64 hex digits) in a new 0600 file: a shared secret or a
    key."""
    refuse_overwrite(path.parent, [path.name], force)
    secret = os.urandom(32)
    write_file(path, secret.hex().encode() if hex_digits else secret, private=True)
    return path


def write_device_credentials(folder: str | Path, force: bool = False) -> tuple[Path, Path]:
    """A device's own credentials, made on the device: its SuperNode key pair (``node``,
    ``node.pub``, the public half for the operator to register) and the secret its SuperNode
    shares with its SuperExec (``superexec.secret``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    refuse_overwrite(folder, ("node", "node.pub", "superexec.secret"), force)
    private, public = make_node_key()
    write_file(folder / "node", private, private=True)
    write_file(folder / "node.pub", public)
    write_secret(folder / "superexec.secret", force=True)
    return folder / "node", folder / "superexec.secret"
