"""The built-in data sets from Debian packages, each on a tiny real slice of the installed package."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modalign.data import load_dataset, skipped_of
from modalign.data.cdda import CDDA_ROOT, list_tilesets, load_cdda, load_cdda_categories, tileset_of
from modalign.data.images import SVG_RENDER_WIDTH, load_image
from modalign.data.skips import SkipCounter
from modalign.errors import ConfigError, MissingDataError
from modalign.utils.paths import cache_home


def _require(path: Path, package: str) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: install the Debian package {package} (`make setup` does it)")
    return path


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Rendered sprites and icons go to a fresh cache folder per test."""
    monkeypatch.setenv("MODALIGN_CACHE", str(tmp_path / "cache"))


# ---- Cataclysm: DDA ----------------------------------------------------------------------------------
CDDA_FILES = ["json/items/comestibles/dairy.json", "json/items/comestibles/raw_fruit.json",
              "json/monsters/mammal.json"]
CDDA_TILESETS = ["HoderTileset", "RetroDaysTileset"]  # two small tile sets (< 1 MB each)


@pytest.fixture()
def cdda_root(tmp_path) -> Path:
    """Three definition files and two tile sets copied from cataclysm-dda-data."""
    src = _require(CDDA_ROOT, "cataclysm-dda-data")
    root = tmp_path / "cdda"
    for rel in CDDA_FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / rel, root / rel)
    for name in CDDA_TILESETS:
        shutil.copytree(src / "gfx" / name, root / "gfx" / name)
    return root


def test_cdda_pairs_from_a_real_slice(cdda_root, tmp_path):
    ds = load_dataset(f"cdda?root={cdda_root}")
    image, text = ds.column("image"), ds.column("text")
    assert ds.name == "cdda" and ds.modalities == ["image", "text"]
    assert len(text) == ds.n_groups and sorted({tileset_of(i) for i in image.ids}) == CDDA_TILESETS
    # an item's caption is "name: description" from its definition
    k = ds.group_names.index("item/apple")
    assert text.items[k].startswith("apple: ") and len(text.items[k].split()) > 4
    apple_rows = np.flatnonzero(image.groups == k)
    assert sorted(tileset_of(image.ids[r]) for r in apple_rows) == CDDA_TILESETS
    assert ds.classnames[ds.group_labels[k]] == "food"
    assert "monster" in ds.classnames and any(n.startswith("monster/mon_") for n in ds.group_names)
    # sprites: cached square PNGs under the cache folder, upscaled from 10-20 px pixel art
    first = Path(image.items[0])
    assert first.is_relative_to(tmp_path / "cache" / "cdda")
    with Image.open(first) as img:
        assert img.size == (224, 224) and img.mode == "RGBA" and img.getchannel("A").getbbox() is not None
    # counted, not silent: things the two tile sets do not draw
    assert skipped_of(ds).get("no sprite in the chosen tile sets", 0) > 0
    # the second load reuses the cached sprites
    mtime = first.stat().st_mtime_ns
    again = load_cdda(cdda_root, size=224)
    assert again.column("image").items == image.items and first.stat().st_mtime_ns == mtime


def test_cdda_split_and_held_out_tileset_are_group_disjoint(cdda_root):
    ds = load_cdda(cdda_root)
    split = ds.split({"train": 0.7, "test": 0.3}, seed=0)
    image = ds.column("image")
    train_names = {ds.group_names[g] for g in image.groups[ds.rows_of_groups("image", split["train"])]}
    test_names = {ds.group_names[g] for g in image.groups[ds.rows_of_groups("image", split["test"])]}
    assert train_names and test_names and not train_names & test_names
    # a held-out style: each load holds only its tile sets, and groups keep their names across loads
    held = load_cdda(cdda_root, tilesets="HoderTileset")
    rest = load_cdda(cdda_root, exclude_tilesets="HoderTileset")
    assert {tileset_of(i) for i in held.column("image").ids} == {"HoderTileset"}
    assert {tileset_of(i) for i in rest.column("image").ids} == {"RetroDaysTileset"}
    common = set(held.group_names) & set(rest.group_names)
    assert common
    for name in sorted(common)[:20]:
        assert held.column("text").items[held.group_names.index(name)] == \
            rest.column("text").items[rest.group_names.index(name)]


def test_cdda_categories_for_zero_shot(cdda_root):
    cats = load_cdda_categories(cdda_root, min_per_class=5)
    assert cats.name == "cdda-categories" and "food" in cats.classnames and "monster" in cats.classnames
    assert "other" not in cats.classnames
    counts = np.bincount(cats.labels, minlength=len(cats.classnames))
    assert counts.min() >= 5 and len(cats) == counts.sum()


def test_cdda_bad_options_and_missing_package(tmp_path, cdda_root):
    with pytest.raises(ConfigError, match="unknown Cataclysm: DDA tile set 'Nope'.*RetroDaysTileset"):
        load_cdda(cdda_root, tilesets="Nope")
    with pytest.raises(ConfigError, match="empty"):
        load_cdda(cdda_root, tilesets="HoderTileset", exclude_tilesets="HoderTileset")
    with pytest.raises(MissingDataError, match="apt-get install cataclysm-dda-data"):
        load_cdda(tmp_path / "nothing_here")
    assert list_tilesets(cdda_root) == CDDA_TILESETS


def test_missing_package_cli_says_how_to_install(tmp_path):
    """A missing Debian package is one error line naming the package (exit 1), never a traceback."""
    cmd = [sys.executable, "-m", "modalign.cli.main", "encode", f"cdda?root={tmp_path / 'none'}",
           "--encoder", "minilm-l6", "--store", str(tmp_path / "store"), "-q"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    err = " ".join(proc.stderr.split())  # the log handler wraps long lines
    assert proc.returncode == 1
    assert "apt-get install cataclysm-dda-data" in err and "Traceback" not in err



@pytest.mark.parametrize(("spec", "hint"), [
    ("iconify?root={missing}", "npm pack @iconify/json"),
    ("openclipart?root={missing}", "apt-get install openclipart-svg"),
    ("kgeography?root={missing}", "apt-get install kgeography-data"),
    ("asterisk-sounds?root={missing}&doc_root={missing}", "apt-get install asterisk-core-sounds-en-wav"),
])
def test_every_loader_missing_package_is_one_cli_error(spec, hint, tmp_path, capfd):
    """`modalign train --pairs NAME` without the package: exit 1 and the install command, no traceback
    (the data set is loaded before any encoder, so this runs in well under a second)."""
    from modalign.cli.main import main

    missing = tmp_path / "not_installed"
    rc = main(["train", "--pairs", spec.format(missing=missing), "--out", str(tmp_path / "run"),
               "--store", str(tmp_path / "store"), "--no-baselines"])
    err = " ".join(capfd.readouterr().err.split())  # the log handler wraps long lines
    assert rc == 1
    assert hint in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()

# ---- Open Clip Art -----------------------------------------------------------------------------------
OPENCLIPART_ROOT = Path("/usr/share/openclipart")
OPENCLIPART_PICKS = ["food/fruit", "animals/birds", "transportation/roadsigns", "shapes/stars", "computer/icons/flat-theme"]


@pytest.fixture()
def openclipart_root(tmp_path) -> Path:
    """Four drawings from each of five folders of openclipart-svg (with their PNGs from openclipart-png
    where installed, except for the birds), plus a link and a byte copy."""
    src = _require(OPENCLIPART_ROOT / "svg", "openclipart-svg").parent
    root = tmp_path / "openclipart"
    for sub in OPENCLIPART_PICKS:
        for svg in sorted(p for p in (src / "svg" / sub).glob("*.svg") if not p.is_symlink())[:4]:
            rel = svg.relative_to(src / "svg")
            (root / "svg" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(svg, root / "svg" / rel)
            png = (src / "png" / rel).with_suffix(".png")
            if png.is_file() and sub != "animals/birds":  # birds: as without openclipart-png
                (root / "png" / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(png, (root / "png" / rel).with_suffix(".png"))
    fruit = sorted((root / "svg" / "food" / "fruit").glob("*.svg"))
    (root / "svg" / "food" / "fruit" / "zz_link.svg").symlink_to(fruit[0])
    shutil.copy(fruit[1], root / "svg" / "food" / "zz_copy.svg")
    return root


def test_openclipart_from_a_real_slice(openclipart_root):
    ds = load_dataset(f"openclipart?root={openclipart_root}")
    image, text = ds.column("image"), ds.column("text")
    assert ds.n_groups == len(image) == len(text) == 12  # fruit, birds, roadsigns: 4 each
    assert ds.classnames == ["animals", "food", "transportation"]
    assert all(not i.startswith(("shapes/", "computer/icons/")) for i in image.ids)
    # the PNG where openclipart-png has one, else the SVG (rendered by the image loader)
    for item_id, path in zip(image.ids, image.items, strict=True):
        has_png = (root_png := openclipart_root / "png" / item_id).with_suffix(".png").is_file()
        assert Path(path) == (root_png.with_suffix(".png") if has_png else openclipart_root / "svg" / item_id)
        assert not (item_id.startswith("animals/") and has_png)
    bird = next(p for i, p in zip(image.ids, image.items, strict=True) if i.startswith("animals/"))
    assert load_image(bird).size[0] == SVG_RENDER_WIDTH  # an SVG drawing is rendered when encoded
    # captions: cleaned titles plus keywords from the SVG metadata, never noise words
    assert all(c and "hash" not in c and "Clipart by" not in c for c in text.items)
    assert any("(" in c for c in text.items)
    assert skipped_of(ds) == {"left out: computer/icons": 4, "left out: shapes": 4,
                              "link to a drawing already taken": 1, "byte-identical copy": 1}
    split = ds.split({"train": 0.5, "test": 0.5}, seed=1)
    assert not set(split["train"]) & set(split["test"])
    cats = load_dataset(f"openclipart-categories?root={openclipart_root}&min_per_class=4")
    assert cats.classnames == ds.classnames and len(cats) == 12


def test_openclipart_title_cleaning():
    from modalign.data.openclipart import clean_title, name_from_stem

    assert clean_title("Clipart by Nicu Buculei - pear") == "pear"
    assert name_from_stem("soft_blue_couch_jonadab_01", "Jonadab") == "soft blue couch"
    assert name_from_stem("as_carreau_jean_victor_b_", "Jean Victor Balin") == "as carreau"


def test_openclipart_missing_package(tmp_path):
    with pytest.raises(MissingDataError, match="apt-get install openclipart-svg"):
        load_dataset(f"openclipart?root={tmp_path / 'none'}")


# ---- Iconify -----------------------------------------------------------------------------------------
NPM_DIR = cache_home() / "iconify"  # the user's cache, read before the tests point MODALIGN_CACHE elsewhere


def _iconify_tarball(name: str) -> Path:
    """A real npm tarball fetched by `make setup` (scripts/fetch_npm_data.sh) into the cache folder."""
    found = sorted(NPM_DIR.glob(f"iconify-json-{name}-*.tgz"))
    if not found:
        pytest.fail(f"no @iconify-json/{name} tarball in {NPM_DIR}: run `make setup` "
                    f"(it runs scripts/fetch_npm_data.sh)")
    return found[-1]


@pytest.fixture()
def covid_tgz(tmp_path) -> Path:
    src = _iconify_tarball("covid")  # 142 icons, CC-BY-4.0, with categories
    dst = tmp_path / "npm" / src.name
    dst.parent.mkdir()
    shutil.copy(src, dst)
    return dst


def test_iconify_from_a_real_npm_tarball(covid_tgz, tmp_path):
    ds = load_dataset(f"iconify:covid?root={covid_tgz.parent}&per_set=24&size=64")
    image, text = ds.column("image"), ds.column("text")
    assert len(image) == len(text) == 24 and all(i.startswith("covid:") for i in image.ids)
    assert all(t.endswith(")") and "(Covid Icons icon" in t for t in text.items)
    k = 0
    assert text.items[k].startswith(image.ids[k].split(":", 1)[1].replace("-", " "))
    with Image.open(image.items[0]) as img:
        assert img.size == (64, 64)
        grey = np.asarray(img.convert("L"))
        assert grey.min() < 50 and grey.max() > 200  # black strokes on white
    assert Path(image.items[0]).is_relative_to(tmp_path / "cache" / "iconify")
    assert (ds.group_labels >= 0).all() and ds.classnames and all(c == c.lower() for c in ds.classnames)
    # the same seed gives the same sample; the second load renders nothing new
    mtimes = [Path(p).stat().st_mtime_ns for p in image.items]
    again = load_dataset(f"iconify?sets=covid&root={covid_tgz.parent}&per_set=24&size=64")
    assert again.column("image").ids == image.ids
    assert [Path(p).stat().st_mtime_ns for p in again.column("image").items] == mtimes
    split = ds.split({"train": 0.5, "test": 0.5}, seed=0)
    assert not set(split["train"]) & set(split["test"])



def test_iconify_split_keeps_style_variants_together(covid_tgz, tmp_path):
    """The real covid drawings unpacked as an @iconify-json package folder, with three of them also
    published under style-variant names ("NAME-outline", "outline-NAME", "NAME-rounded": how mdi, ic and
    solar name theirs): every split keeps a drawing and its variants on one side."""
    import json
    import tarfile

    pkg = tmp_path / "pkg"
    with tarfile.open(covid_tgz) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.split("/", 1)[-1] in ("package.json", "icons.json", "info.json",
                                                                      "metadata.json"):
                (pkg / member.name.split("/", 1)[-1]).parent.mkdir(parents=True, exist_ok=True)
                (pkg / member.name.split("/", 1)[-1]).write_bytes(tar.extractfile(member).read())
    icons = json.loads((pkg / "icons.json").read_text())
    from modalign.data.iconify import group_base

    bases = sorted(n for n in icons["icons"] if group_base(n) == n)[:3]
    for base, style in zip(bases, ("{}-outline", "outline-{}", "{}-rounded"), strict=True):
        icons["icons"][style.format(base)] = dict(icons["icons"][base])
    (pkg / "icons.json").write_text(json.dumps(icons))
    ds = load_dataset(f"iconify:covid?root={pkg}&size=32")
    image = ds.column("image")
    assert len(image) > 100 and ds.n_groups == len(image) - 3  # three variants joined their drawings
    for seed in range(5):
        split = ds.split({"train": 0.7, "val": 0.1, "test": 0.2}, seed=seed)
        side = {}
        for name, groups in split.items():
            for r in ds.rows_of_groups("image", groups):
                side[image.ids[r]] = name
        assert len(side) == len(image)
        for base, style in zip(bases, ("{}-outline", "outline-{}", "{}-rounded"), strict=True):
            assert side[f"covid:{base}"] == side[f"covid:{style.format(base)}"]

def test_iconify_groups_style_variants_and_refuses_sets():
    from modalign.data.iconify import group_base, set_refusal

    assert group_base("outline-home") == group_base("home-outline-rounded") == group_base("home") == "home"
    assert group_base("outline") == "outline"
    assert set_refusal("x", {"license": {"spdx": "CC-BY-NC-4.0"}}) == "non-commercial licence CC-BY-NC-4.0"
    assert set_refusal("x", {"category": "Emoji"}) == "emoji set"
    assert set_refusal("simple-icons", {"category": "Logos"}) is not None
    assert set_refusal("mdi", {"license": {"spdx": "Apache-2.0"}, "category": "Material"}) is None


def test_iconify_categories_and_missing_package(covid_tgz, tmp_path):
    cats = load_dataset(f"iconify-categories?root={covid_tgz}&min_per_class=10&size=32")
    assert len(cats) >= 100 and np.bincount(cats.labels).min() >= 10
    with pytest.raises(ConfigError, match="icon set 'mdi' is not in the installed Iconify packages"):
        load_dataset(f"iconify:mdi?root={covid_tgz}")
    with pytest.raises(MissingDataError, match="npm pack @iconify/json"):
        load_dataset(f"iconify?root={tmp_path / 'empty'}")


# ---- KGeography --------------------------------------------------------------------------------------
KGEOGRAPHY_ROOT = Path("/usr/share/kgeography")


@pytest.fixture()
def kgeography_root(tmp_path) -> Path:
    """Two maps (Luxembourg's cantons, Belgium's provinces) with their images and the flags they name."""
    from modalign.data.kgeography import read_map

    src = _require(KGEOGRAPHY_ROOT, "kgeography-data")
    root = tmp_path / "kgeography"
    root.mkdir()
    for stem in ("luxembourg_cantons", "belgium"):
        for suffix in (".kgm", ".png"):
            shutil.copy(src / f"{stem}{suffix}", root / f"{stem}{suffix}")
        for region in read_map(src / f"{stem}.kgm", SkipCounter())[2]:
            if region.flag is not None and region.flag.is_file():
                dst = root / region.flag.relative_to(src)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(region.flag, dst)
    return root


def test_kgeography_maps_and_flags(kgeography_root):
    from modalign.data.kgeography import read_map

    ds = load_dataset(f"kgeography?root={kgeography_root}")
    image, text = ds.column("image"), ds.column("text")
    regions = read_map(kgeography_root / "luxembourg_cantons.kgm", SkipCounter())[2]
    assert len(regions) == 12 and "Redange" in {r.name for r in regions}
    k = image.ids.index("luxembourg_cantons.kgm#Redange")
    assert text.items[k] == "Redange highlighted on the map of Luxembourg (Cantons)"
    with Image.open(image.items[k]) as img:
        rgb = np.asarray(img.convert("RGB")).reshape(-1, 3)
    assert ((rgb == [220, 30, 30]).all(axis=1)).sum() > 100  # the region is painted red
    flags = [i for i in image.ids if i.startswith("flags/")]
    assert flags and all(text.items[image.ids.index(f)].startswith("the flag of ") for f in flags)
    # a region's map and its flag share the region's group, so a split keeps them on one side
    for item_id, g in zip(image.ids, image.groups, strict=True):
        region = text.items[image.ids.index(item_id)].removeprefix("the flag of ").split(" highlighted")[0]
        assert ds.group_names[g] == region.split(" (capital")[0]
    flag_groups = {image.groups[image.ids.index(f)] for f in flags}
    assert any(len(set(image.ids[r] for r in np.flatnonzero(image.groups == g))) > 1 for g in flag_groups)
    cats = load_dataset(f"kgeography-flags?root={kgeography_root}")
    assert len(cats) == len(flags) and len(cats.classnames) <= len(flags)


def test_kgeography_missing_package(tmp_path):
    with pytest.raises(MissingDataError, match="apt-get install kgeography-data"):
        load_dataset(f"kgeography?root={tmp_path}")


# ---- Asterisk sounds ---------------------------------------------------------------------------------
def test_asterisk_sounds_from_a_real_slice(tmp_path):
    from modalign.data.asterisk import DOC_ROOT, SOUNDS_ROOT

    src = _require(SOUNDS_ROOT / "en_US_f_Allison", "asterisk-core-sounds-en-wav")
    doc = _require(DOC_ROOT / "asterisk-core-sounds-en" / "core-sounds-en.txt.gz", "asterisk-core-sounds-en")
    sounds, docs = tmp_path / "sounds" / "en_US_f_Allison", tmp_path / "doc" / "asterisk-core-sounds-en"
    (sounds / "digits").mkdir(parents=True)
    docs.mkdir(parents=True)
    shutil.copy(doc, docs / doc.name)
    for rel in ("activated.wav", "beep.wav", "digits/7.wav", "digits/20.wav"):
        shutil.copy(src / rel, sounds / rel)
    (sounds / "not-in-the-list.wav").write_bytes((src / "beep.wav").read_bytes())
    ds = load_dataset(f"asterisk-sounds?root={tmp_path / 'sounds'}&doc_root={tmp_path / 'doc'}")
    audio, text = ds.column("audio"), ds.column("text")
    assert ds.modalities == ["audio", "text"] and audio.ids == ["en/activated", "en/beep", "en/digits/20", "en/digits/7"]
    assert text.items[audio.ids.index("en/digits/7")] == "seven"
    assert text.items[audio.ids.index("en/activated")] == "Activated."
    assert "beep" in text.items[1] and "[" not in text.items[1]
    assert skipped_of(ds)["no transcript"] == 1 and skipped_of(ds)["transcript without recording"] > 500
    from modalign.data.audio import load_audio

    wave = load_audio(audio.items[0], 16000)
    assert wave.ndim == 1 and 0.2 < len(wave) / 16000 < 5  # "Activated." is about a second long
    with pytest.raises(MissingDataError, match="apt-get install asterisk-core-sounds-fr-wav asterisk-core-sounds-fr"):
        load_dataset(f"asterisk-sounds?lang=fr&root={tmp_path / 'sounds'}&doc_root={tmp_path / 'doc'}")


def test_sklearn_digits_labelled():
    ds = load_dataset("digits?per_class=5")
    assert ds.classnames[7] == "seven" and len(ds) == 50 and np.bincount(ds.labels).tolist() == [5] * 10
    img = ds.column.items[0]
    assert img.shape == (32, 32) and img.dtype == np.uint8
    assert img.max() == 255 and img.min() < 100  # dark ink on a white ground


def test_take_groups_keeps_every_column_of_those_groups(cdda_root):
    ds = load_cdda(cdda_root)
    picked = np.array([5, 2, 9])
    sub = ds.take_groups(picked)
    assert sub.group_names == [ds.group_names[g] for g in picked] and sub.n_groups == 3
    for m in ("image", "text"):
        col, full = sub.column(m), ds.column(m)
        assert sorted(col.ids) == sorted(full.ids[r] for r in np.flatnonzero(np.isin(full.groups, picked)))
        for item_id, g in zip(col.ids, col.groups, strict=True):
            assert ds.group_names[full.groups[full.ids.index(item_id)]] == sub.group_names[g]
    assert sub.group_labels.tolist() == ds.group_labels[picked].tolist()
