"""Hostile input, as a careless or malicious user would give it: every item is skipped with a counted reason
or the run fails with a clear error; never a traceback, a hang, a killed process or a read of another file.

Decompression bombs, a FIFO named x.png, SVGs asking for terabytes or naming local files, a Latin-1 CSV,
and (with hypothesis) arbitrary bytes as a pairs file.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modalign.data.column import Column
from modalign.errors import ConfigError, ImageTooLarge, InvalidItem, ModalignError


def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A PNG whose header says width x height (900 Mpx here) in a few hundred bytes: the header decides."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\x00" * (1 + (width + 7) // 8) * 8)  # a few 1-bit rows
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@pytest.fixture()
def hostile_dir(tmp_path: Path, tux_images: list[Path]) -> Path:
    """Two good stamps beside a PNG bomb, a FIFO named fifo.png, a tall SVG and an SVG naming a local file."""
    d = tmp_path / "hostile"
    d.mkdir()
    for p in tux_images[:2]:
        shutil.copy(p, d / p.name)
    (d / "bomb.png").write_bytes(bomb_png())
    os.mkfifo(d / "fifo.png")
    (d / "tall.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="100" height="10000000">'
                                '<rect width="10" height="10"/></svg>')
    return d


def _spy_svg(folder: Path, target: Path) -> Path:
    """An SVG drawing `target` (a red PNG elsewhere on disk) over its whole canvas by absolute href."""
    svg = folder / "spy.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
                   f'width="100" height="100"><image width="100" height="100" xlink:href="{target}"/>'
                   f'<image width="100" height="100" href="file://{target}"/>'
                   '<image width="100" height="100" href="../outside/red.png"/></svg>')
    return svg


# ---- the guarded decoder -------------------------------------------------------------------------------------
def test_decompression_bomb_is_image_too_large_on_every_decode_path(hostile_dir):
    from modalign.data.hf import _decode
    from modalign.data.images import decode_image_bytes, load_image

    data = (hostile_dir / "bomb.png").read_bytes()
    assert len(data) < 10_000  # small on disk, 900 Mpx when decoded
    for decode in (lambda: load_image(hostile_dir / "bomb.png"), lambda: decode_image_bytes(data, "upload"),
                   lambda: _decode(data)):
        with pytest.raises(ImageTooLarge, match="image too large"):
            decode()
    column = Column("image", ["bomb"], [hostile_dir / "bomb.png"], np.zeros(1))
    assert len(column.content_hash()) == 32  # hashing reads bytes, never decodes


def test_a_fifo_named_png_is_skipped_at_once_never_waited_on(hostile_dir):
    """Runs in a subprocess with a timeout: today's code blocks forever in open()."""
    code = ("import sys; from modalign.data.images import load_image; from modalign.errors import InvalidItem\n"
            "from modalign.data.column import Column; import numpy as np; from pathlib import Path\n"
            f"p = Path({str(hostile_dir / 'fifo.png')!r})\n"
            "Column('image', ['f'], [p], np.zeros(1)).content_hash()\n"
            "try:\n    load_image(p)\nexcept InvalidItem as e:\n    print('SKIP', e)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert "SKIP not a regular file" in out.stdout and "FIFO" in out.stdout


def test_svg_asking_for_terabytes_is_refused_before_rendering(hostile_dir):
    pytest.importorskip("resvg_py")
    from modalign.data.images import load_image

    with pytest.raises(ImageTooLarge, match=r"SVG tall\.svg is 100x1e\+07 and renders to 448x44800000 pixels"):
        load_image(hostile_dir / "tall.svg")
    # sizes the check cannot read (an entity, an unknown unit) are still boxed by the render itself
    odd = hostile_dir / "odd.svg"
    odd.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="1q" height="1e7" viewBox="0 0 1 1000000">'
                   '<rect width="1" height="1"/></svg>')
    with pytest.raises(InvalidItem, match="image too large"):
        load_image(odd)


def test_svg_renders_without_reading_files_outside_it(tmp_path):
    pytest.importorskip("resvg_py")
    from modalign.data.images import load_image

    outside = tmp_path / "outside"
    outside.mkdir()
    Image.new("RGB", (40, 40), (255, 0, 0)).save(outside / "red.png")
    data = tmp_path / "data"
    data.mkdir()
    img = load_image(_spy_svg(data, outside / "red.png"))
    assert img.size == (448, 448)
    assert np.asarray(img).min() == 255  # all white: the red file was never read
    # an embedded raster image is part of the document and renders
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (0, 0, 255)).save(buf, format="PNG")
    import base64

    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    inline = data / "inline.svg"
    inline.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
                      f'<image width="10" height="10" href="{uri}"/></svg>')
    assert load_image(inline).getpixel((224, 224))[2] > 200
    # an entity that would inject an href is refused, not expanded behind the filter's back
    sneaky = data / "sneaky.svg"
    sneaky.write_text('<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY i \'<image width="9" height="9" '
                      f'xlink:&#104;ref="{outside / "red.png"}"/>\'>]><svg xmlns="http://www.w3.org/2000/svg" '
                      'xmlns:xlink="http://www.w3.org/1999/xlink" width="9" height="9">&i;</svg>')
    with pytest.raises(InvalidItem, match="entity declarations"):
        load_image(sneaky)


def test_hostile_items_are_counted_skips_in_a_real_encode(hostile_dir, tmp_path):
    pytest.importorskip("resvg_py")
    from modalign.encoders import create_encoder
    from modalign.store import EmbeddingStore

    items = sorted(hostile_dir.iterdir())
    column = Column("image", [p.name for p in items], items, np.arange(len(items)))
    torch.set_num_threads(1)
    emb = EmbeddingStore(tmp_path / "store").encode(column, create_encoder("effnet-lite0"), num_workers=0,
                                                    progress=False)["final"]
    assert emb.report.n_encoded == 2
    assert emb.report.reasons == {"image too large": 2, "not a regular file": 1}


# ---- text files in another encoding ---------------------------------------------------------------------------
def test_latin1_csv_names_line_and_byte_and_offers_encoding(pairs_dir, tmp_path, capsys):
    from modalign.cli.main import main
    from modalign.data.pairs import load_pairs

    rows = (pairs_dir / "pairs.csv").read_text().splitlines()
    name = rows[3].split(",")[0]
    rows.insert(4, f'{name},"café au lait, crème brûlée"')
    latin = pairs_dir / "latin.csv"
    latin.write_bytes("\n".join(rows).encode("latin-1", errors="replace"))
    with pytest.raises(ConfigError, match=r"latin\.csv is not valid UTF-8 text: line 5, byte \d+ \(0xe9.*--encoding"):
        load_pairs(latin)
    ds = load_pairs(latin, encoding="latin-1")
    assert "café au lait, crème brûlée" in ds.column("text").items
    # the command line: a clear one-line error, then --encoding works
    args = ["encode", str(latin), "--encoder", "minilm-l6", "--store", str(tmp_path / "s"), "-q"]
    assert main(args) == 1
    assert main([*args, "--encoding", "latin-1"]) == 0


def test_spec_option_and_jsonl_encoding(tmp_path):
    from modalign.data.registry import load_dataset

    jsonl = tmp_path / "p.jsonl"
    jsonl.write_bytes('{"image": "a.png", "caption": "señor"}\n{"image": "b.png", "caption": "niño"}\n'
                      .encode("cp1252"))
    with pytest.raises(ConfigError, match=r"line 1, byte 34 \(0xf1"):
        load_dataset(str(jsonl))
    assert load_dataset(f"{jsonl}?encoding=cp1252").column("text").items == ["señor", "niño"]
    with pytest.raises(ConfigError, match="unknown text encoding 'klingon'"):
        load_dataset(str(jsonl), encoding="klingon")


def test_lone_surrogate_caption_is_a_counted_skip(tmp_path):
    from modalign.data.images import load_text

    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(json.dumps({"image": "a.png", "caption": "bad \ud800 text"}) + "\n")
    from modalign.data.pairs import load_pairs

    (caption,) = load_pairs(jsonl).column("text").items
    with pytest.raises(InvalidItem, match="caption is not valid Unicode"):
        load_text(caption)


def test_arbitrary_bytes_never_give_anything_but_rows_skips_or_a_clear_error(tmp_path_factory):
    """Property: whatever a CSV/TSV/JSONL file holds, load_pairs returns a data set or raises a
    ModalignError; no UnicodeDecodeError, csv.Error, RecursionError, KeyError ... escapes."""
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from modalign.data.pairs import load_pairs

    folder = tmp_path_factory.mktemp("prop")
    cells = st.one_of(st.text(max_size=30), st.sampled_from(["image", "caption", "label", '"', "\n", "\r\n", ",",
                                                            "\x00", "[[[[", "{}", "\ud800", "é"]))
    text_files = st.lists(cells, max_size=40).map("".join)
    json_lines = st.lists(st.one_of(
        st.dictionaries(st.sampled_from(["image", "caption", "label", "x"]),
                        st.recursive(st.none() | st.booleans() | st.floats() | st.text(max_size=10),
                                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c,
                                                                                         max_size=3),
                                     max_leaves=8)).map(json.dumps),
        st.text(max_size=40), st.just("[" * 5000)), max_size=12).map("\n".join)

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.one_of(st.binary(max_size=400), text_files.map(lambda t: t.encode("utf-8", "surrogatepass")),
                     json_lines.map(lambda t: t.encode("utf-8", "surrogatepass"))),
           st.sampled_from([".csv", ".tsv", ".jsonl"]), st.sampled_from(["utf-8-sig", "latin-1"]))
    def check(data: bytes, suffix: str, encoding: str) -> None:
        path = folder / f"pairs{suffix}"
        path.write_bytes(data)
        try:
            ds = load_pairs(path, encoding=encoding)
        except ModalignError:
            return
        assert len(ds.column("text")) >= ds.n_groups >= 1

    assert hypothesis.__version__
    check()
