"""Image-caption pairs from a table file: CSV/TSV, JSON Lines or Parquet.

    image,caption                     {"image": "img/a.png", "caption": ["a cat", "a small cat"]}
    img/a.png,a cat
    img/a.png,a small cat             -> one group: image "img/a.png", texts "img/a.png#0", "img/a.png#1"

`image` is a path relative to the table file's folder (absolute paths are allowed). Rows naming the
same image add captions to one group; a caption cell may also hold a list (JSON Lines, Parquet). An
optional label column gives every image a class (group_labels + classnames). Images are not opened
here: a missing file stays in the data set (counted in the log) and the store skips it with a reason.
Rows with no image path or no caption are dropped, counted per reason (see `skipped_of`).

Text files are read as UTF-8 (a BOM is allowed) unless `encoding=` says otherwise (`--encoding` on the
command line, `?encoding=latin-1` in a data spec); a byte that does not decode is an error naming its
line and byte, never a traceback. Whatever the bytes, a reader returns rows, counts a skip, or raises
a ConfigError.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modalign.data.builder import PairsBuilder
from modalign.data.column import AlignedDataset
from modalign.data.skips import SkipCounter, attach_skips
from modalign.errors import ConfigError, MissingDataError

logger = logging.getLogger(__name__)

PAIRS_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
DEFAULT_ENCODING = "utf-8-sig"  # UTF-8, with or without a byte-order mark


@dataclass
class Table:
    columns: list[str]  # column names, in file order
    rows: Iterator[dict[str, Any]]  # one dict per data row (a missing cell is None)


def pairs_format(path: str | os.PathLike) -> str | None:
    """'csv' | 'tsv' | 'jsonl' | 'parquet' from the file suffix; None for other files."""
    return PAIRS_FORMATS.get(Path(path).suffix.lower())


def load_pairs(path: str | os.PathLike, image_col: str = "image", caption_col: str = "caption",
               name: str | None = None, label_col: str = "label", encoding: str = DEFAULT_ENCODING) -> AlignedDataset:
    """Reads a pairs table into an AlignedDataset with an "image" and a "text" column.

    `label_col` is used when the file has that column (else the data set has no labels). `encoding`: of
    a CSV/TSV/JSONL file (e.g. "latin-1", "cp1252"); Parquet stores text as UTF-8 itself.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingDataError(f"pairs file not found: {path}")
    fmt = pairs_format(path)
    if fmt is None:
        raise ConfigError(
            f"cannot read pairs from {path.name}: unknown suffix {path.suffix!r}; "
            f"use one of {', '.join(sorted(PAIRS_FORMATS))}"
        )
    skips = SkipCounter("rows")
    table = read_table(path, fmt, skips, encoding)
    missing = [c for c in (image_col, caption_col) if c not in table.columns]
    if missing:
        raise ConfigError(
            f"{path.name} has no column {' or '.join(repr(c) for c in missing)}; its columns are: "
            f"{', '.join(repr(c) for c in table.columns) or '(none)'}. Choose others with "
            f"--image-col / --caption-col (image_col= / caption_col= in Python)"
        )
    with_labels = label_col in table.columns
    folder = path.parent.resolve()
    builder = PairsBuilder()
    for i, row in enumerate(table.rows):
        where = f"row {i + 1}"
        image_value = _image_path(row.get(image_col))
        if image_value is None:
            skips.add("missing image path" if is_empty_cell(row.get(image_col)) else "image cell is not a path", where)
            continue
        captions, dropped = caption_values(row.get(caption_col))
        for reason in dropped:
            skips.add(reason, where)
        if not captions:
            continue
        written = Path(image_value).expanduser()
        absolute = Path(os.path.normpath(written if written.is_absolute() else folder / written))
        label = None if not with_labels or is_empty_cell(row.get(label_col)) else row.get(label_col)
        builder.add(absolute, image_value, absolute, captions, label)
    skips.log(logger, path.name)
    if not len(builder):
        raise ConfigError(f"{path.name}: no usable rows (image path + non-empty caption); "
                          f"dropped: {skips.summary() or 'the file has no data rows'}")
    dataset = builder.build(name or path.stem, root=folder, with_labels=with_labels)
    _log_missing_files(dataset, path.name)
    attach_skips(dataset, skips)
    logger.info("%s: %d images, %d captions", path.name, dataset.n_groups, len(dataset.column("text")))
    return dataset


# ---- readers ---------------------------------------------------------------------------------------

def read_table(path: Path, fmt: str, skips: SkipCounter, encoding: str = DEFAULT_ENCODING) -> Table:
    """Column names and rows of a table file; unreadable JSON lines are counted in `skips`."""
    if fmt in ("csv", "tsv"):
        return _read_csv(path, "\t" if fmt == "tsv" else ",", encoding)
    if fmt == "jsonl":
        return _read_jsonl(path, skips, encoding)
    return _read_parquet(path)


def read_text(path: Path, encoding: str = DEFAULT_ENCODING) -> str:
    """A text file's content; ConfigError naming the line and byte that does not decode, and the fix."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        return data.decode(encoding)
    except LookupError as e:
        raise ConfigError(f"unknown text encoding {encoding!r}; use a Python codec name such as utf-8, "
                          "latin-1, cp1252 or utf-16") from e
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        shown = "UTF-8" if encoding.lower().replace("_", "-") in ("utf-8-sig", "utf8-sig") else encoding
        raise ConfigError(
            f"{path.name} is not valid {shown} text: line {line}, byte {column} (0x{data[e.start]:02x}, file offset "
            f"{e.start}): {e.reason}. If the file was saved in another encoding, say which: --encoding latin-1 "
            f"(or cp1252, utf-16 ...) on the command line, '?encoding=latin-1' after a data spec, or "
            f"encoding='latin-1' in Python"
        ) from e


def _read_csv(path: Path, delimiter: str, encoding: str = DEFAULT_ENCODING) -> Table:
    reader = csv.DictReader(io.StringIO(read_text(path, encoding), newline=""), delimiter=delimiter)
    try:
        columns = [c for c in (reader.fieldnames or []) if c is not None]
        rows = [dict(r) for r in reader]
    except csv.Error as e:  # a field over the size limit, a stray quote in strict dialects ...
        raise ConfigError(f"{path.name}: line {reader.line_num}: not a readable CSV row ({e}); check the "
                          f"quoting there") from e
    return Table(columns, iter(rows))


def _read_jsonl(path: Path, skips: SkipCounter, encoding: str = DEFAULT_ENCODING) -> Table:
    rows: list[dict[str, Any]] = []
    columns: dict[str, None] = {}  # ordered set
    for n, line in enumerate(read_text(path, encoding).split("\n"), start=1):  # JSON strings may hold U+2028
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):  # RecursionError: arrays nested thousands deep
            skips.add("invalid JSON line", f"line {n}")
            continue
        if not isinstance(row, dict):
            skips.add("JSON line is not an object", f"line {n}")
            continue
        columns.update(dict.fromkeys(row))
        rows.append(row)
    return Table(list(columns), iter(rows))


def _read_parquet(path: Path) -> Table:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ConfigError(f"reading {path.name} needs pyarrow: pip install 'modalign[data]'") from e
    fix = "is it a complete Parquet file? (pyarrow: {e})"
    try:
        pf = pq.ParquetFile(path)
        columns = list(pf.schema_arrow.names)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError, ArrowIOError an OSError
        raise ConfigError(f"{path.name} cannot be read as Parquet: " + fix.format(e=e)) from e

    def rows() -> Iterator[dict[str, Any]]:
        try:
            for batch in pf.iter_batches(batch_size=4096):
                yield from batch.to_pylist()
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path.name}: a row group cannot be read: " + fix.format(e=e)) from e

    return Table(columns, rows())


# ---- cells -----------------------------------------------------------------------------------------

def is_empty_cell(value: Any) -> bool:
    return (value is None or (isinstance(value, float) and math.isnan(value))
            or (isinstance(value, str) and not value.strip()))


def _image_path(value: Any) -> str | None:
    """The path written in an image cell (a string, or a {"path": ...} struct as datasets writes it)."""
    if isinstance(value, dict):
        value = value.get("path")
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def caption_values(value: Any) -> tuple[list[str], list[str]]:
    """(usable captions, reasons for the dropped ones) of a caption cell holding text or a list of texts."""
    values = list(value) if isinstance(value, list | tuple) else [value]
    if not values:
        return [], ["empty caption"]
    captions, dropped = [], []
    for v in values:
        if is_empty_cell(v):
            dropped.append("empty caption")
        elif not isinstance(v, str):
            dropped.append("caption is not text")
        else:
            captions.append(v.strip())
    return captions, dropped


def _log_missing_files(dataset: AlignedDataset, source: str) -> None:
    paths = dataset.column("image").items
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        logger.warning("%s: %d of %d image files do not exist (e.g. %s); they stay in the data set and the "
                       "store will skip them", source, len(missing), len(paths), missing[0])
