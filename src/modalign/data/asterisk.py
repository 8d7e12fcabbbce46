"""Asterisk telephone prompts (Debian packages asterisk-core-sounds-en-wav + asterisk-core-sounds-en,
CC-BY-SA-3.0): ~570 real recordings of one speaker with their transcripts (audio-text pairs).

    /usr/share/asterisk/sounds/en_US_f_Allison/**.wav                     the recordings (8 kHz mono)
    /usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz          "name: transcript" lines
                                                                          ("digits/7: seven")

    load_dataset("asterisk-sounds")              English (other languages: lang=fr with
                                                 asterisk-core-sounds-fr-wav + asterisk-core-sounds-fr)

A transcript in brackets describes a sound rather than speech ("[this is a simple beep tone]"); the
brackets are dropped and it is kept. One group per recording.
"""

from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from modalign.data.column import AlignedDataset, Column
from modalign.data.skips import SkipCounter, attach_skips
from modalign.errors import ConfigError, MissingDataError

logger = logging.getLogger(__name__)

SOUNDS_ROOT = Path("/usr/share/asterisk/sounds")
DOC_ROOT = Path("/usr/share/doc")


def _packages(lang: str) -> str:
    return f"asterisk-core-sounds-{lang}-wav asterisk-core-sounds-{lang}"


def read_transcripts(path: Path) -> dict[str, str]:
    """{sound name: transcript} from a core-sounds-<lang>.txt(.gz): "name: text" lines, ';' comments."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    out: dict[str, Any] = {}
    for line in lines:
        if not line.strip() or line.lstrip().startswith(";") or ":" not in line:
            continue
        name, _, text = line.partition(":")
        text = " ".join(text.strip().strip("[]").split())
        if name.strip() and text:
            out.setdefault(name.strip(), text)
    return out


def _find(root: Path, doc_root: Path, lang: str) -> tuple[Path, Path]:
    """(the folder of recordings, the transcript file) for `lang`."""
    if not lang.isalpha():
        raise ConfigError(f"lang must be a language code like 'en' or 'fr', not {lang!r}")
    folders = sorted(p for p in root.glob(f"{lang}_*") if p.is_dir()) if root.is_dir() else []
    folders = folders or ([root / lang] if (root / lang).is_dir() else [])
    transcripts = [p for p in (doc_root / f"asterisk-core-sounds-{lang}").glob(f"core-sounds-{lang}.txt*")]
    if not folders or not transcripts:
        missing = "recordings" if not folders else "transcripts"
        raise MissingDataError(
            f"Asterisk {lang} {missing} not found (looked in {root} and {doc_root}). Install them with "
            f"`sudo apt-get install {_packages(lang)}` (Debian/Ubuntu; `make setup` does it for English)"
        )
    return folders[0], sorted(transcripts)[0]


def load_asterisk_sounds(root: str | os.PathLike = SOUNDS_ROOT, lang: str = "en",
                         doc_root: str | os.PathLike = DOC_ROOT) -> AlignedDataset:
    """Recordings and transcripts as an AlignedDataset with columns "audio" (WAV paths) and "text"."""
    folder, transcript_file = _find(Path(root).expanduser(), Path(doc_root).expanduser(), lang)
    transcripts = read_transcripts(transcript_file)
    skips = SkipCounter("recordings")
    names, paths = [], []
    for wav in sorted(folder.rglob("*.wav")):
        name = wav.relative_to(folder).with_suffix("").as_posix()
        if name not in transcripts:
            skips.add("no transcript", name)
            continue
        names.append(name)
        paths.append(wav)
    skips.counts["transcript without recording"] += len(set(transcripts) - set(names))
    skips.log(logger, f"asterisk-sounds ({lang})", level=logging.INFO)
    if not names:
        raise MissingDataError(f"no Asterisk recording under {folder} has a transcript; is {_packages(lang)} installed?")
    groups = np.arange(len(names), dtype=np.int64)
    columns = {"audio": Column("audio", [f"{lang}/{n}" for n in names], paths, groups),
               "text": Column("text", [f"{lang}/{n}#0" for n in names], [transcripts[n] for n in names], groups)}
    dataset = AlignedDataset(f"asterisk-sounds-{lang}", columns, [f"{lang}/{n}" for n in names], root=folder)
    attach_skips(dataset, skips)
    logger.info("asterisk-sounds (%s): %d recordings with transcripts", lang, len(names))
    return dataset
