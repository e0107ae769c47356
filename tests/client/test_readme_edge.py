"""The README's edge-app snippet, run as written: a new app developer's script that makes and
keeps the store key, takes the shop's catalogue, records events by SKU, takes a table
straight from a server's results and gets SKU recommendations in a category."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from fedrec.client.app import app as client_app
from fedrec.common.catalogue import parse_catalogue, read_catalogue
from fedrec.common.partition import simulated_partitions
from fedrec.common.settings import RunSettings
from fedrec.server.app import app as server_app
from fedrec.simulations.engines.inprocess import run_in_process

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- edge snippet: tests/client/test_readme_edge.py runs this block -->"


def readme_parts() -> tuple[str, str]:
    text = (ROOT / "README.md").read_text()
    assert MARKER in text, "the README's edge snippet marker is gone"
    snippet = re.search(r"```python\n(.*?)```", text[text.index(MARKER):], re.S).group(1)
    catalogue = re.search(r"cat > catalogue.csv <<'EOF'\n(.*?)\nEOF\n", text, re.S).group(1)
    return snippet, catalogue + "\n"


def test_the_readme_edge_snippet_runs_as_written(tmp_path):
    snippet, catalogue = readme_parts()
    (tmp_path / "catalogue.csv").write_text(catalogue)
    cat = parse_catalogue(catalogue, "catalogue.csv")
    # A server's results on that catalogue: a real (in-process) run.
    shop = f"synthetic:n_users=30,n_items={cat.n_items},n_events=600"
    settings = RunSettings(dataset=shop, catalogue=str(tmp_path / "catalogue.csv"),
                           num_rounds=2, evaluate_every=2, factors=4,
                           results_dir=str(tmp_path / "results"))
    run_in_process(server_app, client_app, simulated_partitions(shop, settings.protocol).n_users,
                   settings.to_run_config())
    outputs = []
    for _ in range(2):  # the second time the key and store exist: opened, not made
        done = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, timeout=120,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        outputs.append(ast.literal_eval(done.stdout.strip()))
    outdoor = {s for s, c in zip(cat.skus, cat.categories, strict=True) if "outdoor" in c}
    for skus in outputs:
        assert len(skus) == 3 and set(skus) <= outdoor - {"coat-rain"}
    assert (tmp_path / "shopper.key").stat().st_mode & 0o777 == 0o600
    assert read_catalogue(tmp_path / "catalogue.csv").n_items == 12
