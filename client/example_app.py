"""A minimal edge app: what a shop's app does with fedrec on the shopper's device.

It records behaviour and shows recommendations through :class:`~fedrec.client.edge.EdgeClient`
over the device's encrypted store; a SuperNode started with ``--node-config
'store="STORE" store-key-file="KEY"'`` trains and syncs through the same file.

::

    python -m fedrec.client.example_app device.db device.key new-key
    python -m fedrec.client.example_app device.db device.key catalogue catalogue.csv
    python -m fedrec.client.example_app device.db device.key record SKU-42 view
    python -m fedrec.client.example_app device.db device.key record SKU-42 purchase
    python -m fedrec.client.example_app device.db device.key recommend --k 5 --category shoes

Items are the shop's SKUs once the device holds its catalogue (the shop's file, or a table
synced from a server run with one); without one, row numbers.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from fedrec.client.edge import EdgeClient
from fedrec.client.store import DeviceStore, StoreError, read_key_file
from fedrec.common.atomic import atomic_open


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fedrec.client.example_app",
                                     description="record behaviour, show recommendations")
    parser.add_argument("store", type=Path, help="the device's encrypted store")
    parser.add_argument("key_file", type=Path, help="the store's key (hex)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("new-key", help="create the store and its key file (kept apart)")
    cat = sub.add_parser("catalogue", help="take the shop's catalogue file (SKUs, "
                         "categories) before the first sync")
    cat.add_argument("file", type=Path)
    rec = sub.add_parser("record", help="record one event")
    rec.add_argument("item", help="a SKU (a row number without a catalogue)")
    rec.add_argument("event", choices=("view", "cart", "purchase", "rating"))
    rec.add_argument("--value", type=float, help="the rating, for a rating")
    show = sub.add_parser("recommend", help="the top items for this shopper")
    show.add_argument("--k", type=int, default=10)
    show.add_argument("--category", help="a category name (an index without a catalogue)")
    args = parser.parse_args(argv)
    try:
        if args.command == "new-key":
            if args.key_file.exists():
                raise FileExistsError(f"{args.key_file} exists")
            if args.store.exists():
                raise FileExistsError(f"{args.store} exists")
            key = os.urandom(32)
            with atomic_open(args.key_file, "w") as out:
                os.fchmod(out.fileno(), 0o600)
                out.write(key.hex())
            DeviceStore(args.store, key=key, create=True).close()
            print(f"new store {args.store}, its key in {args.key_file}")
            return 0
        with DeviceStore(args.store, key=read_key_file(args.key_file)) as store:
            app = EdgeClient(store)
            if args.command == "catalogue":
                app.set_catalogue(args.file)
                print(f"catalogue {args.file}: {len(app.skus)} items, "
                      f"{len(app.category_names)} categories")
            elif args.command == "record":
                item = args.item if app.skus is not None else _row(args.item)
                app.record(item, args.event, args.value)
                print(f"recorded {args.event} of item {args.item} ({len(store)} events)")
            else:
                category = args.category
                if category is not None and not app.category_names:
                    category = _row(category, "--category")
                top = app.recommend(k=args.k, category=category)
                if not len(top.items):
                    print("no recommendations yet (no item table synced)" if app.factors
                          is None else "no item to recommend (none left in that category)")
                names = top.skus if top.skus is not None else top.items.tolist()
                for item, score in zip(names, top.scores, strict=True):
                    print(f"{item}\t{score:.4f}")
    except (StoreError, ValueError, OSError) as exc:
        print(f"example_app: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _row(text: str, what: str = "item") -> int:
    """A row number given on the command line (a device without the shop's catalogue)."""
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{what} {text!r}: this device holds no catalogue, so items and "
                         "categories are row numbers (run `catalogue FILE` first)") from None


if __name__ == "__main__":
    raise SystemExit(main())
