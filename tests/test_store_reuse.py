"""Per-item reuse in the store: a second data set over already-encoded items encodes none of them again."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from modalign.data.pairs import load_pairs
from modalign.encoders import create_encoder
from modalign.store import EmbeddingStore


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def encoder():
    return create_encoder("effnet-lite0")


def _forwarded(monkeypatch, encoder) -> list[int]:
    """Counts the items that go through encoder.forward (batch sizes)."""
    sizes: list[int] = []
    original = encoder.forward

    def forward(batch, layers):
        out = original(batch, layers)
        sizes.append(int(next(iter(out.values())).shape[0]))
        return out

    monkeypatch.setattr(encoder, "forward", forward)
    return sizes


def _second_csv(tmp_path: Path, images: list[Path], name: str) -> Path:
    """Another data set over copies of the same images: other folder, other names, other captions, other order."""
    folder = tmp_path / name
    (folder / "pics").mkdir(parents=True)
    rows = ["image,caption"]
    for i, png in enumerate(reversed(images)):
        shutil.copy(png, folder / "pics" / f"img{i:02d}.png")
        rows.append(f"pics/img{i:02d}.png,picture number {i}")
    (folder / "data.csv").write_text("\n".join(rows) + "\n")
    return folder / "data.csv"


def test_a_second_csv_over_the_same_images_encodes_none(tmp_path, pairs_dir, tux_images, encoder, monkeypatch):
    store = EmbeddingStore(tmp_path / "store")
    first = load_pairs(pairs_dir / "pairs.csv").column("image")
    emb1 = store.encode(first, encoder, shard_size=5, batch_size=4, progress=False)["final"]
    assert emb1.report.items_copied == 0 and emb1.valid.all()

    second = load_pairs(_second_csv(tmp_path, tux_images, "other")).column("image")
    assert second.content_hash() != first.content_hash()  # a different data set: an entry of its own
    sizes = _forwarded(monkeypatch, encoder)
    emb2 = store.encode(second, encoder, shard_size=5, batch_size=4, progress=False)["final"]
    assert sizes == []  # 0 items encoded
    assert emb2.report.items_copied == len(second) == 12 and emb2.path != emb1.path
    np.testing.assert_array_equal(emb2.vectors(), emb1.vectors()[::-1])  # the same vectors, in the new order

    # a third set: half the images plus two new ones -> only the two new ones are encoded
    third_dir = tmp_path / "third"
    third_dir.mkdir()
    rows = ["image,caption"] + [f"{p},x{i}" for i, p in enumerate(tux_images[:6])]
    extra = [tmp_path / "flipped-a.png", tmp_path / "flipped-b.png"]
    from PIL import Image

    for src, dst in zip(tux_images[6:8], extra, strict=True):
        Image.open(src).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(dst)
    rows += [f"{p},new{i}" for i, p in enumerate(extra)]
    (third_dir / "data.csv").write_text("\n".join(rows) + "\n")
    third = load_pairs(third_dir / "data.csv").column("image")
    emb3 = store.encode(third, encoder, shard_size=5, batch_size=4, progress=False)["final"]
    assert sum(sizes) == 2 and emb3.report.items_copied == 6
    np.testing.assert_allclose(emb3.vectors()[6:], encoder.encode(extra), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(emb3.vectors()[:6], emb1.vectors()[:6])


def test_reuse_needs_the_same_layer_and_dtype_and_survives_removed_sources(tmp_path, tux_images, encoder, monkeypatch):
    store = EmbeddingStore(tmp_path / "store")
    from modalign.data.column import Column

    def column(ids: list[str]) -> Column:
        return Column("image", ids, tux_images[:4], np.arange(4))

    source = store.encode(column(["a", "b", "c", "d"]), encoder, progress=False)["final"]
    sizes = _forwarded(monkeypatch, encoder)
    half = store.encode(column(["e", "f", "g", "h"]), encoder, dtype="float16", progress=False)["final"]
    assert sum(sizes) == 4 and half.report.items_copied == 0  # float16 vectors are other vectors
    sizes.clear()

    store.remove(source.path.name)  # its marker goes with it
    again = store.encode(column(["i", "j", "k", "l"]), encoder, progress=False)["final"]
    assert sum(sizes) == 4 and again.report.items_copied == 0

    shutil.rmtree(again.path)  # deleted by hand: the stale marker is ignored
    sizes.clear()
    last = store.encode(column(["m", "n", "o", "p"]), encoder, progress=False)["final"]
    assert sum(sizes) == 4 and last.valid.all()
