"""The control plane is the operator's, tried as an attacker would, with real processes on
127.0.0.1: a stranger holding the public CA certificate and keys of its own can neither
register, unregister, list nor run, nor reach the Runtime API; no app but the operator's
signed one executes on a device, even through a SuperLink that relays anything."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.deployment.conftest import (
    ROOT,
    Federation,
    flwr,
    free_port,
    listening,
    run,
    write_cli_config,
)

STRANGER_APP = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools>=77"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "strangerapp"
        version = "1.0.0"

        [tool.flwr.app]
        publisher = "stranger"

        [tool.flwr.app.components]
        serverapp = "strangerapp.server:app"
        clientapp = "strangerapp.client:app"

        [tool.flwr.app.config]
        marker-dir = "/nonexistent"
    """,
    "strangerapp/__init__.py": "",
    "strangerapp/client.py": """
        import os
        from pathlib import Path

        from flwr.app import ConfigRecord, Context, Message, RecordDict
        from flwr.clientapp import ClientApp

        app = ClientApp()


        @app.train()
        def train(msg: Message, context: Context) -> Message:
            marker = Path(str(context.run_config["marker-dir"])) / f"CLIENT-{os.getpid()}"
            marker.write_text(f"{dict(context.node_config)}")
            return Message(RecordDict({"r": ConfigRecord({"ok": 1})}), reply_to=msg)
    """,
    "strangerapp/server.py": """
        import os
        import time
        from pathlib import Path

        from flwr.app import ConfigRecord, Context, Message, RecordDict
        from flwr.serverapp import Grid, ServerApp

        app = ServerApp()


        @app.main()
        def main(grid: Grid, context: Context) -> None:
            folder = Path(str(context.run_config["marker-dir"]))
            (folder / f"SERVER-{os.getpid()}").write_text("ran")
            deadline, nodes = time.time() + 30, []
            while not nodes and time.time() < deadline:
                nodes = list(grid.get_node_ids())
                time.sleep(1)
            msgs = [Message(RecordDict({"c": ConfigRecord({"x": 1})}), dst_node_id=n,
                            message_type="train") for n in nodes]
            replies = list(grid.send_and_receive(msgs, timeout=40))
            errors = [r.error.code for r in replies if r.has_error()]
            (folder / f"REPLIES-{os.getpid()}").write_text(f"{len(replies)} {errors}")
    """,
}


def write_app(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return folder


def modified_fedrec(folder: Path, markers: Path) -> Path:
    """fedrec's app with one change: its ClientApp goes through a trojan module (which
    leaves a marker wherever it runs)."""
    pyproject = (ROOT / "pyproject.toml").read_text().replace(
        'clientapp = "fedrec.client.app:app"', 'clientapp = "trojan_client:app"').replace(
        'serverapp = "fedrec.server.app:app"', 'serverapp = "trojan_server:app"')
    return write_app(folder, {
        "pyproject.toml": pyproject, "README.md": "fedrec",
        "trojan_server.py": "from fedrec.server.app import app as _app\n\napp = _app\n",
        "trojan_client.py": f"""
            import os
            from pathlib import Path

            from fedrec.client.app import app as _app

            Path("{markers}", f"TROJAN-{{os.getpid()}}").write_text("ran")
            app = _app
        """})


def stranger_home(fed: Federation, name: str) -> dict:
    """A stranger's own flwr CLI settings: the public CA, nothing of the operator's."""
    home = fed.folder / name
    write_cli_config(home, fed.port, fed.keys / "ca.crt")
    return {**fed.procs.env, "FLWR_HOME": str(home)}


def submitted(out) -> bool:
    try:
        return out.returncode == 0 and json.loads(out.stdout).get("success") is True
    except json.JSONDecodeError:
        return False


def acquire_task(address: str, ca: Path | None) -> str:
    """What the Runtime API on ``address`` answers a stranger asking for a task."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.runtime import RuntimeHttpClient

    client = RuntimeHttpClient.from_server_address(
        server_address=address, insecure=ca is None,
        root_certificates=None if ca is None else ca.read_bytes(),
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")])
    try:
        client.AcquireTask(AcquireTaskRequest(supported_task_types=[t.value for t in TaskType]))
    except Exception as exc:  # the refusal is what this reports
        return f"{type(exc).__name__}: {exc}"
    return "acquired"


@pytest.mark.slow
def test_a_stranger_with_the_ca_and_its_own_keys_can_do_nothing(federation, tmp_path):
    fed = federation
    device = fed.add_device([3, 7, 11])
    assert fed.wait_online(1) == ["online"]
    genuine = json.loads(flwr(fed.procs, "supernode", "list", "local", "--format",
                              "json").stdout)["nodes"][0]["node-id"]
    stranger_keys = fed.folder / "stranger-keys"
    assert run(fed.procs, "fedrec", "device-keys", str(stranger_keys)).returncode == 0
    app = write_app(tmp_path / "stranger-app", STRANGER_APP)
    markers = tmp_path / "markers"
    markers.mkdir()
    # The stranger's own Ed25519 key, made into a token the stock CLI sends.
    own = tmp_path / "stranger-operator"
    own.mkdir()
    from fedrec.server.control.operator import write_operator_key

    write_operator_key(own)
    for label, env in (("no token", stranger_home(fed, "stranger-a")),
                       ("its own token", stranger_home(fed, "stranger-b"))):
        if label == "its own token":
            out = run(fed.procs, "fedrec", "operator", "login", "local", "--key",
                      str(own / "operator"), env=env)
            assert out.returncode == 0, out.stdout + out.stderr
        attempts = {
            "register": flwr(fed.procs, "supernode", "register",
                             str(stranger_keys / "node.pub"), "local", env=env),
            "list nodes": flwr(fed.procs, "supernode", "list", "local", env=env),
            "unregister": flwr(fed.procs, "supernode", "unregister", str(genuine), "local",
                               env=env),
            "list runs": flwr(fed.procs, "ls", "local", env=env),
            "run": flwr(fed.procs, "run", str(app), "local", "--format", "json",
                        "--run-config", f'marker-dir="{markers}"', env=env),
        }
        for what, out in attempts.items():
            refused = out.returncode != 0 or '"success": false' in out.stdout
            assert refused and not submitted(out), (label, what, out.stdout)
            assert "Authentication failed" in out.stdout + out.stderr, (label, what)
    # The Runtime API on the SuperLink's port and on the device's port: refused.
    assert "401" in acquire_task(f"127.0.0.1:{fed.port}", fed.keys / "ca.crt")
    node_port = int(fed.procs.running["node-1"].args[
        fed.procs.running["node-1"].args.index("--port") + 1])
    assert "401" in acquire_task(f"127.0.0.1:{node_port}", None)
    # A SuperNode with a key the operator never registered is refused (Flower's 2004).
    fed.procs.start("stranger-node", "flower-supernode", "--superlink",
                    f"127.0.0.1:{fed.port}", "--root-certificates", str(fed.keys / "ca.crt"),
                    "--auth-supernode-private-key", str(stranger_keys / "node"),
                    "--port", str(free_port()), "--max-retries", "1")
    fed.procs.finished("stranger-node")
    fed.procs.running["stranger-node"].wait(timeout=120)
    assert "2004" in fed.procs.log("stranger-node")
    # Nothing changed: the genuine node is still there and online, nothing ran.
    listed = json.loads(flwr(fed.procs, "supernode", "list", "local", "--format",
                             "json").stdout)["nodes"]
    assert [(n["node-id"], n["status"]) for n in listed] == [(genuine, "online")]
    assert not list(markers.iterdir())
    assert json.loads(flwr(fed.procs, "ls", "local", "--format", "json").stdout)["runs"] == []
    # Without the CA, nothing even connects.
    plain = fed.folder / "plain-home"
    plain.mkdir()
    (plain / "config.toml").write_text(
        '[superlink]\ndefault = "local"\n\n[superlink.local]\n'
        f'address = "127.0.0.1:{fed.port}"\ninsecure = true\n')
    assert flwr(fed.procs, "supernode", "list", "local",
                env={**fed.procs.env, "FLWR_HOME": str(plain)}).returncode != 0
    assert device.exists()


@pytest.mark.slow
def test_no_app_but_the_operator_s_signed_one_runs_on_a_device(federation, tmp_path):
    fed = federation
    for events in ([3, 7], [5, 9]):
        fed.add_device(events)
    assert fed.wait_online(2).count("online") == 2
    markers = tmp_path / "markers"
    markers.mkdir()
    stranger = write_app(tmp_path / "stranger-app", STRANGER_APP)
    trojan = modified_fedrec(tmp_path / "modified", markers)
    other = tmp_path / "other-key"
    other.mkdir()
    from fedrec.server.control.operator import write_operator_key

    write_operator_key(other)
    genuine = fed.signature()
    one = fed.config(1, signature="", **{"round-timeout": "40.0"})
    tries = {
        "the stranger's app, unsigned": (stranger, f'marker-dir="{markers}"'),
        "the stranger's app with fedrec's signature": (
            stranger, f'marker-dir="{markers}" {genuine}'),
        "fedrec modified, with the genuine signature": (trojan, f"{one} {genuine}"),
        "fedrec modified, signed by another key": (
            trojan, f"{one} {fed.signature(trojan, other / 'operator')}"),
        "fedrec with the signature of another build": (
            ROOT, f"{one} {fed.signature(trojan)}"),
        "fedrec unsigned": (ROOT, one),
    }
    for label, (app, config) in tries.items():
        out = flwr(fed.procs, "run", str(app), "local", "--format", "json", "--run-config",
                   config)
        assert not submitted(out), label
        assert "signature" in out.stdout + out.stderr, (label, out.stdout[-500:])
    assert not list(markers.iterdir())  # not even a ServerApp ran
    out = flwr(fed.procs, "run", str(ROOT), "local", "--stream", "--run-config",
               f"{one} {genuine}")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    history = json.loads((fed.folder / "results" / "history.json").read_text())
    assert [r["train"]["accepted"] for r in history["rounds"] if "train" in r] == [2]
    assert not list(markers.iterdir())


RELAY = """
import json
import sys
from importlib import import_module
from pathlib import Path

from fedrec.server.control.signing import SigningState

verifications = Path(sys.argv[1])
handlers = import_module("flwr.superlink.servicer.control.control_handlers")
original = handlers.start_run


def start_run(request, account, state, fleet_api_type, *, source="unknown"):
    relay = json.loads(verifications.read_text())  # whatever it is told, unchecked
    return original(request, account, SigningState(state, relay), fleet_api_type,
                    source=source)


handlers.start_run = start_run
sys.argv = ["flower-superlink", *sys.argv[2:]]
import_module("flwr.superlink.cli.flower_superlink").flower_superlink()
"""


@pytest.mark.slow
def test_devices_refuse_foreign_apps_even_through_a_superlink_that_relays_anything(
        processes, tmp_path):
    """A compromised SuperLink (open control, any verifications on any FAB): the devices'
    own check (Flower's --trusted-entities against the operator's key) refuses every app
    but the operator's; no ClientApp code runs."""
    from fedrec.server.control import signing, tokens

    fed = Federation(processes)
    fed.operator_keys()
    relay = tmp_path / "relay.py"
    relay.write_text(RELAY)
    verifications = tmp_path / "verifications.json"
    k = fed.keys
    processes.start("superlink", "python", str(relay),
                    str(verifications), "--ssl-ca-certfile", str(k / "ca.crt"),
                    "--ssl-certfile", str(k / "server.pem"), "--ssl-keyfile",
                    str(k / "server.key"), "--enable-supernode-auth", "--database",
                    str(fed.folder / "state.db"), "--host", "127.0.0.1", "--port",
                    str(fed.port))

    processes.wait_until("the relay listens", lambda: listening(fed.port), 60)
    write_cli_config(Path(processes.env["FLWR_HOME"]), fed.port, k / "ca.crt")
    for events in ([3, 7], [5, 9]):
        fed.add_device(events)
    fed.wait_online(2)
    markers = tmp_path / "markers"
    markers.mkdir()
    stranger = write_app(tmp_path / "stranger-app", STRANGER_APP)
    trojan = modified_fedrec(tmp_path / "modified", markers)
    operator = tokens.load_private_key(k / "operator")
    own = tmp_path / "own"
    own.mkdir()
    from fedrec.server.control.operator import write_operator_key

    write_operator_key(own)
    stranger_key = tokens.load_private_key(own / "operator")
    genuine_fab = signing.build_fab(ROOT)

    def relayed(fab: bytes, key) -> dict:
        kid = signing.key_id(key.public_key())
        return signing.verifications_for(fab, signing.sign_fab(key, fab),
                                         {kid: key.public_key()})

    genuine = relayed(genuine_fab, operator)
    cases = {
        "no verifications": (stranger, {}),
        "signed by the stranger's key": (stranger, relayed(signing.build_fab(stranger),
                                                           stranger_key)),
        "the operator's signature replayed on the stranger's app": (stranger, genuine),
        "the operator's signature replayed on fedrec modified": (trojan, genuine),
    }
    for _label, (app, relay_this) in cases.items():
        verifications.write_text(json.dumps(relay_this))
        config = (f'marker-dir="{markers}"' if app is stranger
                  else fed.config(1, signature="", **{"round-timeout": "30.0"}))
        flwr(processes, "run", str(app), "local", "--stream", "--run-config", config)
    ran_on_devices = [p.name for p in markers.iterdir()
                      if p.name.startswith(("CLIENT-", "TROJAN-"))]
    assert ran_on_devices == []
    refusals = sum(processes.log(f"node-{i}", 10**6).count("FAB verification failed")
                   + processes.log(f"node-{i}", 10**6).count("could not be verified")
                   for i in (1, 2))
    assert refusals >= 2 * 3  # each device refused each app it was sent
    replies = [p.read_text() for p in markers.glob("REPLIES-*")]
    assert replies and all("7" in r for r in replies)  # INVALID_FAB error replies
