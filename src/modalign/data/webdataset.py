"""Image-caption pairs from WebDataset tar shards.

    shard-000000.tar                  load_webdataset("data/shard-*.tar")
        000001.jpg  000001.txt        -> one group per key: image "shard-000000/000001",
        000002.png  000002.json          text "shard-000000/000001#0", ...

Members are grouped by key: the member path up to the first dot of its file name (the WebDataset
convention, so "a/x.seg.png" has key "a/x" and extension "seg.png"). A sample needs one image (.png,
.jpg, .jpeg, .webp, .bmp) and a caption: a .txt file (one caption) or a .json file whose "caption" or
"text" field holds a text or a list of texts. Samples lacking either are dropped, counted per reason.

The store hashes image files and the image loader decodes paths, so each tar is extracted once into
$MODALIGN_CACHE/webdataset/<hash>/ (default ~/.cache/modalign): into a temp folder first, renamed when
complete, so a killed run never leaves a half-extracted shard behind. Local tars are keyed by their
content hash; URLs (s3://, https://, ... read with fsspec, when installed) by URL, size and mtime/ETag.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from modalign.data.builder import PairsBuilder
from modalign.data.column import AlignedDataset
from modalign.data.pairs import caption_values
from modalign.data.skips import SkipCounter, attach_skips
from modalign.errors import ConfigError, MissingDataError
from modalign.utils.hashing import hash_file, hash_json
from modalign.utils.io import umask_mode
from modalign.utils.paths import cache_dir

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CAPTION_FIELDS = ("caption", "text")


def default_cache_dir() -> Path:
    """<cache home>/webdataset (see modalign.utils.paths)."""
    return cache_dir("webdataset")


def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def resolve_shards(paths_or_glob: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Tar paths/URLs from one path, a glob, or a list of them, in sorted order per pattern."""
    specs = [paths_or_glob] if isinstance(paths_or_glob, str | os.PathLike) else list(paths_or_glob)
    out: list[str] = []
    for spec in specs:
        text = os.fspath(spec).removeprefix("file://")
        if is_url(text):
            out.extend(_remote_glob(text) if glob.has_magic(text) else [text])
            continue
        text = os.path.expanduser(text)
        found = sorted(glob.glob(text)) if glob.has_magic(text) else ([text] if Path(text).is_file() else [])
        if not found:
            raise MissingDataError(f"no WebDataset tar matches {text!r}; pass a .tar path, a glob or a URL")
        out.extend(found)
    return out


def _fsspec() -> Any:
    try:
        import fsspec
    except ImportError as e:
        raise ConfigError("reading WebDataset shards from a URL needs fsspec: pip install fsspec "
                          "(plus s3fs / gcsfs for s3:// / gs://)") from e
    return fsspec


def _remote_glob(url: str) -> list[str]:
    fsspec = _fsspec()
    fs, _, paths = fsspec.get_fs_token_paths(url)
    found = sorted(fs.glob(paths[0]))
    if not found:
        raise MissingDataError(f"no WebDataset tar matches {url!r}")
    protocol = fs.protocol[0] if isinstance(fs.protocol, tuple | list) else fs.protocol
    return [f"{protocol}://{p}" if "://" not in p else p for p in found]


def _shard_hash(shard: str) -> str:
    if not is_url(shard):
        return hash_file(shard, length=24)
    fsspec = _fsspec()
    fs, _, (path,) = fsspec.get_fs_token_paths(shard)
    info = fs.info(path)
    stamp = {k: str(info.get(k)) for k in ("size", "mtime", "LastModified", "ETag", "etag") if k in info}
    return hash_json({"url": shard, **stamp}, length=24)


def _safe_name(name: str) -> str | None:
    """A member name as a relative path inside the cache folder, or None when it would escape it."""
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        return None
    return str(p)


def extract_shard(shard: str, cache_dir: Path | None = None) -> Path:
    """The folder holding shard's regular files (extracted on the first call; atomic)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / _shard_hash(shard)
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=root))
    tmp.chmod(umask_mode(0o777))  # renamed into place below: as readable as a folder made with mkdir
    try:
        if is_url(shard):
            with _fsspec().open(shard, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
                _extract_members(tar, tmp)
        else:
            with tarfile.open(shard, mode="r|*") as tar:
                _extract_members(tar, tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not target.is_dir():  # not a concurrent extraction that won the race
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("extracted %s into %s", shard, target)
    return target


def _extract_members(tar: tarfile.TarFile, dest: Path) -> None:
    """Regular files only (no links, devices or paths leaving `dest`), streamed in tar order."""
    for member in tar:
        name = _safe_name(member.name)
        if not member.isfile() or name is None:
            continue
        out = dest / name
        out.parent.mkdir(parents=True, exist_ok=True)
        src = tar.extractfile(member)
        if src is None:
            continue
        with src, open(out, "wb") as f:
            shutil.copyfileobj(src, f)


@dataclass
class _Sample:
    image: Path | None = None
    captions: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    has_caption_file: bool = False


def _split_key(rel: str) -> tuple[str, str]:
    """'a/x.seg.png' -> ('a/x', 'seg.png')."""
    folder, _, base = rel.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _read_caption(path: Path, ext: str) -> tuple[list[str], list[str]]:
    text = path.read_text(encoding="utf-8", errors="replace")
    if ext == "txt":
        return caption_values(text)
    try:
        meta = json.loads(text)
    except json.JSONDecodeError:
        return [], ["unreadable .json"]
    if not isinstance(meta, dict):
        return [], ["caption .json is not an object"]
    value = next((meta[k] for k in CAPTION_FIELDS if k in meta), None)
    if value is None:
        return [], [f".json has no {' or '.join(CAPTION_FIELDS)} field"]
    return caption_values(value)


def _samples(folder: Path) -> dict[str, _Sample]:
    samples: dict[str, _Sample] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        key, ext = _split_key(path.relative_to(folder).as_posix())
        sample = samples.setdefault(key, _Sample())
        if f".{ext}" in IMAGE_EXTENSIONS and sample.image is None:
            sample.image = path
        elif ext in ("txt", "json") and not sample.has_caption_file:
            sample.has_caption_file = True
            sample.captions, sample.dropped = _read_caption(path, ext)
    return samples


def load_webdataset(paths_or_glob: str | os.PathLike | Sequence[str | os.PathLike], name: str | None = None,
                    cache_dir: str | os.PathLike | None = None) -> AlignedDataset:
    """Reads WebDataset tar shards (paths, globs or fsspec URLs) into an AlignedDataset ("image", "text")."""
    shards = resolve_shards(paths_or_glob)
    skips = SkipCounter("samples")
    builder = PairsBuilder()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else None
    stems = [PurePosixPath(s.split("://")[-1]).name.removesuffix(".tar") for s in shards]
    if len(set(stems)) != len(stems):  # two shards named alike in different folders: keep ids unique
        stems = [f"{i:05d}-{s}" for i, s in enumerate(stems)]
    for shard, stem in zip(shards, stems, strict=True):
        folder = extract_shard(shard, cache)
        for key, sample in _samples(folder).items():
            where = f"{stem}/{key}"
            for reason in sample.dropped:
                skips.add(reason, where)
            if sample.image is None:
                skips.add("no image file", where)
                continue
            if not sample.captions:
                if not sample.has_caption_file:
                    skips.add("no caption file (.txt / .json)", where)
                continue
            image_id = f"{stem}/{key}"
            builder.add(image_id, image_id, sample.image, sample.captions)
    first = shards[0] if len(shards) == 1 else f"{len(shards)} shards"
    skips.log(logger, first)
    if not len(builder):
        raise ConfigError(f"{first}: no usable samples (an image plus a .txt or .json caption per key); "
                          f"dropped: {skips.summary() or 'the tar holds no files'}")
    dataset = builder.build(name or "webdataset")
    attach_skips(dataset, skips)
    logger.info("%s: %d images, %d captions", first, dataset.n_groups, len(dataset.column("text")))
    return dataset
