"""The README's deployment section, run as written: the operator's keys and SuperLink (an
operator-only control plane, signed apps), three devices with their own keys and encrypted
stores that the example edge app recorded into, the operator's signed run, and the app's
recommendations afterwards. Only the script's first line (folder and ports) is the test's:
every port it uses is allocated here, and a process of the script's that dies fails the
test at once, with the logs."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from fedrec.client.edge import EdgeClient
from fedrec.client.store import DeviceStore
from fedrec.server.checkpoint import Checkpoint
from tests.deployment.conftest import BIN, free_ports

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- deployment script: tests/deployment/test_readme.py runs this block -->"
FIRST_LINE = 'FEDREC=$PWD WORK=$PWD/deploy PORT=9400 NODE_PORTS="9411 9412 9413"'
SERVICES = ("flower-superlink", "fedrec superlink", "flower-supernode", "flower-superexec")
TIMEOUT = 600.0
GRACE = 15.0  # seconds the script has to end once one of its services has gone


def readme_script() -> str:
    text = (ROOT / "README.md").read_text()
    assert MARKER in text, "the README's deployment script marker is gone"
    block = re.search(r"```bash\n(.*?)```", text[text.index(MARKER):], re.S)
    assert block is not None
    script = block.group(1)
    assert script.splitlines()[0] == FIRST_LINE
    return script


def services(group: int) -> dict[int, str]:
    """The long-running processes the script started, by pid: their command lines.

    Only what the script's shells started counts: a process whose parent is itself a
    service is that service's own work. A service forks before it runs another program
    (SuperExec's ``flwr-clientapp``), or to run a short helper, and for a moment the child
    carries the service's command line; such a child ending is not a service dying."""
    found: dict[int, tuple[int, str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != group or fields[0] == "Z":  # (a zombie has died)
                continue
            cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
        # The script's own shell, and the subshells it forks for $(...) and loops, carry
        # the whole script (every service's name) in their command line; they come and go.
        if any(name in cmd for name in SERVICES) and not cmd.startswith("bash "):
            found[int(stat.parent.name)] = (int(fields[1]), cmd.strip())
    return {pid: cmd for pid, (parent, cmd) in found.items() if parent not in found}


def running(pid: int) -> bool:
    """Whether ``pid`` still runs (not a zombie). A service that starts a program forks
    first: for a moment the child carries the service's command line, then it runs the
    program (SuperExec's ``flwr-clientapp``) under the same pid. Such a pid left the list
    of services without dying, and must not fail the test."""
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def logs(work: Path) -> str:
    return "".join(f"\n--- {p.relative_to(work)}\n{p.read_text(errors='replace')[-2000:]}"
                   for p in sorted(work.glob("**/*.log")))


def run_watched(script: str, cwd: Path, env: dict, work: Path
                ) -> tuple[int, str]:
    """Run ``script``; fail at once if one of its services dies while it still runs."""
    out_path = cwd / "script.out"
    with out_path.open("w") as out:
        proc = subprocess.Popen(["bash", "-e", "-c", script], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen: dict[int, str] = {}
    deadline = time.monotonic() + TIMEOUT
    try:
        while proc.poll() is None:
            if time.monotonic() > deadline:
                pytest.fail(f"the README script ran past {TIMEOUT} s\n"
                            f"{out_path.read_text()[-3000:]}{logs(work)}")
            alive = services(proc.pid)
            seen.update(alive)
            gone = {pid: cmd for pid, cmd in seen.items()
                    if pid not in alive and not running(pid)}
            for pid in [pid for pid in seen if pid not in alive and pid not in gone]:
                del seen[pid]  # still running as another program (see running)
            if gone:  # the script's last line stops them all: give it time to end
                try:
                    proc.wait(timeout=GRACE)
                except subprocess.TimeoutExpired:
                    died = ("a process of the README script died while it ran: "
                            + "; ".join(f"{cmd} (pid {pid})" for pid, cmd in gone.items()))
                    # (said last as well: a CI excerpt keeps the end of a long failure)
                    pytest.fail(f"{died}\n{out_path.read_text()[-3000:]}{logs(work)}"
                                f"\n{died}")
                break
            time.sleep(0.5)
        proc.wait(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever the script left running
    return proc.returncode, out_path.read_text()


@pytest.mark.slow
def test_the_readme_deployment_trains_across_three_supernodes(tmp_path):
    port, *nodes = free_ports(4)
    work = tmp_path / "deploy"
    script = readme_script().replace(
        FIRST_LINE, f'FEDREC={ROOT} WORK={work} PORT={port} '
                    f'NODE_PORTS="{" ".join(map(str, nodes))}"', 1)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    code, out = run_watched(script, tmp_path, env, work)
    assert code == 0, out[-4000:] + logs(work)
    shown = [line.split("\t")[0] for line in out.splitlines()
             if re.fullmatch(r"[a-z-]+\t-?\d+\.\d{4}", line)]
    # the app's top 5, "outdoor" (4 items, one bought), then (after the new listing)
    # "winter"
    assert len(shown) == 5 + 3 + 3, out[-3000:]
    history = json.loads((work / "results" / "history.json").read_text())
    train = [r["train"] for r in history["rounds"] if "train" in r]
    assert [t["accepted"] for t in train] == [3, 3, 3, 3]
    assert [t["items"] for t in train] == [12, 12, 12, 13]
    assert train[3]["first-contact-bytes"] == 0  # the restarted server sent rows, not tables
    key = bytes.fromhex((work / "keys" / "checkpoint.key").read_text())
    model, last, _, _ = Checkpoint(work / "server.db", key=key).load()
    assert last == 4
    np.testing.assert_array_equal(model.params.factors,
                                  np.load(work / "results" / "model.npz")["factors"])
    bought = ("shoe-trail", "tee-run", "coat-down")
    for i in (1, 2, 3):
        device = work / f"device-{i}"
        assert (device / "node").stat().st_mode & 0o777 == 0o600
        key = bytes.fromhex((device / "store.key").read_text())
        with DeviceStore(device / "store.db", key=key) as store:
            app = EdgeClient(store)
            assert len(store) == 1 and app.user is not None
            # the table it trained on in the last round (the model before that round)
            assert app.factors.shape == model.params.factors.shape
            assert app.skus[-1] == "boot-winter"
            assert bought[i - 1] not in app.recommend(k=13).skus  # bought: left out
            if i == 1:  # the app's lists, in SKUs: the bought one left out
                assert "shoe-trail" not in shown and len(set(shown[:5])) == 5
                assert set(shown[5:8]) == {"coat-rain", "coat-down", "bag-day"}
                assert shown[8:] == list(app.recommend(k=5, category="winter").skus)
                assert set(shown[8:]) == {"coat-down", "hat-wool", "boot-winter"}
    for secret in ("operator", "superexec.secret", "checkpoint.key", "ca.key"):
        assert (work / "keys" / secret).stat().st_mode & 0o777 == 0o600, secret
    # Run again over the same folder: refused at once, nothing started or changed.
    before = (work / "catalogue.csv").read_bytes()
    again = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env, timeout=60,
                           capture_output=True, text=True)
    assert again.returncode == 1 and "File exists" in again.stderr, again.stderr
    assert not again.stdout and (work / "catalogue.csv").read_bytes() == before


# ---- the watcher itself: a service that starts a program is not one that died ----------
_SERVICE = 'python3 -c "import os, sys, time; time.sleep(1.5); {then}" flower-superexec-fake'


def test_the_watcher_lets_a_service_run_another_program_under_its_pid(tmp_path,
                                                                      monkeypatch):
    """SuperExec forks and runs flwr-clientapp: for a while the pid carries the service's
    command line, then another program's. (The intermittent failure of the README test
    before the watcher asked whether the pid still ran.)"""
    monkeypatch.setitem(globals(), "GRACE", 1.0)  # the script runs on past it
    script = (_SERVICE.format(then="os.execvp('sleep', ['sleep', '2'])") + " &\n"
              "sleep 5\nwait\n")
    code, _ = run_watched(script, tmp_path, dict(os.environ), tmp_path)
    assert code == 0


def test_the_watcher_fails_at_once_when_a_service_dies(tmp_path, monkeypatch):
    monkeypatch.setitem(globals(), "GRACE", 1.0)  # (what run_watched reads)
    script = _SERVICE.format(then="sys.exit(3)") + " &\nsleep 30\n"
    start = time.monotonic()
    died = r"died while it ran: \S*python3 -c .*sys.exit\(3\)"
    with pytest.raises(pytest.fail.Exception, match=died):
        run_watched(script, tmp_path, dict(os.environ), tmp_path)
    assert time.monotonic() - start < 20  # not the script's 30 s


def test_the_watcher_lets_a_service_run_a_short_helper(tmp_path, monkeypatch):
    """A service that forks a helper which ends (a command it runs and waits for) has not
    died: the child carried the service's command line while it ran."""
    monkeypatch.setitem(globals(), "GRACE", 1.0)
    helper = ("pid = os.fork(); os._exit(0) if pid == 0 and not time.sleep(1.5) else "
              "os.waitpid(pid, 0); time.sleep(2)")
    script = _SERVICE.format(then=helper) + " &\nsleep 6\nwait\n"
    code, _ = run_watched(script, tmp_path, dict(os.environ), tmp_path)
    assert code == 0
