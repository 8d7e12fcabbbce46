"""Data loaders on real inputs: pairs files, image folders, saved HF data sets, Tux Paint, Fashion-MNIST."""

from __future__ import annotations

import csv
import gzip
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import caption_of
from modalign.data import (
    AlignedDataset,
    LabelledDataset,
    list_datasets,
    load_dataset,
    load_fashion_mnist,
    load_hf_dataset,
    load_image_folder,
    load_pairs,
    load_tuxpaint,
    load_tuxpaint_categories,
    register_dataset,
    skipped_of,
)
from modalign.errors import ConfigError, MissingDataError


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _captions_by_image(ds: AlignedDataset) -> dict[str, list[str]]:
    image, text = ds.column("image"), ds.column("text")
    return {image.ids[g]: [text.items[i] for i in np.flatnonzero(text.groups == g)] for g in range(ds.n_groups)}


# ---- pairs files -----------------------------------------------------------------------------------

def test_csv_pairs_from_fixture(pairs_dir, tux_images):
    ds = load_pairs(pairs_dir / "pairs.csv")
    assert ds.name == "pairs" and ds.root == pairs_dir.resolve()
    assert ds.modalities == ["image", "text"] and ds.n_groups == 12
    image, text = ds.column("image"), ds.column("text")
    assert image.ids == [f"images/{p.name}" for p in tux_images] == ds.group_names
    assert all(isinstance(p, Path) and p.is_absolute() and p.is_file() for p in image.items)
    assert text.ids == [f"images/{p.name}#0" for p in tux_images]
    assert text.items == [caption_of(p).replace('"', "'") for p in tux_images]
    assert text.groups.tolist() == list(range(12))
    assert ds.group_labels is None and skipped_of(ds) == {}


@pytest.fixture()
def messy_csv(pairs_dir) -> Path:
    """The fixture's pairs plus: a second caption for two images, an empty caption, a row without an
    image path, and a row naming an image file that does not exist."""
    rows = _csv_rows(pairs_dir / "pairs.csv")
    first, second = rows[0]["image"], rows[1]["image"]
    rows += [
        {"image": first, "caption": "another caption of the first stamp"},
        {"image": second, "caption": "   "},
        {"image": "", "caption": "a caption without an image"},
        {"image": second, "caption": "a second caption of the second stamp"},
        {"image": "images/does_not_exist.png", "caption": "a missing picture"},
    ]
    path = pairs_dir / "messy.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image", "caption"])
        w.writeheader()
        w.writerows(rows)
    return path


def test_csv_groups_captions_and_counts_drops(messy_csv, caplog):
    with caplog.at_level(logging.WARNING, logger="modalign.data"):
        ds = load_pairs(messy_csv)
    rows = _csv_rows(messy_csv)
    caps = _captions_by_image(ds)
    assert ds.n_groups == 13  # 12 stamps + the missing file
    assert caps[rows[0]["image"]] == [rows[0]["caption"], "another caption of the first stamp"]
    assert caps[rows[1]["image"]] == [rows[1]["caption"], "a second caption of the second stamp"]
    text = ds.column("text")
    assert f"{rows[1]['image']}#1" in text.ids and len(text) == 15
    assert skipped_of(ds) == {"empty caption": 1, "missing image path": 1}
    # the missing file stays an item (the store skips it later), and the load says so
    missing = ds.column("image").items[ds.group_names.index("images/does_not_exist.png")]
    assert isinstance(missing, Path) and not missing.exists()
    log = caplog.text
    assert "dropped 2 rows" in log and "empty caption: 1" in log and "missing image path: 1" in log
    assert "1 of 13 image files do not exist" in log


def _jsonl_and_parquet(messy_csv: Path) -> tuple[Path, Path]:
    """The messy CSV grouped per image, with list captions, as JSON Lines and Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    grouped: dict[str, list[str]] = {}
    for r in _csv_rows(messy_csv):
        grouped.setdefault(r["image"], []).append(r["caption"])
    records = [{"image": k or None, "caption": v} for k, v in grouped.items()]
    jsonl = messy_csv.with_suffix(".jsonl")
    jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    parquet = messy_csv.with_suffix(".parquet")
    pq.write_table(pa.Table.from_pylist(records), parquet)
    return jsonl, parquet


def test_jsonl_and_parquet_match_csv(messy_csv):
    from_csv = load_pairs(messy_csv)
    jsonl, parquet = _jsonl_and_parquet(messy_csv)
    for path in (jsonl, parquet):
        ds = load_pairs(path)
        assert _captions_by_image(ds) == _captions_by_image(from_csv), path.suffix
        assert ds.column("image").items == from_csv.column("image").items
        assert skipped_of(ds) == {"empty caption": 1, "missing image path": 1}, path.suffix


def test_jsonl_bad_lines_are_counted(pairs_dir):
    path = pairs_dir / "bad.ndjson"
    png = _csv_rows(pairs_dir / "pairs.csv")[0]["image"]
    path.write_text(json.dumps({"image": png, "caption": ["a", "", "b"]}) + "\n{not json\n[1, 2]\n"
                    + json.dumps({"image": png, "caption": 7}) + "\n")
    ds = load_pairs(path)
    assert ds.n_groups == 1 and ds.column("text").items == ["a", "b"]
    assert skipped_of(ds) == {"empty caption": 1, "invalid JSON line": 1, "JSON line is not an object": 1,
                              "caption is not text": 1}


def test_label_column_and_absolute_paths(pairs_dir, tux_images):
    path = pairs_dir / "labelled.csv"
    labels = ["bird", "bird", "mammal", "mammal", "fruit", "fruit", "car", "car", "flower", "flower", "planet", ""]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "img", "text"])
        for png, label in zip(tux_images, labels, strict=True):
            w.writerow([label, str(png), caption_of(png)])  # absolute paths to the packaged stamps
    ds = load_pairs(path, image_col="img", caption_col="text", name="mine")
    assert ds.name == "mine"
    assert ds.column("image").items == list(tux_images)
    assert ds.classnames == ["bird", "car", "flower", "fruit", "mammal", "planet"]
    assert [ds.classnames[i] if i >= 0 else "" for i in ds.group_labels] == labels


def test_missing_columns_error_names_present_columns(pairs_dir):
    path = pairs_dir / "nocap.csv"
    path.write_text("image,description,label\nimages/a.png,a cat,cat\n")
    with pytest.raises(ConfigError) as e:
        load_pairs(path)
    msg = str(e.value)
    assert "'caption'" in msg and "'image', 'description', 'label'" in msg and "--caption-col" in msg
    assert load_pairs(path, caption_col="description").column("text").items == ["a cat"]


def test_pairs_errors(pairs_dir):
    with pytest.raises(MissingDataError, match="not found"):
        load_pairs(pairs_dir / "nope.csv")
    (pairs_dir / "pairs.txt").write_text("image,caption\n")
    with pytest.raises(ConfigError, match=r"\.jsonl"):
        load_pairs(pairs_dir / "pairs.txt")
    (pairs_dir / "empty.csv").write_text("image,caption\na.png,\n")
    with pytest.raises(ConfigError, match="no usable rows.*empty caption: 1"):
        load_pairs(pairs_dir / "empty.csv")


# ---- image folders ---------------------------------------------------------------------------------

def test_image_folder(tmp_path, tux_images, caplog):
    root = tmp_path / "photos"
    for png in tux_images[:6]:  # 2 birds, 2 mammals, 2 fruit
        cls = {"birds": "wild_birds", "mammals": "mammals", "fruit": "fruit"}[png.parent.name]
        (root / cls / "nested").mkdir(parents=True, exist_ok=True)
        shutil.copy(png, root / cls / ("nested" if cls == "fruit" else "") / png.name.upper())
    (root / "empty_class").mkdir()
    (root / "wild_birds" / "notes.txt").write_text("not an image")
    shutil.copy(tux_images[6], root / "stray.png")
    with caplog.at_level(logging.WARNING, logger="modalign.data"):
        ds = load_image_folder(root)
    assert isinstance(ds, LabelledDataset) and ds.name == "photos" and len(ds) == 6
    assert ds.classnames == ["fruit", "mammals", "wild birds"]
    assert ds.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert ds.column.ids[0].startswith("fruit/nested/") and all(p.is_file() for p in ds.column.items)
    assert skipped_of(ds) == {"image not inside a class folder": 1}
    assert "empty_class" in caplog.text
    with pytest.raises(ConfigError, match="no images found"):
        load_image_folder(root, extensions=("tiff",))


# ---- saved Hugging Face data sets ------------------------------------------------------------------

def test_hf_saved_dataset_round_trip(tmp_path, tux_images):
    from datasets import ClassLabel, Dataset, Features, Value
    from datasets import Image as HFImage

    pngs = tux_images[:6]
    captions = [caption_of(p) for p in pngs]
    # one extra row repeats the first image with a second caption: it joins the first group
    ds = Dataset.from_dict(
        {"image": [str(p) for p in pngs] + [str(pngs[0])], "caption": captions + ["again the first"],
         "label": [0, 0, 1, 1, 2, 2, 0]},
        features=Features({"image": HFImage(), "caption": Value("string"),
                           "label": ClassLabel(names=["bird", "mammal", "fruit"])}),
    )
    ds.save_to_disk(str(tmp_path / "saved"))

    aligned = load_hf_dataset(tmp_path / "saved", label_col="label")
    assert isinstance(aligned, AlignedDataset) and aligned.n_groups == 6
    assert aligned.column("text").items == captions + ["again the first"]
    assert aligned.column("text").groups.tolist() == [0, 1, 2, 3, 4, 5, 0]
    assert aligned.classnames == ["bird", "mammal", "fruit"] and aligned.group_labels.tolist() == [0, 0, 1, 1, 2, 2]
    for arr, png in zip(aligned.column("image").items, pngs, strict=True):
        expected = np.asarray(Image.open(png).convert("RGBA"))  # the stamps are transparent: alpha is kept
        assert arr.dtype == np.uint8 and arr.shape == expected.shape and np.array_equal(arr, expected)

    labelled = load_hf_dataset(tmp_path / "saved", caption_col="no_such_column", label_col="label")
    assert isinstance(labelled, LabelledDataset) and len(labelled) == 7
    assert labelled.labels.tolist() == [0, 0, 1, 1, 2, 2, 0] and labelled.column.ids[0] == "train/0"

    via_registry = load_dataset(str(tmp_path / "saved"))
    assert isinstance(via_registry, AlignedDataset) and via_registry.group_labels is None
    assert via_registry.column("image").content_hash() == aligned.column("image").content_hash()

    with pytest.raises(ConfigError, match="'image', 'caption', 'label'"):
        load_hf_dataset(tmp_path / "saved", image_col="picture")


# ---- Tux Paint -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tux(tux_root) -> AlignedDataset:
    return load_tuxpaint(tux_root)


def test_tuxpaint_stamps(tux, tux_root):
    # 538 PNG + 163 SVG-only stamps with a caption file outside symbols/ in tuxpaint-stamps-default
    assert tux.n_groups > 650
    image, text = tux.column("image"), tux.column("text")
    assert len(image) == len(text) == tux.n_groups and tux.modalities == ["image", "text"]
    assert all(t.strip() == t and t for t in text.items)
    assert all(p.suffix in (".png", ".svg") and p.with_suffix(".txt").is_file() for p in image.items)
    assert sum(p.suffix == ".svg" for p in image.items) > 100  # SVG-only stamps are rendered, not dropped
    assert not any(i.startswith("symbols/") for i in image.ids)
    k = image.ids.index("animals/birds/crow.png")
    assert text.items[k] == caption_of(tux_root / "animals/birds/crow.png")
    assert tux.classnames[tux.group_labels[k]] == "animals"
    assert "natural forces" in tux.classnames and len(tux.classnames) >= 14
    assert "svg only" not in skipped_of(tux)  # resvg-py is installed (dev extra): SVG stamps are kept
    without_svg = load_tuxpaint(tux_root, include_svg=False)
    assert skipped_of(without_svg)["svg only"] > 100 and without_svg.n_groups < tux.n_groups - 100


def test_tuxpaint_symbols_sounds_and_categories(tux, tux_root):
    full = load_tuxpaint(tux_root, include_symbols=True, with_sounds=True)
    assert full.n_groups > tux.n_groups + 200 and "symbols" in full.classnames
    audio = full.column("audio")
    assert 50 < len(audio) < full.n_groups
    for item, g in zip(audio.items, audio.groups, strict=True):
        assert item.suffix == ".ogg" and item.is_file()
        assert item.with_suffix("") == full.column("image").items[g].with_suffix("")
    cats = load_tuxpaint_categories(tux_root)
    assert isinstance(cats, LabelledDataset) and cats.classnames == tux.classnames
    assert cats.labels.tolist() == tux.group_labels.tolist()
    assert np.bincount(cats.labels).min() >= 1


def test_tuxpaint_missing_folder(tmp_path):
    with pytest.raises(MissingDataError, match="apt-get install tuxpaint-stamps-default"):
        load_tuxpaint(tmp_path / "nothing_here")


def test_split_is_group_disjoint_and_deterministic(tux):
    a = tux.split({"train": 0.8, "test": 0.2}, seed=3)
    b = tux.split({"train": 0.8, "test": 0.2}, seed=3)
    c = tux.split({"train": 0.8, "test": 0.2}, seed=4)
    assert np.array_equal(a["train"], b["train"]) and not np.array_equal(a["train"], c["train"])
    assert len(np.intersect1d(a["train"], a["test"])) == 0
    assert len(a["train"]) + len(a["test"]) == tux.n_groups
    rows = tux.rows_of_groups("text", a["test"])
    assert set(tux.column("text").groups[rows]) == set(a["test"])


def test_content_hash_follows_image_bytes(pairs_dir):
    before = load_pairs(pairs_dir / "pairs.csv")
    h_image, h_text = before.column("image").content_hash(), before.column("text").content_hash()
    assert load_pairs(pairs_dir / "pairs.csv").column("image").content_hash() == h_image
    target = before.column("image").items[3]
    data = bytearray(target.read_bytes())
    data[-20] ^= 0xFF  # one byte, same size
    target.write_bytes(bytes(data))
    st = target.stat()  # an edit moves mtime; make sure it does even on a coarse-clock file system
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    after = load_pairs(pairs_dir / "pairs.csv")
    assert after.column("image").content_hash() != h_image
    assert after.column("text").content_hash() == h_text


# ---- Fashion-MNIST ---------------------------------------------------------------------------------

def test_fashion_mnist_test_split(fashion_root):
    ds = load_fashion_mnist(fashion_root)
    assert len(ds) == 10_000 and ds.classnames[0] == "t-shirt" and ds.classnames[9] == "ankle boot"
    first = ds.column.items[0]
    assert first.shape == (28, 28) and first.dtype == np.uint8 and first.max() > 100
    assert ds.labels.min() == 0 and ds.labels.max() == 9
    assert np.bincount(ds.labels).tolist() == [1000] * 10
    assert ds.column.ids[:2] == ["fmnist-test-0", "fmnist-test-1"]
    small = load_fashion_mnist(fashion_root, per_class=3, seed=1)
    assert len(small) == 30 and np.bincount(small.labels).tolist() == [3] * 10
    assert small.column.ids == load_fashion_mnist(fashion_root, per_class=3, seed=1).column.ids
    assert len(load_fashion_mnist(fashion_root, limit=7)) == 7


def test_fashion_mnist_errors(tmp_path, fashion_root):
    with pytest.raises(MissingDataError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path)
    with pytest.raises(ConfigError, match="split"):
        load_fashion_mnist(fashion_root, split="validation")
    # labels file where the images file should be: the magic number gives it away
    shutil.copy(fashion_root / "t10k-labels-idx1-ubyte.gz", tmp_path / "t10k-labels-idx1-ubyte.gz")
    shutil.copy(fashion_root / "t10k-labels-idx1-ubyte.gz", tmp_path / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(ConfigError, match="magic number 2049, expected 2051"):
        load_fashion_mnist(tmp_path)
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:  # right magic, truncated pixels
        f.write((2051).to_bytes(4, "big") + (10000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\0" * 99)
    with pytest.raises(ConfigError, match="damaged"):
        load_fashion_mnist(tmp_path)


# ---- registry --------------------------------------------------------------------------------------

def test_registry_names_and_paths(pairs_dir, tux_images, tmp_path, caplog, monkeypatch):
    import modalign.data.registry as registry

    names = [e.name for e in list_datasets()]
    assert {"tuxpaint", "tuxpaint-categories", "fashion-mnist", "fashion-mnist:train"} <= set(names)
    assert [e.name for e in list_datasets("fashion*")] == ["fashion-mnist", "fashion-mnist:test", "fashion-mnist:train"]

    fm = load_dataset("fashion-mnist:train?per_class=2&seed=5")
    assert isinstance(fm, LabelledDataset) and len(fm) == 20 and fm.column.ids[0].startswith("fmnist-train-")
    assert len(load_dataset("fashion-mnist", limit=4)) == 4
    cats = load_dataset("tuxpaint-categories")
    assert isinstance(cats, LabelledDataset) and "natural forces" in cats.classnames

    pairs = load_dataset(str(pairs_dir / "pairs.csv"))
    assert isinstance(pairs, AlignedDataset) and pairs.n_groups == 12
    (tmp_path / "imgs" / "a_b").mkdir(parents=True)
    shutil.copy(tux_images[0], tmp_path / "imgs" / "a_b" / "x.png")
    folder = load_dataset(str(tmp_path / "imgs"))
    assert isinstance(folder, LabelledDataset) and folder.classnames == ["a b"]

    with pytest.raises(ConfigError, match="tuxpaint-categories"):
        load_dataset("no-such-data")
    with pytest.raises(ConfigError, match="bad options.*colour"):
        load_dataset("fashion-mnist?colour=red")
    assert load_dataset(str(pairs_dir)).n_groups == 12  # the folder's only pairs file
    shutil.copy(pairs_dir / "pairs.csv", pairs_dir / "copy.csv")
    with pytest.raises(ConfigError, match=r"several pairs files \(copy.csv, pairs.csv\); pass one"):
        load_dataset(str(pairs_dir))

    try:
        register_dataset("tiny-test-pairs", lambda: load_pairs(pairs_dir / "pairs.csv"), "pairs", "12 stamps")
        with caplog.at_level(logging.WARNING, logger="modalign"):
            register_dataset("tiny-test-pairs", lambda: load_pairs(pairs_dir / "pairs.csv", name="again"), "pairs")
        assert "registered twice" in caplog.text
        assert load_dataset("tiny-test-pairs").name == "again"
    finally:
        registry.DATASETS.remove("tiny-test-pairs")  # the test's entry must not leak into others
    with pytest.raises(ConfigError, match="kind"):
        register_dataset("x", load_pairs, kind="images")  # type: ignore[arg-type]


def test_svg_stamp_renders_and_broken_svg_is_an_invalid_item(tmp_path, tux_root):
    from modalign.data.images import load_image
    from modalign.errors import InvalidItem

    svg = next(p for p in sorted(tux_root.rglob("*.svg")) if not p.with_suffix(".png").exists())
    img = load_image(svg)
    assert img.mode == "RGB" and img.size[0] == 448
    broken = tmp_path / "broken.svg"
    broken.write_text("<svg xmlns='http://www.w3.org/2000/svg'><rect width='10'")
    with pytest.raises(InvalidItem, match="undecodable SVG"):
        load_image(broken)
