"""``fedrec catalogue``: check, show and change a shop's catalogue file.

Every change is validated as a whole new version (and as an extension of the old one: items
keep their rows) before the file is replaced, through a temp file and a rename, so a running
server that reads it between rounds sees the old version or the new one, never half of it.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from fedrec.common.catalogue import (
    FEATURE,
    SEPARATOR,
    Catalogue,
    CatalogueError,
    catalogue_text,
    parse_catalogue,
    parse_time,
    read_catalogue,
    with_changes,
    write_catalogue,
)
from fedrec.common.data.registry import load_dataset


def add_parser(sub: argparse._SubParsersAction) -> None:
    cat = sub.add_parser("catalogue", help="check, show and change a shop's catalogue file")
    cat_sub = cat.add_subparsers(required=True, metavar="ACTION")
    show = cat_sub.add_parser("show", help="validate a catalogue and summarise it")
    show.add_argument("file", type=Path)
    show.add_argument("--items", type=int, default=5, help="items to list (default 5)")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(run=_run_show)
    add = cat_sub.add_parser("add", help="list a new item (appended: old rows keep theirs)")
    add.add_argument("file", type=Path)
    add.add_argument("--sku", required=True)
    add.add_argument("--title", default="")
    add.add_argument("--categories", default="", help=f"{SEPARATOR!r}-separated names")
    add.add_argument("--listed", default="", help="Unix seconds or ISO 8601 (default: now)")
    add.add_argument("--feature", action="append", default=[], metavar="NAME=VALUE",
                     help="a content feature the catalogue has; repeatable")
    add.set_defaults(run=_run_add)
    delist = cat_sub.add_parser("delist", help="stop offering items (their rows stay)")
    delist.add_argument("file", type=Path)
    delist.add_argument("skus", nargs="+")
    delist.add_argument("--at", default="", help="Unix seconds or ISO 8601 (default: now)")
    delist.set_defaults(run=_run_delist)
    export = cat_sub.add_parser("export", help="a dataset's items as a catalogue file "
                                "(SKUs PREFIX + item number, its genres or categories)")
    export.add_argument("--dataset", default="synthetic")
    export.add_argument("--data-dir", type=Path)
    export.add_argument("--prefix", default="SKU-")
    export.add_argument("--out", type=Path, required=True)
    export.set_defaults(run=_run_export)


def summary(cat: Catalogue, now: float, items: int = 5) -> dict:
    """What ``fedrec catalogue show`` prints."""
    hidden = cat.hidden(now)
    with np.errstate(invalid="ignore"):
        upcoming = int((cat.listed > now).sum())
        delisted = int((cat.delisted <= now).sum())
    per_item = Counter(len(c) for c in cat.categories)
    counts = Counter(c for cats in cat.categories for c in cats)
    return {"file": cat.path, "items": cat.n_items, "offered": int((~hidden).sum()),
            "not-yet-listed": upcoming, "delisted": delisted,
            "categories": len(counts),
            "categories-per-item": {str(k): v for k, v in sorted(per_item.items())},
            "largest-categories": dict(counts.most_common(10)),
            "features": list(cat.feature_names), "digest": cat.digest(),
            "first-items": [{"row": i, "sku": cat.skus[i], "title": cat.titles[i],
                             "categories": list(cat.categories[i])}
                            for i in range(min(items, cat.n_items))]}


def _run_show(args: argparse.Namespace) -> int:
    info = summary(read_catalogue(args.file), time.time(), args.items)
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"{info['file']}: {info['items']} items, {info['offered']} offered now "
          f"({info['not-yet-listed']} not yet listed, {info['delisted']} delisted), "
          f"{info['categories']} categories, {len(info['features'])} features")
    for item in info["first-items"]:
        print(f"  row {item['row']}\t{item['sku']}\t{item['title']}\t"
              f"{SEPARATOR.join(item['categories'])}")
    return 0


def _features(pairs: list[str], cat: Catalogue) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--feature {pair!r}: expected NAME=VALUE")
        if name not in cat.feature_names:
            raise ValueError(f"--feature {name!r}: the catalogue's features are "
                             f"{', '.join(cat.feature_names) or 'none'}")
        out[FEATURE + name] = value
    return out


def _run_add(args: argparse.Namespace) -> int:
    cat = read_catalogue(args.file)
    listed = args.listed or str(int(time.time()))
    item = {"sku": args.sku, "title": args.title, "categories": args.categories,
            "listed": listed, **_features(args.feature, cat)}
    new = with_changes(cat, add=[item])
    write_catalogue(args.file, new)
    print(f"{args.file}: {args.sku} listed as row {new.n_items - 1} ({new.n_items} items)")
    return 0


def _run_delist(args: argparse.Namespace) -> int:
    try:
        at = parse_time(args.at) if args.at else time.time()
    except ValueError as exc:
        raise ValueError(f"--at: {exc}") from None
    cat = read_catalogue(args.file)
    new = with_changes(cat, delist=dict.fromkeys(args.skus, at))
    write_catalogue(args.file, new)
    print(f"{args.file}: {len(args.skus)} items delisted")
    return 0


def dataset_catalogue(dataset: str, data_dir: Path | None = None, prefix: str = "SKU-"
                      ) -> Catalogue:
    """A dataset's items as a catalogue: SKU ``prefix`` + item number, the item's genres or
    categories (its nonzero binary features) as categories, listed from its first event."""
    data = load_dataset(dataset, data_dir)
    n = data.n_items
    features = data.item_features
    cats: list[tuple[str, ...]] = [()] * n
    if features is not None and len(features.matrix):
        names = features.names
        cats = [tuple(names[j] for j in np.flatnonzero(row)) for row in features.matrix]
    first = np.full(n, np.nan)
    order = np.argsort(data.timestamp, kind="stable")
    items, where = np.unique(data.item[order], return_index=True)
    first[items] = data.timestamp[order][where]
    width = len(str(n - 1))
    cat = Catalogue(tuple(f"{prefix}{i:0{width}d}" for i in range(n)), ("",) * n,
                    tuple(cats), first, np.full(n, np.nan), path=f"<{dataset}>")
    return parse_catalogue(catalogue_text(cat), cat.path)  # (checked as any file is)


def _run_export(args: argparse.Namespace) -> int:
    if args.out.exists():
        raise FileExistsError(f"{args.out} exists; a catalogue file is the operator's own")
    try:
        cat = dataset_catalogue(args.dataset, args.data_dir, args.prefix)
    except CatalogueError as exc:
        raise ValueError(f"--prefix {args.prefix!r} makes SKUs the catalogue refuses: "
                         f"{exc}") from None
    write_catalogue(args.out, cat)
    print(f"{args.out}: {cat.n_items} items of {args.dataset}, "
          f"{len(cat.category_names)} categories")
    return 0
