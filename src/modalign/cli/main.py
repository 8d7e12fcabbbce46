"""`modalign` console script: sub-commands are modules with add_parser(subparsers) and run(args)."""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from modalign import __version__
from modalign.cli.commands import COMMANDS
from modalign.cli.common import setup_logging
from modalign.errors import ModalignError
from modalign.utils.paths import user_path

DISK_FULL = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}  # full disk, file-size limit, quota

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


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The full parser of the command named in `argv`; every other command gets only its summary line,
    so that nothing but the chosen command's module is imported (argv None: every command, fully)."""
    parser = argparse.ArgumentParser(prog="modalign", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"modalign {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    for name, (module, summary) in COMMANDS.items():
        if chosen is None or name == chosen:
            importlib.import_module(module).add_parser(sub)
        else:
            sub.add_parser(name, help=summary)
    return parser


def expand_user_paths(args: argparse.Namespace) -> argparse.Namespace:
    """Every path option with "~" expanded: a shell leaves a quoted "~/runs" or `--out=~/runs` as it is."""
    for name, value in vars(args).items():
        if isinstance(value, Path):
            setattr(args, name, user_path(value))
        elif isinstance(value, list) and value and all(isinstance(v, Path) for v in value):
            setattr(args, name, [user_path(v) for v in value])
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = expand_user_paths(parser.parse_args(argv))
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
    except OSError as e:
        if e.errno not in DISK_FULL:
            raise
        logging.getLogger("modalign").error(
            "no room to write %s (%s): free some space and run the same command again; finished store shards "
            "and complete run folders are kept, nothing half-written is", e.filename or "a file", e.strerror)
        return 1


if __name__ == "__main__":
    sys.exit(main())
