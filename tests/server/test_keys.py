"""``fedrec keys``: a CA, a server certificate that chains to it for the given hosts, and
node keys in the OpenSSH format Flower's node authentication reads."""

from __future__ import annotations

import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedrec.simulations.cli.main import main


def test_keys_make_a_chain_for_the_hosts_and_openssh_node_keys(tmp_path, capsys):
    out = tmp_path / "keys"
    assert main(["keys", "--out", str(out), "--hosts", "127.0.0.1,superlink.local",
                 "--nodes", "2"]) == 0
    assert "register" in capsys.readouterr().out
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    server = x509.load_pem_x509_certificate((out / "server.pem").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert server.issuer == ca.subject
    ca.public_key().verify(server.signature, server.tbs_certificate_bytes,
                           ec.ECDSA(hashes.SHA384()))  # raises if not signed by the CA
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["superlink.local"]
    key = serialization.load_pem_private_key((out / "server.key").read_bytes(), None)
    assert key.public_key().public_numbers() == server.public_key().public_numbers()
    for i in (1, 2):
        private = serialization.load_ssh_private_key((out / f"node-{i}").read_bytes(), None)
        public = serialization.load_ssh_public_key((out / f"node-{i}.pub").read_bytes())
        assert isinstance(private.curve, ec.SECP384R1)
        assert private.public_key().public_numbers() == public.public_numbers()
        assert (out / f"node-{i}.pub").read_bytes().startswith(b"ecdsa-sha2-nistp384 ")
        assert stat.S_IMODE((out / f"node-{i}").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "server.pem").stat().st_mode) == 0o644


def test_keys_never_overwrite_unless_forced(tmp_path, capsys):
    out = tmp_path / "keys"
    assert main(["keys", "--out", str(out), "--nodes", "1"]) == 0
    before = (out / "ca.key").read_bytes()
    assert main(["keys", "--out", str(out), "--nodes", "1"]) == 2
    assert "already exist" in capsys.readouterr().err
    assert (out / "ca.key").read_bytes() == before
    assert main(["keys", "--out", str(out), "--nodes", "1", "--force"]) == 0
    assert (out / "ca.key").read_bytes() != before
    with pytest.raises(SystemExit):
        main(["keys", "--nodes", "many"])
