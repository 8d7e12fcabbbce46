"""Shared CLI pieces: logging set-up, the store location, terminal tables, JSON output."""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modalign.utils.paths import default_store, user_path


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    try:
        from rich.console import Console
        from rich.logging import RichHandler

        # logs go to stderr so that stdout carries only results (tables, JSON)
        handler: logging.Handler = RichHandler(console=Console(stderr=True), show_path=False, markup=False)
        fmt = "%(message)s"
    except ImportError:
        handler, fmt = logging.StreamHandler(), "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, datefmt="%H:%M:%S", handlers=[handler], force=True)
    for noisy in ("httpx", "urllib3", "filelock", "sentence_transformers", "transformers", "datasets", "PIL"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def add_encoding(p: argparse.ArgumentParser) -> None:
    """--encoding for commands that read a pairs file (CSV/TSV/JSONL); see data_options."""
    p.add_argument("--encoding", help="text encoding of a CSV/TSV/JSONL pairs file (default: UTF-8), e.g. "
                                      "latin-1, cp1252, utf-16")


def data_options(args: argparse.Namespace) -> dict[str, str]:
    """Loader options the user set: --encoding, --image-col / --caption-col where they differ from the
    defaults (named data sets such as tuxpaint take no such options, so the defaults stay unsaid)."""
    defaults = {"image_col": "image", "caption_col": "caption"}
    out = {k: getattr(args, k) for k, v in defaults.items() if getattr(args, k, v) != v}
    if getattr(args, "encoding", None):
        out["encoding"] = args.encoding
    return out


def add_common(p: argparse.ArgumentParser, store: bool = True, device: bool = True) -> None:
    if store:
        p.add_argument("--store", type=Path, default=None,
                       help=f"embedding store folder (default: $MODALIGN_STORE or {default_store()})")
    if device:
        p.add_argument("--device", default="cpu", help="torch device for encoders and training (cpu, cuda, mps)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def open_store(args: argparse.Namespace):
    from modalign.store import EmbeddingStore

    return EmbeddingStore(user_path(args.store) if args.store else default_store())


def short_name(metric: str) -> str:
    """Column headers that fit a terminal: image_retrieval_recall@5 -> t2i R@5 (text->image)."""
    metric = (metric.replace("image_retrieval_recall@", "t2i R@").replace("text_retrieval_recall@", "i2t R@")
              .replace("mean_per_class_recall", "mean class recall"))
    # pairwise names of extra towers: audio_text_recall@1 -> a2t R@1
    return re.sub(r"^([a-z]+)_([a-z]+)_recall@", lambda m: f"{m[1][0]}2{m[2][0]} R@", metric)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str = "",
                floats: str = "{:.3f}") -> None:
    """A terminal table (rich when available, plain text otherwise)."""
    def fmt(v: Any) -> str:
        return floats.format(v) if isinstance(v, float) else str(v)

    headers = [short_name(c) for c in columns]

    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title or None)
        for i, (c, h) in enumerate(zip(columns, headers, strict=True)):
            numeric = all(isinstance(r.get(c), int | float) for r in rows if r.get(c) not in (None, ""))
            table.add_column(h, justify="right" if numeric and i > 0 else "left", no_wrap=i == 0)
        for r in rows:
            table.add_row(*(fmt(r.get(c, "")) for c in columns))
        console = Console()
        if not console.is_terminal:  # a pipe or a file: rich would wrap at 80 columns; keep every row on one line
            console = Console(width=max(80, console.measure(table, options=console.options.update(width=10_000))
                                        .maximum))
        console.print(table)
    except ImportError:
        if title:
            print(title)
        widths = [max(len(h), *(len(fmt(r.get(c, ""))) for r in rows)) for c, h in zip(columns, headers, strict=True)]
        print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
        for r in rows:
            print("  ".join(fmt(r.get(c, "")).ljust(w) for c, w in zip(columns, widths, strict=True)))


def write_json(path: Path | None, obj: Any) -> None:
    if path is None:
        return
    from modalign.utils.io import atomic_write_json

    atomic_write_json(path, obj)
    logging.getLogger("modalign").info("wrote %s", path)


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
