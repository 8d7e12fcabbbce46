"""`modalign methods [PATTERN]`: the registered alignment methods, the default first."""

from __future__ import annotations

import argparse

from modalign.cli.commands import summary
from modalign.cli.common import print_table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("methods", help=summary("methods"),
                       description="List the alignment methods `modalign train --method` accepts, with what each "
                                   "does; the default (auto) first, then the others by name.")
    p.add_argument("pattern", nargs="?", default=None, help="a glob ('*cca') or a substring ('bridge')")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from modalign.workflows.fit import FitConfig
    from modalign.workflows.methods import METHODS

    default = FitConfig().method
    names = sorted(METHODS.descriptions(args.pattern).items(), key=lambda kv: (kv[0] != default, kv[0]))
    rows = [{"method": f"{n} (default)" if n == default else n, "what it does": d} for n, d in names]
    print_table(rows, ["method", "what it does"], title="alignment methods")
    return 0
