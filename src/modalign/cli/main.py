"""`modalign` console script: sub-commands are modules with add_parser(subparsers) and run(args)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from modalign import __version__
from modalign.cli import (
    cmd_curate,
    cmd_diagnose,
    cmd_encode,
    cmd_encoders,
    cmd_eval,
    cmd_extend,
    cmd_index,
    cmd_quickstart,
    cmd_search,
    cmd_select,
    cmd_serve,
    cmd_train,
)
from modalign.cli.common import setup_logging
from modalign.errors import ModalignError

COMMANDS = [cmd_quickstart, cmd_encoders, cmd_encode, cmd_train, cmd_eval]
COMMANDS += [cmd_select, cmd_curate]
COMMANDS += [cmd_diagnose]
COMMANDS += [cmd_extend]
COMMANDS += [cmd_index, cmd_search, cmd_serve]  # search: modalign.search

DESCRIPTION = """\
modalign aligns frozen unimodal encoders (an image model, a text model) into one CLIP-like
embedding space by training small projectors on their cached outputs.

Typical flow:
  modalign quickstart                                  # the whole job on packaged encoders and data
  modalign encoders                                    # which encoders are available
  modalign train --pairs pairs.csv --image-encoder effnet-lite0 --text-encoder minilm-l6 --out runs/mine
  modalign eval retrieval runs/mine --pairs pairs.csv --split test --json retrieval.json
  modalign eval zeroshot runs/mine --images my_labelled_tree/ --json zeroshot.json
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modalign", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"modalign {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    setup_logging(-1 if getattr(args, "quiet", False) else 1 if getattr(args, "verbose", False) else 0)
    # our own progress bars are enough: silence the per-file bars of the hub / transformers loaders
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        return int(args.run(args) or 0)
    except ModalignError as e:
        logging.getLogger("modalign").error("%s", e)
        return 1
    except KeyboardInterrupt:
        logging.getLogger("modalign").error("interrupted; finished store shards are kept, rerun to resume")
        return 130


if __name__ == "__main__":
    sys.exit(main())
