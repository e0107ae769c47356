"""A real SuperLink with TLS and node authentication on 127.0.0.1, with the credentials
``fedrec keys`` makes: a registered SuperNode joins, an unregistered one is refused, and
a client without the CA cannot talk to the SuperLink."""

from __future__ import annotations

import pytest

from fedrec.server.keys import write_credentials
from tests.deployment.conftest import flwr, free_port, tls_superlink, wait_online


@pytest.mark.slow
def test_a_registered_node_joins_over_tls_and_an_unregistered_one_is_refused(processes):
    folder = processes.folder
    keys = write_credentials(folder / "keys", ["127.0.0.1"], nodes=2)
    port = free_port()
    tls_superlink(processes, keys, port)
    registered = flwr(processes, "supernode", "register", str(keys.node_keys[0]) + ".pub",
                      "local", "--format", "json")
    assert registered.returncode == 0, registered.stdout + registered.stderr
    processes.start("node-1", "flower-supernode", "--superlink", f"127.0.0.1:{port}",
                    "--root-certificates", str(keys.ca_cert),
                    "--auth-supernode-private-key", str(keys.node_keys[0]),
                    "--port", str(free_port()))
    stranger = processes.start("node-2", "flower-supernode", "--superlink",
                               f"127.0.0.1:{port}", "--root-certificates", str(keys.ca_cert),
                               "--auth-supernode-private-key", str(keys.node_keys[1]),
                               "--port", str(free_port()), "--max-retries", "1")
    assert wait_online(processes, 1) == ["online"], processes.log("node-1")
    stranger.wait(timeout=120)
    assert "2004" in processes.log("node-2")  # refused: its key was never registered
    home = folder / "flwr-home"
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "local"\n\n[superlink.local]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n')
    assert flwr(processes, "supernode", "list", "local").returncode != 0
