"""The distribution: wheel contents, a clean install, the import rules of the layout, lint."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "client", "server", "simulations")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in (*PACKAGES, "pyproject.toml", "README.md"):
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, src / name)
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(src)], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = out.glob("fedrec-*.whl")
    return wheel


def test_wheel_holds_the_four_packages_under_the_fedrec_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for pkg in PACKAGES:
        assert f"fedrec/{pkg}/__init__.py" in names
    assert "fedrec/common/data/synthetic.py" in names
    assert "fedrec/__init__.py" not in names  # a namespace package
    assert not [n for n in names if n.startswith(("tests/", "common/", "fedrec/tests"))]
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    entry_points = zipfile.ZipFile(wheel).read(entry).decode()
    assert "fedrec = fedrec.simulations.cli.main:main" in entry_points
    metadata = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("METADATA"))).decode()
    assert "Requires-Dist: flwr" in metadata
    assert "Provides-Extra: ray" in metadata


def test_wheel_installs_into_a_fresh_environment(wheel, tmp_path):
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
                   check=True, timeout=300, capture_output=True)
    # Locate (without importing numpy-dependent code) every package inside that environment.
    code = ("import importlib.util as u, sys; "
            "print('\\n'.join(u.find_spec('fedrec.' + p).origin for p in sys.argv[1:]))")
    proc = subprocess.run([str(python), "-c", code, *PACKAGES], check=False, timeout=60,
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.split()
    assert len(out) == len(PACKAGES)
    assert all(str(env) in origin for origin in out), out
    assert (env / "bin" / "fedrec").exists()


def _imported(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (``from a import b`` names ``a`` and
    ``a.b``: b may be a module)."""
    mods = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module)
            mods.update(f"{node.module}.{a.name}" for a in node.names)
    return mods


def _imports(folder: str) -> dict[str, set[str]]:
    return {str(path.relative_to(ROOT)): _imported(path)
            for path in (ROOT / folder).rglob("*.py")}


# common/records.py is the one module of common that speaks Flower: the wire format, shared
# by the ClientApp and the ServerApp, defined once.
FLOWER_IN_COMMON = {"common/records.py"}


@pytest.mark.parametrize(("folder", "forbidden"), [
    ("common", ("flwr", "fedrec.client", "fedrec.server", "fedrec.simulations")),
    ("client", ("fedrec.server", "fedrec.simulations")),
    ("server", ("fedrec.client", "fedrec.simulations")),
])
def test_dependency_direction_is_never_reversed(folder, forbidden):
    for path, mods in _imports(folder).items():
        allowed = ("flwr",) if path in FLOWER_IN_COMMON else ()
        bad = [m for m in mods if (m.split(".")[0] in forbidden or m.startswith(forbidden))
               and m.split(".")[0] not in allowed]
        assert not bad, f"{path} imports {bad}"


def _module_graph() -> dict[str, set[str]]:
    """Each fedrec module and the fedrec modules it imports anywhere in it (a function's
    late import counts: it is a cycle all the same, only deferred)."""
    paths = {}
    for folder in ("common", "client", "server", "simulations"):
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            paths["fedrec." + ".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return {name: {d for d in _imported(path) if d in paths and d != name}
            for name, path in paths.items()}


def test_no_module_imports_itself_round_a_circle():
    """Each room's modules import one way (quality once imported simulate, which imported
    quality; the stream bench and the Ray replay each other): a circle means two modules
    that are one, or a piece in the wrong one."""
    graph = _module_graph()
    assert "fedrec.simulations.benches.quality" in graph
    assert graph["fedrec.simulations.benches.stream"]
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            raise AssertionError("import circle: " + " -> ".join(
                [*path[path.index(node):], node]))
        if node in done:
            return
        for dep in sorted(graph[node]):
            visit(dep, [*path, node])
        done.add(node)

    for module in sorted(graph):
        visit(module, [])


def test_only_records_imports_flower_in_common():
    users = {path for path, mods in _imports("common").items()
             if any(m.split(".")[0] == "flwr" for m in mods)}
    assert users == FLOWER_IN_COMMON


def test_ruff_is_clean():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_flower_app_config_declares_every_run_setting():
    import tomllib

    from fedrec.common.settings import RunSettings

    app = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert app["components"] == {"serverapp": "fedrec.server.app:app",
                                 "clientapp": "fedrec.client.app:app"}
    assert app["config"] == RunSettings().to_run_config()
    assert RunSettings.from_run_config(app["config"]) == RunSettings()


def test_the_replay_runs_rounds_only_through_the_servers_round_loop():
    """The timeline replay drives the server's own round loop (server.rounds), the one a
    deployment runs, not the strategy's steps by hand."""
    text = (ROOT / "simulations" / "engines" / "replay.py").read_text()
    assert "RoundLoop(" in text
    for step in ("train_messages(", "aggregate_train(", "round_config(", "send_and_receive(",
                 ".grow(", "content_rows("):
        assert step not in text, f"simulations/engines/replay.py calls {step} itself"
