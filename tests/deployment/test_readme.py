"""The README's deployment section, run as written: a SuperLink with TLS and node
authentication, three SuperNodes each with its own encrypted store that the example edge app
recorded into, fedrec's ServerApp submitted with ``flwr run``, and the app's
recommendations afterwards. Only the script's first line (folder and port) is the test's."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fedrec.client.edge import EdgeClient
from fedrec.client.store import DeviceStore
from fedrec.server.checkpoint import Checkpoint
from tests.deployment.conftest import BIN, free_port

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- deployment script: tests/deployment/test_readme.py runs this block -->"
FIRST_LINE = "FEDREC=$PWD WORK=$PWD/deploy PORT=9400"


def readme_script() -> str:
    text = (ROOT / "README.md").read_text()
    assert MARKER in text, "the README's deployment script marker is gone"
    block = re.search(r"```bash\n(.*?)```", text[text.index(MARKER):], re.S)
    assert block is not None
    script = block.group(1)
    assert script.splitlines()[0] == FIRST_LINE
    return script


@pytest.mark.slow
def test_the_readme_deployment_trains_across_three_supernodes(tmp_path):
    port = free_port()
    work = tmp_path / "deploy"
    script = readme_script().replace(
        FIRST_LINE, f"FEDREC={ROOT} WORK={work} PORT={port}", 1)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen(["bash", "-e", "-c", script], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=600)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever the script left running
    logs = "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
                   for p in work.glob("*.log"))
    assert proc.returncode == 0, out[-4000:] + logs
    shown = [line for line in out.splitlines() if re.fullmatch(r"\d+\t-?\d+\.\d{4}", line)]
    assert len(shown) == 10, out[-3000:]  # the app's top 5, then its top 5 in category 3
    history = json.loads((work / "results" / "history.json").read_text())
    assert [r["train"]["accepted"] for r in history["rounds"] if "train" in r] == [3, 3, 3]
    model, last, _, _ = Checkpoint(work / "server.db").load()
    assert last == 3
    np.testing.assert_array_equal(model.params.factors,
                                  np.load(work / "results" / "model.npz")["factors"])
    for i in (1, 2, 3):
        key = bytes.fromhex((work / f"device-{i}.key").read_text())
        with DeviceStore(work / f"device-{i}.db", key=key) as store:
            app = EdgeClient(store)
            assert len(store) == 1 and app.user is not None
            # the table it trained on in the last round (the model before that round)
            assert app.factors.shape == model.params.factors.shape
            assert 7 * i not in app.recommend(k=5).items.tolist()  # bought: left out
            if i == 1:  # what the app showed: the model's top items, then category 3's
                items = [int(line.split("\t")[0]) for line in shown]
                assert items[:5] == app.recommend(k=5).items.tolist()
                assert items[5:] == app.recommend(k=5, category=3).items.tolist()
                assert (app.categories[items[5:]] == 3).all()
