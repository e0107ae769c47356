"""A real SuperLink with TLS and node authentication on 127.0.0.1, with the credentials
``fedrec keys`` makes: a registered SuperNode joins, an unregistered one is refused, and
the flwr CLI talks to the SuperLink over TLS."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedrec.server.keys import write_credentials

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class Processes:
    """Processes started for one test, each in its own session, all killed at the end."""

    def __init__(self, folder: Path, env: dict) -> None:
        self.folder, self.env, self.running = folder, env, []

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = (self.folder / f"{name}.log").open("wb")
        proc = subprocess.Popen([str(BIN / args[0]), *args[1:]], stdout=log,
                                stderr=subprocess.STDOUT, env=self.env, cwd=self.folder,
                                start_new_session=True)
        self.running.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for proc in self.running:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


@pytest.fixture
def processes(tmp_path):
    if not (BIN / "flower-superlink").exists():
        pytest.fail(f"flower-superlink is not installed beside {sys.executable}")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "FLWR_HOME": str(tmp_path / "flwr-home")}
    procs = Processes(tmp_path, env)
    yield procs
    procs.stop()


def flwr(procs: Processes, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "flwr"), *args], env=procs.env, cwd=procs.folder,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_a_registered_node_joins_over_tls_and_an_unregistered_one_is_refused(processes):
    folder = processes.folder
    keys = write_credentials(folder / "keys", ["127.0.0.1"], nodes=2)
    port = free_port()
    link = processes.start("superlink", "flower-superlink",
                           "--ssl-ca-certfile", str(keys.ca_cert),
                           "--ssl-certfile", str(keys.server_cert),
                           "--ssl-keyfile", str(keys.server_key), "--enable-supernode-auth",
                           "--database", str(folder / "state.db"),
                           "--host", "127.0.0.1", "--port", str(port))
    wait_for_port(port, link)
    home = folder / "flwr-home"
    home.mkdir(exist_ok=True)  # (the SuperLink may have made it)
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "local"\n\n[superlink.local]\n'
        f'address = "127.0.0.1:{port}"\nroot-certificates = "{keys.ca_cert}"\n')
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
    deadline, status = time.monotonic() + 90, []
    while time.monotonic() < deadline:
        listed = flwr(processes, "supernode", "list", "local", "--format", "json")
        assert listed.returncode == 0, listed.stdout + listed.stderr
        status = [n.get("status") for n in json.loads(listed.stdout).get("nodes", [])]
        if status == ["online"]:
            break
        time.sleep(1)
    assert status == ["online"], processes.log("node-1")
    stranger.wait(timeout=120)
    assert "2004" in processes.log("node-2")  # refused: its key was never registered
    # Without the CA, a client cannot even talk to the TLS SuperLink.
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "local"\n\n[superlink.local]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n')
    assert flwr(processes, "supernode", "list", "local").returncode != 0
