"""Named data sets and data-set spec strings behind one `load_dataset`, for the command line.

    load_dataset("tuxpaint")                       a registered name (list_datasets() shows them all)
    load_dataset("fashion-mnist:train?per_class=100")   options after '?' go to the loader
    load_dataset("data/pairs.csv")                 .csv / .tsv / .jsonl / .ndjson / .parquet -> load_pairs
    load_dataset("data/shard-*.tar")               WebDataset tar shards (a path, glob or URL) -> load_webdataset
    load_dataset("data/mine")                      a folder holding one pairs file -> load_pairs of it
    load_dataset("data/photos")                    a folder of class folders -> load_image_folder
    load_dataset("data/saved")                     a Dataset.save_to_disk folder -> load_hf_dataset
    load_dataset("hf:user/name?split=test")        a Hugging Face hub data set -> load_hf_dataset

Option values are parsed as int, float, true/false or left as text; keyword arguments of
`load_dataset` override them.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl

from modalign.data.column import AlignedDataset, LabelledDataset
from modalign.errors import ConfigError
from modalign.utils.registry import Registry

logger = logging.getLogger(__name__)

DatasetKind = Literal["pairs", "labelled", "any"]
Dataset = AlignedDataset | LabelledDataset
DatasetLoader = Callable[..., Dataset]
KINDS = ("pairs", "labelled", "any")


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    loader: DatasetLoader
    kind: DatasetKind  # "pairs": returns an AlignedDataset; "labelled": a LabelledDataset; "any": depends on data
    description: str
    qualifier: str | None = None  # "NAME:VALUE" passes VALUE as this loader option (iconify:mdi -> sets="mdi")


# the built-in data sets register themselves in modalign.data.builtin, imported on first lookup
DATASETS: Registry[DatasetEntry] = Registry("data set", plugins=["modalign.data.builtin"])


def register_dataset(name: str, loader: DatasetLoader, kind: DatasetKind = "pairs", description: str = "",
                     qualifier: str | None = None) -> None:
    """Registers a named data set; `loader(**options)` must return an AlignedDataset or a LabelledDataset.
    With `qualifier`, "name:VALUE" loads it with that option set to VALUE."""
    if kind not in KINDS:
        raise ConfigError(f"data set kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if not name or "?" in name or name.startswith("hf:"):
        raise ConfigError(f"bad data set name {name!r}: it must be non-empty, without '?' and not start with 'hf:'")
    DATASETS.register(name, DatasetEntry(name, loader, kind, description, qualifier), description=description)


def list_datasets(pattern: str | None = None) -> list[DatasetEntry]:
    """Registered data sets whose name matches `pattern` (a glob or a substring), sorted by name."""
    return [DATASETS.get(n) for n in DATASETS.list(pattern)]


def _parse_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_dataset_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """'fashion-mnist:train?limit=10' -> ('fashion-mnist:train', {'limit': 10})."""
    body, _, query = spec.partition("?")
    return body, {k: _parse_value(v) for k, v in parse_qsl(query, keep_blank_values=True)}


def resolve_dataset(spec: str) -> tuple[DatasetEntry, dict[str, Any]]:
    """The entry (a registered one, or an ad-hoc one for a path / hf: name) and the options of a spec."""
    body, options = parse_dataset_spec(spec)
    if body in DATASETS:
        return DATASETS.get(body), options
    family, _, value = body.partition(":")
    qualifier = DATASETS.get(family).qualifier if value and family in DATASETS else None
    if qualifier:
        return DATASETS.get(family), {qualifier: value, **options}
    if body.startswith("hf:"):
        from modalign.data.hf import load_hf_dataset

        target = body[3:]
        if not target:
            raise ConfigError(f"data set spec {spec!r} names no data set after 'hf:'")
        return DatasetEntry(body, functools.partial(load_hf_dataset, target), "any", "Hugging Face data set"), options
    return _path_entry(spec, body), options


def _path_entry(spec: str, body: str) -> DatasetEntry:
    from modalign.data.hf import is_saved_hf_dataset, load_hf_dataset
    from modalign.data.pairs import PAIRS_FORMATS, load_pairs, pairs_format

    if body.lower().endswith(".tar"):  # one shard, a glob of shards or a URL
        from modalign.data.webdataset import load_webdataset

        return DatasetEntry(body, functools.partial(load_webdataset, body), "pairs", "WebDataset tar shards")
    path = Path(body).expanduser()
    if path.is_file():
        if pairs_format(path) is None:
            raise ConfigError(f"cannot read a data set from {path.name}: pairs files end in "
                              f"{', '.join(sorted(PAIRS_FORMATS))}")
        return DatasetEntry(body, functools.partial(load_pairs, path), "pairs", "pairs file")
    if path.is_dir():
        if is_saved_hf_dataset(path):
            return DatasetEntry(body, functools.partial(load_hf_dataset, path), "any", "saved Hugging Face data set")
        from modalign.data.folders import class_folders, load_image_folder

        # a folder holding one pairs table (and its images/ folder) means that table
        tables = sorted(p for p in path.iterdir() if p.is_file() and pairs_format(p))
        if len(tables) == 1:
            return DatasetEntry(body, functools.partial(load_pairs, tables[0]), "pairs", "pairs file")
        if len(tables) > 1:
            raise ConfigError(f"{path} holds several pairs files ({', '.join(p.name for p in tables)}); "
                              f"pass one of those files")
        if class_folders(path):
            return DatasetEntry(body, functools.partial(load_image_folder, path), "labelled", "image folder")
        raise ConfigError(f"{path} is neither a folder of class folders, a folder with one pairs file, nor a "
                          f"saved Hugging Face data set")
    known = ", ".join(DATASETS.list())
    raise ConfigError(
        f"unknown data set {spec!r}: not a registered name ({known}), not an existing file or folder, "
        f"and not 'hf:NAME'"
    )


def load_dataset(spec: str, **options: Any) -> Dataset:
    """Loads the data set a spec names (see the module doc); `options` override those in the spec."""
    entry, spec_options = resolve_dataset(spec)
    kwargs = {**spec_options, **options}
    signature = inspect.signature(entry.loader)
    try:
        signature.bind(**kwargs)
    except TypeError as e:
        raise ConfigError(f"bad options for data set {spec!r}: {e}; the loader takes {signature}") from e
    return entry.loader(**kwargs)


def _kind_hint(spec: str, entry: DatasetEntry, wanted: str) -> str:
    others = [e.name for e in list_datasets(spec.partition("?")[0].partition(":")[0]) if e.kind == wanted]
    hint = f"; use {' or '.join(others)}" if others else ""
    return f"{spec} is a {entry.kind} data set, but this needs a {wanted} one{hint}"


def load_pairs_dataset(spec: str, **options: Any) -> AlignedDataset:
    """load_dataset for commands that need paired items (training, retrieval): a clear error otherwise."""
    data = load_dataset(spec, **options)
    if not isinstance(data, AlignedDataset):
        raise ConfigError(_kind_hint(spec, resolve_dataset(spec)[0], "pairs"))
    return data


def load_labelled_dataset(spec: str, **options: Any) -> LabelledDataset:
    """load_dataset for commands that need labelled items (zero-shot, few-shot): a clear error otherwise."""
    data = load_dataset(spec, **options)
    if not isinstance(data, LabelledDataset):
        raise ConfigError(_kind_hint(spec, resolve_dataset(spec)[0], "labelled"))
    return data
