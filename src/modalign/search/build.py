"""From a collection and a saved model to index entries: encode through the EmbeddingStore, project, add.

    collection = load_collection("my_photos/")        # plain image folder, class folders, pairs file, 'tuxpaint'
    index = build_index("runs/tux", collection, "indexes/tux", store=EmbeddingStore(".modalign/store"))
    add_collection(index, model, collection, store)   # incremental: already indexed keys are skipped

Frozen-encoder features go through the store (keyed by content), so an image is encoded once, whatever
index or model reads it; only the cheap projector runs per build.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from modalign.data.column import Column
from modalign.errors import ConfigError
from modalign.search import storage
from modalign.search.backends import IndexParams
from modalign.search.index import INFO_NAME, SearchIndex
from modalign.search.metadata import Item

if TYPE_CHECKING:
    from modalign.model import AlignedModel
    from modalign.store import EmbeddingStore

logger = logging.getLogger(__name__)


@dataclass
class Collection:
    """What to index: one column per modality (image and/or text), captions per group when known."""

    name: str
    columns: dict[str, Column]  # modality -> column
    captions: dict[int, str]  # group -> its first caption (shown beside image hits)
    root: Path | None = None  # image ids are relative to it


def load_collection(spec: str) -> Collection:
    """A plain folder of images (any depth), or anything `modalign.data.load_dataset` reads."""
    from modalign.data.column import AlignedDataset, LabelledDataset
    from modalign.data.folders import class_folders, find_images
    from modalign.data.pairs import pairs_format

    path = Path(spec).expanduser()
    if path.is_dir() and not class_folders(path) and not any(pairs_format(p) for p in path.iterdir() if p.is_file()):
        images = find_images(path)
        if not images:
            raise ConfigError(f"no images under {path}")
        col = Column("image", [p.relative_to(path).as_posix() for p in images], images, np.arange(len(images)))
        return Collection(path.name, {"image": col}, {}, path.resolve())
    from modalign.data.registry import load_dataset

    data = load_dataset(spec)
    if isinstance(data, LabelledDataset):
        return Collection(data.name, {"image": data.column}, {}, data.root)
    if not isinstance(data, AlignedDataset):
        raise ConfigError(f"cannot index data set {spec!r} of type {type(data).__name__}")
    captions: dict[int, str] = {}
    if "text" in data.columns:
        text = data.column("text")
        for g, cap in zip(text.groups.tolist(), text.items, strict=True):
            captions.setdefault(int(g), str(cap))
    return Collection(data.name, dict(data.columns), captions, data.root)


def encode_collection(model: AlignedModel, collection: Collection, modality: str, store: EmbeddingStore,
                      rows: np.ndarray | None = None, batch_size: int = 32,
                      progress: bool = True) -> tuple[np.ndarray, list[Item]]:
    """(n, embed_dim) projected vectors and their items, skipped (unreadable) items left out."""
    from modalign.features.pipeline import encode_column, valid_rows

    if modality not in collection.columns:
        raise ConfigError(f"collection {collection.name!r} has no {modality} items; it has "
                          f"{', '.join(collection.columns)}")
    if modality not in model.towers:
        raise ConfigError(f"the model has no {modality} tower (it has {', '.join(model.towers)}); add one with "
                          f"`modalign extend`")
    column = collection.columns[modality]
    tower = model.towers[modality]
    stored = encode_column(store, column, model.encoder(modality), tower.layer, batch_size=batch_size,
                           progress=progress)
    rows = np.arange(len(column)) if rows is None else np.asarray(rows, dtype=np.int64)
    rows = valid_rows(stored, rows)
    feats = np.ascontiguousarray(stored.vectors(rows), dtype=np.float32)  # (n, input_dim)
    vectors = project_in_batches(model, modality, feats)  # (n, embed_dim)
    finite = np.isfinite(vectors).all(axis=1)  # (n,) NaN/inf never enters the index: it would match anything
    if not finite.all():
        if not finite.any():
            raise ConfigError(f"the model's {modality} tower gives NaN/inf for every item: its weights are "
                              "damaged; retrain it or use another model")
        logger.warning("%s: skipped %d of %d %s items whose projected vector is NaN/inf (e.g. %s)", collection.name,
                       int((~finite).sum()), len(rows), modality, column.ids[int(rows[~finite][0])])
        vectors, rows = vectors[finite], rows[finite]
    items = [_item(collection, column, int(r), tower.encoder) for r in rows]
    return vectors, items


def project_in_batches(model: AlignedModel, modality: str, feats: np.ndarray, batch: int = 4096) -> np.ndarray:
    import torch

    with torch.no_grad():
        parts = [model.project(modality, feats[s:s + batch]).cpu().numpy() for s in range(0, len(feats), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, model.embed_dim), dtype=np.float32)


def _item(collection: Collection, column: Column, row: int, tower: str) -> Item:
    raw = column.items[row]
    group = int(column.groups[row])
    if column.modality == "text":
        return Item(column.ids[row], "text", None, str(raw), tower)
    path = str(Path(raw).resolve()) if isinstance(raw, str | Path) else None
    return Item(column.ids[row], column.modality, path, collection.captions.get(group), tower)


def build_index(model_dir: str | Path, collection: Collection, out: str | Path, store: EmbeddingStore,
                modality: str = "image", kind: str = "auto", params: IndexParams | None = None,
                overwrite: bool = False, batch_size: int = 32, progress: bool = True,
                model: AlignedModel | None = None) -> SearchIndex:
    """Encodes the collection with the model's `modality` tower and writes a new index folder."""
    from modalign.model import AlignedModel

    check_out(Path(out).expanduser(), overwrite)  # before the (long) encoding
    model = model or AlignedModel.from_pretrained(model_dir)
    vectors, items = encode_collection(model, collection, modality, store, batch_size=batch_size,
                                       progress=progress)
    index = write_index(out, model_dir, vectors, items, modality, kind, params, overwrite)
    logger.info("indexed %d %s items of %s", len(index), modality, collection.name)
    return index


def write_index(out: str | Path, model_dir: str | Path, vectors: np.ndarray, items: Sequence[Item],
                modality: str, kind: str = "auto", params: IndexParams | None = None,
                overwrite: bool = False) -> SearchIndex:
    """Writes (n, dim) vectors and their items as a new index folder, all or nothing: the index is built
    in a hidden sibling folder and renamed into place when complete, so a kill -9 leaves no half index."""
    out = Path(out).expanduser()
    check_out(out, overwrite)
    _remove_dead_builds(out)
    tmp = out.parent / f".{out.name}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    index = SearchIndex.create(tmp, model_dir, int(np.shape(vectors)[1]), modality, kind, expected_size=len(items),
                               params=params, train_vectors=vectors)
    index.add(vectors, items)
    index.close()
    storage.fault_point("index-built")
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        storage.fault_point("old-index-moved")
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    storage.fsync_dir(out.parent)
    return SearchIndex.open(out)


INDEX_FILES = ("index.json", "items.sqlite", ".lock")  # + vectors*.faiss, items.sqlite-journal, *.tmp


def check_out(out: Path, overwrite: bool) -> None:
    """Refuses to replace an index without --overwrite, and any folder that holds other files."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the index")
    if (out / INFO_NAME).exists() and not overwrite:
        raise ConfigError(f"{out} already holds an index; use `modalign index add` to extend it, or "
                          f"--overwrite to rebuild it")
    other = [p.name for p in out.iterdir() if not (p.name in INDEX_FILES or p.name.startswith("vectors")
                                                    or p.name.startswith("items.sqlite") or p.suffix == ".tmp")]
    if other:
        raise ConfigError(f"{out} holds files that are not an index ({', '.join(sorted(other)[:3])}); "
                          f"choose an empty or new folder for --out")


def _remove_dead_builds(out: Path) -> None:
    """Deletes the hidden folders of builds that were killed (their process is gone)."""
    for path in out.parent.glob(f".{out.name}.*-*"):
        kind, _, pid = path.name.rpartition("-")
        if not path.is_dir() or not pid.isdigit() or not kind.endswith((".building", ".old")):
            continue
        if not _alive(int(pid)) or int(pid) == os.getpid():
            logger.info("removing %s, left by an interrupted index build", path)
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def add_collection(index: SearchIndex, model: AlignedModel, collection: Collection, store: EmbeddingStore,
                   batch_size: int = 32, progress: bool = True) -> int:
    """Adds the collection's items that are not indexed yet; returns how many were added."""
    vectors, items = encode_collection(model, collection, index.info.modality, store, batch_size=batch_size,
                                       progress=progress)
    return index.add(vectors, items)


def keys_of(collection: Collection, modality: str) -> Sequence[str]:
    return collection.columns[modality].ids if modality in collection.columns else []
