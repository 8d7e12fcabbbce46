"""What the command line shows: skipped file names under -v, tables never cut at 80 columns, nothing from
FAISS under -q, the real IVF nlist in index.json, `modalign encoders SUBSTRING`."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from modalign.cli.main import main


@pytest.fixture()
def model_dir(tmp_path):
    """A real (untrained, seeded) linear model over the packaged encoders: enough to index and search."""
    from modalign.align.projectors import ProjectorConfig
    from modalign.encoders import create_encoder
    from modalign.model import AlignedModel, TowerConfig

    torch.manual_seed(0)
    encs = {"image": create_encoder("effnet-lite0"), "text": create_encoder("minilm-l6")}
    proj = ProjectorConfig(type="linear", out_dim=32, standardize=False)
    AlignedModel({m: TowerConfig(m, e.spec, "final", e.dim, e.fingerprint(), proj)
                  for m, e in encs.items()}).save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_verbose_lists_every_skipped_file_by_name(pairs_dir, tmp_path, capsys):
    (pairs_dir / "images" / "broken.png").write_bytes(b"not a png at all")
    with open(pairs_dir / "pairs.csv", "a") as f:
        f.write('images/broken.png,"a picture that cannot be decoded"\nimages/gone.png,"no such file"\n')
    args = ["encode", str(pairs_dir / "pairs.csv"), "--encoder", "effnet-lite0", "--store", str(tmp_path / "s")]
    for run in range(2):  # encoded, then reused from the store: named both times
        assert main([*args, "-v"]) == 0
        said = " ".join(capsys.readouterr().err.split())
        assert "skipped 2 item(s)" in said and "images/broken.png:" in said and "images/gone.png:" in said, run
    assert main(args) == 0  # without -v: the counts (the loader names one missing file as an example)
    printed = capsys.readouterr()
    assert "images/broken.png" not in printed.err and "skipped 2" in printed.out


def test_tables_keep_every_row_on_one_line_in_a_pipe(capsys):
    from modalign.cli.common import print_table

    row = {"method": "a-rather-long-method-name-" * 3, **{f"metric number {i}": 0.123456 for i in range(8)}}
    print_table([row], list(row), title="wide")
    lines = capsys.readouterr().out.splitlines()
    assert any(row["method"] in line and line.count("0.123") == 8 for line in lines)
    assert max(len(line) for line in lines) > 80


def test_ivf_index_records_its_real_nlist_and_faiss_is_silent_under_quiet(tmp_path, tux_root, model_dir, capfd):
    images = tmp_path / "images"
    images.mkdir()
    for png in sorted((tux_root / "animals" / "birds").glob("*.png"))[:20]:
        shutil.copy(png, images / png.name)
    capfd.readouterr()
    assert main(["index", "build", str(images), "--model", str(model_dir), "--out", str(tmp_path / "idx"),
                 "--kind", "ivf", "--store", str(tmp_path / "s"), "-q"]) == 0
    err = capfd.readouterr().err
    assert "WARNING clustering" not in err and err.strip() == "", err  # k-means on few points: not under -q
    info = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert info["kind"] == "ivf" and info["params"]["nlist"] >= 16 and info["params"]["nprobe"] >= 1


def test_encoders_matches_a_substring(capsys):
    assert main(["encoders", "effnet"]) == 0
    out = capsys.readouterr().out
    assert "effnet-lite0" in out and "effnet-lite2" in out and "minilm" not in out
