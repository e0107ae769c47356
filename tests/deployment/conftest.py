"""Real Flower processes on 127.0.0.1 for the deployment tests, started the way the README
starts them: ``fedrec superlink`` (an operator-only control plane, signed apps) with its
SuperExec, and per device a SuperNode (trusted entities, process isolation) with its own
SuperExec. Every port is allocated here, every wait is bounded, and a process that dies
fails the test at once with its log."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


# Ports handed out come from a block of this worker's own (pytest-xdist runs tests in
# several processes), below the kernel's ephemeral range: a port released here and bound
# by the child a moment later cannot meanwhile be handed to another test's process, nor
# picked by the kernel for an outgoing connection. Each block is walked in order, so one
# worker does not hand out the same port twice while a run lasts.
PORT_BLOCK = 1000
PORT_BASE = 20000  # blocks 20000-31999: under Linux's default ephemeral range (32768-)
_next_port = itertools.count()


def _worker_block() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    n = int(worker[2:]) if worker[2:].isdigit() else 0
    start = PORT_BASE + (n % 12) * PORT_BLOCK
    return range(start, start + PORT_BLOCK)


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1, from this worker's block: each one
    bound (without SO_REUSEADDR, so a port some connection still holds is passed over)
    and released before it is handed out."""
    block, ports = _worker_block(), []
    for _ in range(len(block)):
        port = block[next(_next_port) % len(block)]
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise RuntimeError(f"no {count} free ports in {block.start}-{block.stop - 1}")


def free_port() -> int:
    return free_ports(1)[0]


class ProcessDied(AssertionError):
    """A process a test started exited while it was still needed."""


class Processes:
    """Processes started for one test, each in its own session, all killed at the end."""

    def __init__(self, folder: Path, env: dict) -> None:
        self.folder, self.env = folder, env
        self.running: dict[str, subprocess.Popen] = {}
        self.done: set[str] = set()  # exited as they should (a command run to its end)

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = (self.folder / f"{name}.log").open("wb")
        proc = subprocess.Popen([str(BIN / args[0]), *args[1:]], stdout=log,
                                stderr=subprocess.STDOUT, env=self.env, cwd=self.folder,
                                start_new_session=True)
        self.running[name] = proc
        self.done.discard(name)
        return proc

    def log(self, name: str, tail: int = 4000) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else "(no log)"

    def check(self) -> None:
        """Fail at once, with its log, if a long-running process has exited."""
        for name, proc in self.running.items():
            if name not in self.done and proc.poll() is not None:
                raise ProcessDied(f"{name} exited with {proc.returncode}:\n{self.log(name)}")

    def finished(self, name: str) -> None:
        self.done.add(name)

    def wait_until(self, what: str, test: callable, timeout: float, poll: float = 0.5
                   ) -> None:
        """Wait for ``test()`` to hold, checking every process meanwhile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            if test():
                return
            time.sleep(poll)
        raise TimeoutError(f"{what}: not after {timeout} s\n" + "".join(
            f"\n--- {n}\n{self.log(n, 1500)}" for n in self.running))

    def stop(self, name: str | None = None) -> None:
        for key, proc in list(self.running.items()):
            if name is not None and key != name:
                continue
            self.done.add(key)
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


def run(procs: Processes, *args: str, env: dict | None = None, timeout: float = 180
        ) -> subprocess.CompletedProcess:
    """A command run to its end (bounded), the processes checked first."""
    procs.check()
    try:
        return subprocess.run([str(BIN / args[0]), *args[1:]], env=env or procs.env,
                              cwd=procs.folder, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise TimeoutError(f"{' '.join(args)}: no answer after {timeout} s\n"
                           f"{(exc.stdout or b'')[-2000:]!r}" + "".join(
                               f"\n--- {n}\n{procs.log(n, 1500)}"
                               for n in procs.running)) from None


def flwr(procs: Processes, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run(procs, "flwr", *args, env=env)


def write_cli_config(home: Path, port: int, ca_cert: Path) -> None:
    """The flwr CLI's federation ``local``: the SuperLink on ``port``, verified by the CA."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "local"\n\n[superlink.local]\n'
        f'address = "127.0.0.1:{port}"\nroot-certificates = "{ca_cert}"\n')


class Federation:
    """The README's deployment, piece by piece: the operator's keys and SuperLink, devices
    joining with their own keys and stores, signed runs."""

    def __init__(self, procs: Processes) -> None:
        self.procs, self.folder = procs, procs.folder
        self.keys = self.folder / "keys"
        self.port, self.devices = free_port(), []

    def operator_keys(self) -> None:
        out = run(self.procs, "fedrec", "keys", "--out", str(self.keys), "--hosts",
                  "127.0.0.1,localhost")
        assert out.returncode == 0, out.stdout + out.stderr

    def start_superlink(self) -> None:
        k = self.keys
        self.procs.start(
            "superlink", "fedrec", "superlink", "--operator-keys", str(k / "operator.pub"),
            "--app-signers", str(k / "trusted-entities.yaml"), "--",
            "--ssl-ca-certfile", str(k / "ca.crt"), "--ssl-certfile", str(k / "server.pem"),
            "--ssl-keyfile", str(k / "server.key"), "--enable-supernode-auth",
            "--database", str(self.folder / "state.db"), "--isolation", "process",
            "--superexec-auth-secret-file", str(k / "superexec.secret"),
            "--host", "127.0.0.1", "--port", str(self.port))
        self.procs.wait_until("the SuperLink listens", lambda: listening(self.port), 60)
        self.procs.start("superexec", "flower-superexec", "--runtime-api-address",
                         f"127.0.0.1:{self.port}", "--root-certificates", str(k / "ca.crt"),
                         "--superexec-auth-secret-file", str(k / "superexec.secret"))
        write_cli_config(Path(self.procs.env["FLWR_HOME"]), self.port, k / "ca.crt")

    def login(self) -> None:
        out = run(self.procs, "fedrec", "operator", "login", "local", "--key",
                  str(self.keys / "operator"))
        assert out.returncode == 0, out.stdout + out.stderr

    def add_device(self, events: list[int], register: bool = True) -> Path:
        """A device: its own keys, an encrypted store with ``events`` (purchases), its
        SuperNode and SuperExec; registered by the operator unless ``register`` is False."""
        from fedrec.client.edge import EdgeClient
        from fedrec.client.store import DeviceStore

        i = len(self.devices) + 1
        device = self.folder / f"device-{i}"
        out = run(self.procs, "fedrec", "device-keys", str(device))
        assert out.returncode == 0, out.stdout + out.stderr
        key = np.random.default_rng(i).bytes(32)
        (device / "store.key").write_text(key.hex())
        with DeviceStore(device / "store.db", key=key, create=True) as store:
            app = EdgeClient(store)
            for item in events:
                app.record(int(item), "purchase")
        if register:
            out = flwr(self.procs, "supernode", "register", str(device / "node.pub"), "local")
            assert out.returncode == 0, out.stdout + out.stderr
        port = free_port()
        self.procs.start(
            f"node-{i}", "flower-supernode", "--superlink", f"127.0.0.1:{self.port}",
            "--root-certificates", str(self.keys / "ca.crt"),
            "--auth-supernode-private-key", str(device / "node"),
            "--trusted-entities", str(self.keys / "trusted-entities.yaml"),
            "--isolation", "process", "--superexec-auth-secret-file",
            str(device / "superexec.secret"), "--port", str(port), "--node-config",
            f'store="{device / "store.db"}" store-key-file="{device / "store.key"}"')
        self.procs.wait_until(f"node-{i} listens", lambda: listening(port), 60)
        self.procs.start(f"superexec-{i}", "flower-superexec", "--runtime-api-address",
                         f"127.0.0.1:{port}", "--insecure", "--superexec-auth-secret-file",
                         str(device / "superexec.secret"))
        self.devices.append(device)
        return device

    def wait_online(self, count: int, timeout: float = 90.0) -> list[str]:
        status: list[str] = []

        def enough() -> bool:
            nonlocal status
            listed = flwr(self.procs, "supernode", "list", "local", "--format", "json")
            assert listed.returncode == 0, listed.stdout + listed.stderr
            status = [n.get("status") for n in json.loads(listed.stdout).get("nodes", [])]
            return status.count("online") >= count

        self.procs.wait_until(f"{count} nodes online", enough, timeout, poll=1.0)
        return status

    def signature(self, app: Path = ROOT, key: Path | None = None) -> str:
        out = run(self.procs, "fedrec", "operator", "sign-app", str(app), "--key",
                  str(key or self.keys / "operator"))
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout.strip()

    def config(self, rounds: int, n_items: int = 40, signature: str | None = None,
               **extra: str) -> str:
        """A run config for ``rounds`` rounds with the signature of fedrec's app (or
        ``signature``; ``""`` for none)."""
        base = {"dataset": f'"synthetic:n_users=3,n_items={n_items},n_events=100"',
                "num-rounds": str(rounds), "min-nodes": "2",
                "evaluate-every": str(rounds), "factors": "6", "negatives": "2",
                "results-dir": f'"{self.folder / "results"}"',
                "checkpoint": f'"{self.folder / "server.db"}"',
                "checkpoint-key-file": f'"{self.keys / "checkpoint.key"}"', **extra}
        signature = self.signature() if signature is None else signature
        return " ".join([*(f"{k}={v}" for k, v in base.items()), signature]).strip()


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def federation(processes):
    fed = Federation(processes)
    fed.operator_keys()
    fed.start_superlink()
    fed.login()
    return fed
