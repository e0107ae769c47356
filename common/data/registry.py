"""Datasets by name, and where their files are found.

Names: ``synthetic`` (or ``synthetic:KEY=VALUE,...`` with fields of
:class:`~fedrec.common.data.synthetic.ShopConfig`, e.g. ``synthetic:n_users=10000``),
``ml-100k``, ``ml-1m``, ``ml-latest-small``, ``ml-latest`` and ``csv:PATH``. A MovieLens
dataset's files are found in ``DATA_DIR`` itself or in ``DATA_DIR/<name>/``, where
``DATA_DIR`` is the ``data_dir`` argument (the CLI's ``--data-dir``) or else
``$FEDREC_DATA``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from fedrec.common.data.csvlog import load_csv_log
from fedrec.common.data.interactions import Interactions
from fedrec.common.data.movielens import load_ml_1m, load_ml_100k, load_ml_latest
from fedrec.common.data.synthetic import ShopConfig, generate_shop

ENV_VAR = "FEDREC_DATA"

# name -> (loader, a file that marks the dataset's folder)
MOVIELENS: dict[str, tuple[Callable[[Path], Interactions], str]] = {
    "ml-100k": (load_ml_100k, "u.data"),
    "ml-1m": (load_ml_1m, "ratings.dat"),
    "ml-latest-small": (lambda d: load_ml_latest(d, "ml-latest-small"), "ratings.csv"),
    "ml-latest": (lambda d: load_ml_latest(d, "ml-latest"), "ratings.csv"),
}
DATASETS = ("synthetic", "synthetic:KEY=VALUE,...", *MOVIELENS, "csv:PATH")


class DatasetNotFoundError(FileNotFoundError):
    """A named dataset's files are not where they were looked for."""


def dataset_dir(name: str, data_dir: str | Path | None = None) -> Path:
    """The folder holding ``name``'s files; raises :class:`DatasetNotFoundError` saying where it
    looked and how to get the data."""
    if name not in MOVIELENS:
        raise ValueError(f"{name!r} is not a MovieLens dataset name")
    marker = MOVIELENS[name][1]
    root = data_dir if data_dir is not None else os.environ.get(ENV_VAR)
    if not root:
        raise DatasetNotFoundError(
            f"dataset {name!r}: no data folder given. Pass --data-dir DIR or set {ENV_VAR}=DIR "
            f"(files in DIR/{name}/); `fedrec download {name} --data-dir DIR` fetches them.")
    tried = [Path(root) / name, Path(root)]
    for folder in tried:
        if (folder / marker).is_file():
            return folder
    raise DatasetNotFoundError(
        f"dataset {name!r}: {marker} not found in {' or '.join(map(str, tried))}. "
        f"`fedrec download {name} --data-dir {root}` fetches it.")


def shop_config(name: str) -> ShopConfig:
    """The :class:`ShopConfig` a ``synthetic:KEY=VALUE,...`` name describes."""
    fields = ShopConfig.__dataclass_fields__
    values: dict[str, int | float] = {}
    for part in filter(None, name.partition(":")[2].split(",")):
        key, sep, text = part.partition("=")
        key = key.strip()
        if not sep or key not in fields:
            raise ValueError(f"dataset {name!r}: {part!r} is not KEY=VALUE with KEY one of "
                             f"{', '.join(fields)}")
        kind = type(fields[key].default)
        try:
            values[key] = kind(text)
        except ValueError:
            raise ValueError(f"dataset {name!r}: {key} must be {kind.__name__}, "
                             f"found {text!r}") from None
    return ShopConfig(**values)


def load_dataset(name: str, data_dir: str | Path | None = None,
                 shop: ShopConfig | None = None) -> Interactions:
    """Load a dataset by name (see the module docstring)."""
    if name == "synthetic":
        return generate_shop(shop)
    if name.startswith("synthetic:"):
        return generate_shop(shop_config(name))
    if name.startswith("csv:"):
        return load_csv_log(Path(name[4:]))
    if name in MOVIELENS:
        return MOVIELENS[name][0](dataset_dir(name, data_dir))
    raise ValueError(f"Unknown dataset {name!r}; expected one of {', '.join(DATASETS)}.")
