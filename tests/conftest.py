"""Shared fixtures: a few real images and captions from the Tux Paint stamps (Debian package)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TUX_ROOT = Path("/usr/share/tuxpaint/stamps")
FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")

# A fixed handful of real stamps across categories (image + caption file next to it).
_TUX_PICKS = [
    "animals/birds", "animals/mammals", "food/fruit", "vehicles/auto", "plants/flowers", "space/planets",
]


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make test` (it installs the Debian data packages)")
    return path


@pytest.fixture(scope="session")
def tux_root() -> Path:
    return _require(TUX_ROOT)


@pytest.fixture(scope="session")
def fashion_root() -> Path:
    return _require(FASHION_ROOT)


def _first_captioned_pngs(folder: Path, n: int) -> list[Path]:
    out = []
    for png in sorted(folder.glob("*.png")):
        if png.with_suffix(".txt").exists():
            out.append(png)
        if len(out) == n:
            break
    return out


@pytest.fixture(scope="session")
def tux_images(tux_root: Path) -> list[Path]:
    """12 real stamp PNGs (2 from each of 6 sub-folders), each with a caption file."""
    images = [p for sub in _TUX_PICKS for p in _first_captioned_pngs(tux_root / sub, 2)]
    assert len(images) == 12, "the Tux Paint stamps package looks incomplete"
    return images


def caption_of(png: Path) -> str:
    return png.with_suffix(".txt").read_text(encoding="utf-8", errors="replace").splitlines()[0].strip()


@pytest.fixture()
def pairs_dir(tmp_path: Path, tux_images: list[Path]) -> Path:
    """A folder with images/ and pairs.csv (image,caption), as a user would lay out their own data."""
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    rows = ["image,caption"]
    for png in tux_images:
        shutil.copy(png, img_dir / png.name)
        cap = caption_of(png).replace('"', "'")
        rows.append(f'images/{png.name},"{cap}"')
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


@pytest.fixture()
def image_tree(tmp_path: Path, tux_images: list[Path]) -> Path:
    """A class-per-folder tree from the stamps' own folders (birds, mammals, fruit ...)."""
    root = tmp_path / "tree"
    for png in tux_images:
        (root / png.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, root / png.parent.name / png.name)
    return root
