"""Reading saved artifacts (a model folder's config.json and model.safetensors) that may have been edited,
truncated or forged: every problem is a MismatchError naming the file and the field, found before any
large allocation.

    cfg = read_json_object(folder / "config.json", "model config")
    shapes = safetensors_shapes(folder / "model.safetensors")     # {name: (dtype, shape)} from the header only
    field(cfg, "towers", dict, path)                              # a typed field or a clear error
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any

from modalign.errors import MismatchError

MAX_HEADER_BYTES = 64 * 1024 * 1024  # a safetensors header (JSON) larger than this is refused unread
_ITEM_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
               "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON file holding an object; MismatchError for a missing, unreadable, invalid or non-object file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise MismatchError(f"{path}: no {what} here ({Path(path).name} is missing)") from e
    except (OSError, UnicodeDecodeError) as e:
        raise MismatchError(f"{path}: the {what} cannot be read ({e})") from e
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise MismatchError(f"{path}: the {what} is not valid JSON ({e}); was it edited by hand? Restore it "
                            f"from the run that wrote it") from e
    if not isinstance(value, dict):
        raise MismatchError(f"{path}: the {what} must be a JSON object, got {type(value).__name__}")
    return value


def field(d: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any = ...) -> Any:
    """d[key] checked against `kind` (bool is never an int here); MismatchError naming `where` and the key."""
    if key not in d:
        if default is not ...:
            return default
        raise MismatchError(f"{where}: missing field {key!r}")
    value = d[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise MismatchError(f"{where}: field {key!r} must be {names}, got {type(value).__name__} {_short(value)}")
    return value


def safetensors_shapes(path: Path, max_header: int = MAX_HEADER_BYTES) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{tensor name: (dtype, shape)} from a safetensors file's header, every offset checked against the
    file's size, so a truncated or forged file is refused before any tensor is read."""
    path = Path(path)
    fix = "the file is truncated or was not written by modalign; save the model again"
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise MismatchError(f"{path}: {size} bytes is too short for a safetensors file; {fix}")
            (n,) = struct.unpack("<Q", head)
            if n > max_header or n > size - 8:
                raise MismatchError(f"{path}: its header claims {n} bytes (file: {size} bytes, limit {max_header}); {fix}")
            header = json.loads(f.read(n))
    except FileNotFoundError as e:
        raise MismatchError(f"{path} is missing: the model folder is incomplete") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise MismatchError(f"{path}: unreadable safetensors header ({e}); {fix}") from e
    if not isinstance(header, dict):
        raise MismatchError(f"{path}: the safetensors header is not a JSON object; {fix}")
    return {name: _tensor_info(path, name, info, size - 8 - n, fix) for name, info in header.items()
            if name != "__metadata__"}


def _tensor_info(path: Path, name: str, info: Any, data_bytes: int, fix: str) -> tuple[str, tuple[int, ...]]:
    where = f"{path}: tensor {name!r}"
    if not isinstance(info, dict):
        raise MismatchError(f"{where}: malformed header entry; {fix}")
    dtype = field(info, "dtype", str, where)
    shape = field(info, "shape", list, where)
    start, end = (field(info, "data_offsets", list, where) + [None, None])[:2]
    if dtype not in _ITEM_BYTES or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise MismatchError(f"{where}: unknown dtype {dtype!r} or bad shape {shape}; {fix}")
    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= data_bytes
            and end - start == math.prod(shape) * _ITEM_BYTES[dtype]):
        raise MismatchError(f"{where}: its bytes [{start}, {end}) do not fit a {dtype} {shape} tensor in the "
                            f"{data_bytes} data bytes of the file; {fix}")
    return dtype, tuple(shape)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
