"""Where results go: JSON a script can read, written atomically, with the environment."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

from fedrec.common.atomic import atomic_open

RESULTS_DIR = Path("results")


def environment() -> dict:
    """What produced a figure: versions, machine and commit."""
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "fedrec": version("fedrec"),
        "commit": _git_commit(),
        "python": platform.python_version(),
        "numpy": version("numpy"),
        "flwr": version("flwr"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_json(obj: dict, path: str | Path) -> Path:
    """Write ``obj`` as JSON to ``path``, atomically."""
    with atomic_open(path) as out:
        json.dump(obj, out, indent=2)
        out.write("\n")
    return Path(path)


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here,
                             capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def save_figure(fig: object, path: str | Path) -> str | Path:
    """Lay out a matplotlib figure, write it as PNG through a temp file, and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_open(path, "wb") as out:
        fig.savefig(out, format="png")
    plt.close(fig)
    return path
