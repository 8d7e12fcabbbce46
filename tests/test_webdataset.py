"""load_webdataset: tar shards of key.png + key.txt/json -> an AlignedDataset of extracted image paths."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from conftest import caption_of
from modalign.data.registry import load_dataset
from modalign.data.skips import skipped_of
from modalign.data.webdataset import load_webdataset


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def shard(tmp_path: Path, tux_images: list[Path]) -> tuple[Path, list[Path]]:
    """shard-000000.tar: 4 stamps with .txt, 2 with .json (one with two captions), plus 2 broken samples."""
    pngs = tux_images[:6]
    path = tmp_path / "wds" / "shard-000000.tar"
    path.parent.mkdir()
    with tarfile.open(path, "w") as tar:
        for i, png in enumerate(pngs):
            key = f"{i:06d}"
            _add(tar, f"{key}.png", png.read_bytes())
            if i < 4:
                _add(tar, f"{key}.txt", caption_of(png).encode())
            elif i == 4:
                _add(tar, f"{key}.json", json.dumps({"caption": caption_of(png), "w": 1}).encode())
            else:
                _add(tar, f"{key}.json", json.dumps({"text": [caption_of(png), "another caption"]}).encode())
        _add(tar, "000099.txt", b"a caption with no image")
        _add(tar, "000098.png", pngs[0].read_bytes())
        _add(tar, "000098.json", b'{"url": "x"}')
        _add(tar, "../evil.txt", b"must not be written outside the cache")
    return path, pngs


def test_load_webdataset_groups_by_key(shard: tuple[Path, list[Path]], tmp_path: Path) -> None:
    path, pngs = shard
    cache = tmp_path / "cache"
    ds = load_webdataset(path, cache_dir=cache)
    image, text = ds.column("image"), ds.column("text")
    assert ds.n_groups == 6
    assert image.ids == [f"shard-000000/{i:06d}" for i in range(6)]
    for item, png in zip(image.items, pngs, strict=True):
        assert isinstance(item, Path) and item.is_relative_to(cache)
        assert item.read_bytes() == png.read_bytes()
    assert text.items[:6] == [caption_of(p) for p in pngs] and text.items[6] == "another caption"
    assert text.groups.tolist() == [0, 1, 2, 3, 4, 5, 5]
    assert skipped_of(ds) == {"no image file": 1, ".json has no caption or text field": 1}
    assert not (tmp_path / "evil.txt").exists() and not (cache / "evil.txt").exists()

    # extracted once: a second load reuses the folder (no temp folders left behind)
    folders = sorted(p.name for p in cache.iterdir())
    assert len(folders) == 1 and not folders[0].startswith(".")
    marker = image.items[0].parent / "marker"
    marker.write_text("kept")
    again = load_webdataset(str(path.parent / "*.tar"), cache_dir=cache)
    assert again.column("image").items == image.items and marker.exists()
    assert again.column("image").content_hash() == image.content_hash()


def test_load_dataset_dispatches_tar(shard: tuple[Path, list[Path]], tmp_path: Path, monkeypatch) -> None:
    path, pngs = shard
    monkeypatch.setenv("MODALIGN_CACHE", str(tmp_path / "home"))
    ds = load_dataset(str(path.parent / "shard-*.tar"))
    assert ds.n_groups == 6
    assert all(Path(p).is_relative_to(tmp_path / "home" / "webdataset") for p in ds.column("image").items)

    from modalign.encoders import create_encoder

    # the image loader decodes the extracted files exactly as the originals
    enc = create_encoder("effnet-lite0")
    batch = enc.collate([enc.load(p) for p in ds.column("image").items])
    ref = enc.collate([enc.load(p) for p in pngs])
    a, b = enc.forward(batch, ["final"])["final"], enc.forward(ref, ["final"])["final"]  # (6, D)
    np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
