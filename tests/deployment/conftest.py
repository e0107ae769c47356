"""Real Flower processes on 127.0.0.1 for the deployment tests: each started in its own
session and killed (with its children) when the test ends."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

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




def tls_superlink(procs: Processes, keys, port: int) -> subprocess.Popen:
    """A SuperLink with TLS and node authentication on ``port``, and the flwr CLI's
    federation ``local`` pointing at it (CA-verified)."""
    link = procs.start("superlink", "flower-superlink", "--ssl-ca-certfile", str(keys.ca_cert),
                       "--ssl-certfile", str(keys.server_cert),
                       "--ssl-keyfile", str(keys.server_key), "--enable-supernode-auth",
                       "--database", str(procs.folder / "state.db"),
                       "--host", "127.0.0.1", "--port", str(port))
    wait_for_port(port, link)
    home = procs.folder / "flwr-home"
    home.mkdir(exist_ok=True)  # (the SuperLink may have made it)
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "local"\n\n[superlink.local]\n'
        f'address = "127.0.0.1:{port}"\nroot-certificates = "{keys.ca_cert}"\n')
    return link


def wait_online(procs: Processes, count: int, timeout: float = 90.0) -> list[str]:
    """The federation's node statuses once ``count`` are online (or at the timeout)."""
    import json

    deadline, status = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        listed = flwr(procs, "supernode", "list", "local", "--format", "json")
        assert listed.returncode == 0, listed.stdout + listed.stderr
        status = [n.get("status") for n in json.loads(listed.stdout).get("nodes", [])]
        if status.count("online") >= count:
            break
        time.sleep(1)
    return status
