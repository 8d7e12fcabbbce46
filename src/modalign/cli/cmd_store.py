"""`modalign store ls|info|rm`: what the embedding store holds, and removing entries."""

from __future__ import annotations

import argparse
import json

from modalign.cli.commands import summary
from modalign.cli.common import add_common, open_store, print_table

LS_COLUMNS = ["digest", "encoder", "layer", "items", "dim", "dtype", "complete", "MB", "created"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("store", help=summary("store"),
                       description="List the store's entries (one per encoder, layer, data column and "
                                   "preprocessing), show one entry's manifest, or delete entries.")
    ssub = p.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    ls = ssub.add_parser("ls", help="one line per entry: encoder, layer, items, size on disk")
    ls.add_argument("--json", action="store_true", help="print the entries as JSON instead of a table")
    info = ssub.add_parser("info", help="an entry's full manifest (cache key, layout, skipped items)")
    info.add_argument("digest", help="the entry's digest (first column of `modalign store ls`; a prefix works)")
    rm = ssub.add_parser("rm", help="delete entries (their vectors are encoded again when next needed)")
    rm.add_argument("digest", nargs="+", help="digests (or unique prefixes) of the entries to delete")
    for q in (ls, info, rm):
        add_common(q)
        q.set_defaults(run=run)


def _row(entry: dict) -> dict:
    key = entry.get("key", {})
    return {"digest": entry["digest"][:12], "encoder": key.get("encoder", "?"), "layer": key.get("layer", "?"),
            "items": entry.get("layout", {}).get("n_items", "?"), "dim": entry.get("dim", "?"),
            "dtype": key.get("dtype", "?"), "complete": "error" if "error" in entry else entry.get("complete", "?"),
            "MB": round(entry["bytes"] / 2**20, 1), "created": str(entry.get("created", ""))[:19]}


def _find(entries: list[dict], prefix: str) -> dict:
    from modalign.errors import ConfigError

    hits = [e for e in entries if e["digest"].startswith(prefix)]
    if len(hits) != 1:
        what = "no entry" if not hits else f"{len(hits)} entries"
        raise ConfigError(f"{what} in the store start with {prefix!r}; list them with `modalign store ls`")
    return hits[0]


def run(args: argparse.Namespace) -> int:
    store = open_store(args)
    entries = store.entries()
    if args.store_command == "ls":
        if args.json:
            print(json.dumps(entries, indent=2, default=str))
        else:
            print_table([_row(e) for e in entries], LS_COLUMNS, title=f"{len(entries)} entries in {store.root}")
    elif args.store_command == "info":
        print(json.dumps(_find(entries, args.digest), indent=2, default=str))
    else:
        for digest in [_find(entries, d)["digest"] for d in args.digest]:  # all found before any is deleted
            store.remove(digest)
            print(f"removed {digest}")
    return 0
