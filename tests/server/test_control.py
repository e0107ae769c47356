"""The operator-only control plane, piece by piece (the real-process tests are in
tests/deployment/test_control_plane.py): operator tokens, the authentication plugin that
checks them, signed apps and the StartRun check, the credentials `fedrec keys` and
`fedrec device-keys` write."""

from __future__ import annotations

import hashlib
import json
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from fedrec.server.control import signing, tokens
from fedrec.server.control.auth import OperatorKeyAuthnPlugin
from fedrec.simulations.cli.main import main

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def keys():
    return ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()


def verifier(key, max_ttl=86_400) -> tokens.Verifier:
    return tokens.Verifier((key.public_key(),), "fedrec-superlink", max_ttl)


def test_an_operator_token_verifies_and_every_other_does_not(keys):
    operator, stranger = keys
    good = tokens.mint(operator, "fedrec-superlink", 3600, now=NOW)
    v = verifier(operator)
    assert v.verify(good, now=NOW + 10)["sub"] == "operator"
    prefix, payload, sig = good.split(".")
    forged_claims = tokens.b64u(json.dumps({"typ": "access", "aud": "fedrec-superlink",
                                            "sub": "x", "iat": int(NOW),
                                            "exp": int(NOW) + 10**6}).encode())
    refused = {
        "expired": v.verify(good, now=NOW + 3601),
        "from the future": v.verify(good, now=NOW - 3600),
        "another key": v.verify(tokens.mint(stranger, "fedrec-superlink", 60, now=NOW),
                                now=NOW),
        "another audience": v.verify(tokens.mint(operator, "other", 60, now=NOW), now=NOW),
        "longer than allowed": verifier(operator, 600).verify(good, now=NOW),
        "a refresh token": v.verify(tokens.mint(operator, "fedrec-superlink", 60,
                                                typ="refresh", now=NOW), now=NOW),
        "claims changed": v.verify(f"{prefix}.{forged_claims}.{sig}", now=NOW),
        "signature cut": v.verify(f"{prefix}.{payload}.{sig[:-4]}", now=NOW),
        "not base64": v.verify(f"{prefix}.{payload}.!!!!", now=NOW),
        "another prefix": v.verify(f"jwt.{payload}.{sig}", now=NOW),
        "huge": v.verify("fedrec1." + "A" * 10_000 + ".AA", now=NOW),
        "not text": v.verify(b"fedrec1.x.y", now=NOW),
        "empty": v.verify("", now=NOW),
    }
    assert {k: r for k, r in refused.items() if r is not None} == {}


def test_the_plugin_admits_exactly_one_valid_token_and_has_no_login_to_poke(keys):
    operator, stranger = keys
    plugin = OperatorKeyAuthnPlugin(verifier(operator))
    from flwr.common.constant import ACCESS_TOKEN_KEY
    from flwr.supercore.error import FlowerError

    token = tokens.mint(operator, "fedrec-superlink", 60)
    assert plugin.validate_tokens_in_metadata([(ACCESS_TOKEN_KEY, token)])[0]
    for metadata in ([], [(ACCESS_TOKEN_KEY, token), (ACCESS_TOKEN_KEY, token)],
                     [(ACCESS_TOKEN_KEY, tokens.mint(stranger, "fedrec-superlink", 60))],
                     [(ACCESS_TOKEN_KEY, token.encode())], [("other", token)]):
        assert plugin.validate_tokens_in_metadata(metadata) == (False, None)
    with pytest.raises(FlowerError):
        plugin.get_login_details()
    assert plugin.get_auth_tokens("any device code") is None
    assert plugin.refresh_tokens([(ACCESS_TOKEN_KEY, token)]) == (None, None)


def test_a_fab_signature_verifies_only_for_those_bytes_and_that_key(keys):
    operator, stranger = keys
    signers = {signing.key_id(operator.public_key()): operator.public_key()}
    fab, other = b"PK\x03\x04 the app", b"PK\x03\x04 another app"
    value = signing.sign_fab(operator, fab, signed_at=int(NOW))
    verified = signing.verifications_for(fab, value, signers)
    kid = signing.key_id(operator.public_key())
    assert verified["valid_license"] and json.loads(verified[kid])["signed_at"] == int(NOW)
    # In the format Flower's SuperNode checks (its own verification function).
    from flwr.supercore.fab import Fab
    from flwr.supernode.start_client_internal import _verify_fab

    trusted = {kid: signing.ssh_line(operator.public_key())}
    assert _verify_fab(Fab(hashlib.sha256(fab).hexdigest(), fab, verified), trusted)
    assert not _verify_fab(Fab(hashlib.sha256(other).hexdigest(), other, verified), trusted)
    for bad in (signing.verifications_for(other, value, signers),
                signing.verifications_for(fab, signing.sign_fab(stranger, fab), signers),
                signing.verifications_for(fab, value.replace(".", "", 1), signers),
                signing.verifications_for(fab, "a.b.c", signers),
                signing.verifications_for(fab, "", signers)):
        assert bad is None


def test_start_run_refuses_unsigned_foreign_and_stored_apps_and_hides_the_signature(keys):
    from flwr.common.serde import user_config_to_proto
    from flwr.proto.control_pb2 import StartRunRequest
    from flwr.proto.fab_pb2 import Fab as FabProto
    from flwr.supercore.error import FlowerError

    operator, stranger = keys
    signers = {signing.key_id(operator.public_key()): operator.public_key()}
    seen = []

    def flower_start_run(request, account, state, fleet_api_type, *, source="unknown"):
        seen.append((dict(request.override_config), state))
        return "started"

    start_run = signing.wrap_start_run(flower_start_run, signers)
    fab = b"PK the operator's app"

    def request(config: dict, content: bytes = fab) -> StartRunRequest:
        return StartRunRequest(fab=FabProto(content=content),
                               override_config=user_config_to_proto(config))

    good = signing.sign_fab(operator, fab)
    for config, content in (({}, fab), ({signing.SIG_KEY: good}, b"PK another app"),
                            ({signing.SIG_KEY: signing.sign_fab(stranger, fab)}, fab),
                            ({signing.SIG_KEY: 7}, fab), ({signing.SIG_KEY: good}, b"")):
        with pytest.raises(FlowerError):
            start_run(request(config, content), None, object(), "grpc-rere")
    assert seen == []  # Flower's handler never ran: no run, no ServerApp
    assert start_run(request({signing.SIG_KEY: good, "num-rounds": 3}), None, object(),
                     "grpc-rere") == "started"
    config, state = seen[0]
    assert signing.SIG_KEY not in config and isinstance(state, signing.SigningState)


def test_the_operator_s_and_the_device_s_credentials_are_private(tmp_path, capsys):
    out = tmp_path / "keys"
    assert main(["keys", "--out", str(out)]) == 0
    for name in ("operator", "superexec.secret", "checkpoint.key", "ca.key", "server.key"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600, name
    for name in ("operator.pub", "trusted-entities.yaml", "ca.crt"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name
    loaded = signing.load_signers(out / "trusted-entities.yaml")
    key = tokens.load_private_key(out / "operator")
    assert list(loaded) == [signing.key_id(key.public_key())]
    assert tokens.load_public_keys(out / "operator.pub")[0].public_bytes_raw() == \
        key.public_key().public_bytes_raw()
    assert len(bytes.fromhex((out / "checkpoint.key").read_text())) == 32
    assert len((out / "superexec.secret").read_bytes()) == 32
    assert main(["keys", "--out", str(out)]) == 2  # nothing replaced
    assert "already exist" in capsys.readouterr().err
    device = tmp_path / "device-1"
    assert main(["device-keys", str(device)]) == 0
    assert stat.S_IMODE((device / "node").stat().st_mode) == 0o600
    assert (device / "node.pub").read_bytes().startswith(b"ecdsa-sha2-nistp384 ")
    assert main(["device-keys", str(device)]) == 2


def test_bad_operator_files_are_named(tmp_path):
    (tmp_path / "not-a-key").write_text("hello")
    with pytest.raises(ValueError, match=r"not-a-key: not a readable OpenSSH private key"):
        tokens.load_private_key(tmp_path / "not-a-key")
    with pytest.raises(ValueError, match=r"not-a-key:1: not an OpenSSH public key"):
        tokens.load_public_keys(tmp_path / "not-a-key")
    (tmp_path / "empty.pub").write_text("# nothing\n")
    with pytest.raises(ValueError, match="no public key"):
        tokens.load_public_keys(tmp_path / "empty.pub")
    (tmp_path / "t.yaml").write_text("fpk_x: 'ssh-rsa AAAA'\n")
    with pytest.raises(ValueError, match="fpk_x: not an OpenSSH public key"):
        signing.load_signers(tmp_path / "t.yaml")
    assert main(["superlink", "--operator-keys", str(tmp_path / "missing.pub")]) == 2


@pytest.mark.parametrize(("ttl", "seconds"), [("90", 90), ("30m", 1800), ("12h", 43_200)])
def test_token_lifetimes_are_read_with_their_unit(ttl, seconds):
    from fedrec.server.control.operator import parse_ttl

    assert parse_ttl(ttl) == seconds


@pytest.mark.parametrize("ttl", ["abc", "", "h", "1.5h", "2w", "25h", "0", "-5m"])
def test_a_bad_token_lifetime_is_refused_before_anything_is_signed(tmp_path, ttl, capsys,
                                                                  monkeypatch):
    out = tmp_path / "keys"
    assert main(["keys", "--out", str(out)]) == 0
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('[superlink]\ndefault = "local"\n\n'
                                      '[superlink.local]\naddress = "127.0.0.1:1"\n'
                                      f'root-certificates = "{out / "ca.crt"}"\n')
    monkeypatch.setenv("FLWR_HOME", str(home))
    assert main(["operator", "login", "local", "--key", str(out / "operator"),
                 f"--ttl={ttl}"]) == 2
    assert "fedrec: error:" in capsys.readouterr().err
    assert not (home / "credentials.yaml").exists()
