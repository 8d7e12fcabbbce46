"""The command line end to end on a few real Tux Paint images, as a user would run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from modalign.cli.main import main
from modalign.model import AlignedModel


@pytest.fixture()
def messy_pairs(pairs_dir: Path) -> Path:
    """pairs.csv plus the bad rows real data has: a corrupt image, a missing file, an empty caption."""
    (pairs_dir / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with open(pairs_dir / "pairs.csv", "a") as f:
        f.write('images/broken.png,"a picture that cannot be decoded"\n')
        f.write('images/gone.png,"an image that is not there"\n')
        f.write('images/' + sorted((pairs_dir / "images").glob("*.png"))[0].name + ',""\n')
    return pairs_dir / "pairs.csv"


def test_train_then_eval_end_to_end(tmp_path, messy_pairs, image_tree, capsys):
    store, out = tmp_path / "store", tmp_path / "run"
    common = ["--store", str(store), "-q"]
    rc = main(["train", "--pairs", str(messy_pairs), "--image-encoder", "effnet-lite0", "--text-encoder",
               "minilm-l6", "--out", str(out), "--epochs", "3", "--batch-size", "8", "--out-dim", "32",
               "--hidden-dim", "64", *common])
    assert rc == 0
    for name in ("config.json", "model.safetensors", "fit_config.json", "split.json", "method.json", "metrics.jsonl",
                 "curves.png", "results.json", "baselines/ridge/config.json", "baselines/procrustes/model.safetensors",
                 "baselines/mlp/config.json", "baselines/cca/config.json", "baselines/asif/model.safetensors"):
        assert (out / name).is_file(), name
    # the default method is auto; the training flags shape the trained baseline (mlp), whose epochs are logged
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(epochs) == 3 and "val_image_retrieval_recall@1" in epochs[0]
    assert json.loads((out / "method.json").read_text())["method"] == "auto"
    printed = capsys.readouterr().out
    assert all(m in printed for m in ("auto", "mlp", "ridge", "procrustes", "cca", "asif", "held-out retrieval"))

    model = AlignedModel.from_pretrained(out)
    assert model.metadata["method"] == "auto" and model.towers["image"].encoder == "effnet-lite0"
    assert AlignedModel.from_pretrained(out / "baselines" / "mlp").embed_dim == 32

    rjson = tmp_path / "retrieval.json"
    # the training data: by default only the run's test split is scored, and the JSON says so
    assert main(["eval", "retrieval", str(out), "--pairs", str(messy_pairs), "--json", str(rjson), *common]) == 0
    r = json.loads(rjson.read_text())
    results = json.loads((out / "results.json").read_text())["methods"]["mlp"]
    assert r["split"] == "test" and r["n_images"] == results["n_images"] < 12
    assert r["image_retrieval_recall@5"] == pytest.approx(results["image_retrieval_recall@5"], abs=1e-6)
    assert main(["eval", "retrieval", str(out), "--pairs", str(messy_pairs), "--split", "all", "--json", str(rjson),
                 *common]) == 0
    r = json.loads(rjson.read_text())
    # 12 stamps; the captions of the corrupt and the missing image have no image left to retrieve
    assert r["split"] == "all" and r["n_images"] == 12 and r["n_texts"] == 12
    assert r["n_skipped"] == 2  # corrupt + missing image (the empty caption was dropped at load time)
    assert 0 <= r["image_retrieval_recall@1"] <= r["image_retrieval_recall@5"] <= r["image_retrieval_recall@10"] <= 1
    assert "ridge/text_retrieval_recall@1" in r and "procrustes/image_retrieval_recall@5" in r

    zjson = tmp_path / "zeroshot.json"
    assert main(["eval", "zeroshot", str(out), "--images", str(image_tree), "--json", str(zjson), *common]) == 0
    z = json.loads(zjson.read_text())
    assert z["n_classes"] == 6 and z["n_images"] == 12 and z["split"] == "all"  # images the run never saw
    assert 0 <= z["acc1"] <= z["acc5"] <= 1 and "mean_per_class_recall" in z

    # the store was reused: a second eval encodes nothing new
    before = sorted(p.name for p in store.rglob("*.npy"))
    assert main(["eval", "retrieval", str(out), "--pairs", str(messy_pairs), *common]) == 0
    assert sorted(p.name for p in store.rglob("*.npy")) == before


def test_stale_baselines_and_failed_runs_never_pass_for_current(tmp_path, pairs_dir, capsys):
    import shutil

    store, out = tmp_path / "store", tmp_path / "run"
    common = ["--pairs", str(pairs_dir / "pairs.csv"), "--store", str(store), "-q"]
    train = ["train", "--out", str(out), "--epochs", "1", "--out-dim", "16", "--hidden-dim", "32", *common]
    assert main(train) == 0
    shutil.copytree(out / "baselines" / "ridge", tmp_path / "old-ridge")
    assert main([*train, "--no-baselines"]) == 1  # a run folder is never replaced silently
    assert main([*train, "--no-baselines", "--overwrite"]) == 0  # retrained into the same folder, no baselines
    assert not (out / "baselines").is_dir() or not any((out / "baselines").iterdir())  # the old ones are gone
    shutil.copytree(tmp_path / "old-ridge", out / "baselines" / "ridge")  # a stale one put back by hand
    capsys.readouterr()
    rjson = tmp_path / "r.json"
    assert main(["eval", "retrieval", str(out), "--json", str(rjson), *common]) == 0
    assert not [k for k in json.loads(rjson.read_text()) if k.startswith("ridge/")]
    said = " ".join(capsys.readouterr().err.split())
    assert "ignoring" in said and "another run" in said

    failed = tmp_path / "failed"  # what a run that died before saving leaves behind
    failed.mkdir()
    (failed / "fit_config.json").write_text("{}")
    assert main(["eval", "retrieval", str(failed), *common]) == 1
    assert "holds no finished model" in " ".join(capsys.readouterr().err.split())


def test_clear_errors_for_wrong_input(tmp_path, pairs_dir, capsys):
    rc = main(["train", "--pairs", str(pairs_dir / "pairs.csv"), "--image-encoder", "no-such-encoder",
               "--out", str(tmp_path / "x"), "--store", str(tmp_path / "s"), "-q"])
    assert rc == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("picture,text\na.png,hello\n")
    rc = main(["train", "--pairs", str(bad), "--out", str(tmp_path / "y"), "--store", str(tmp_path / "s"), "-q"])
    assert rc == 1


def test_console_script_help_and_encoders_listing():
    exe = Path(sys.executable).with_name("modalign")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("quickstart", "encoders", "encode", "train", "eval"):
        assert cmd in out
    listing = subprocess.run([str(exe), "encoders", "--json"], capture_output=True, text=True, check=True).stdout
    names = {e["name"] for e in json.loads(listing)}
    assert {"effnet-lite0", "effnet-lite2", "minilm-l6", "st:", "hf:", "timm:", "onnx:"} <= names


def test_help_and_version_load_no_torch():
    """`modalign --help` / `--version` / a command's summary list import only the CLI's own modules."""
    code = ("import sys\nfrom modalign.cli.main import main\n"
            "for argv in (['--help'], ['--version']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "heavy = sorted(m for m in ('torch', 'numpy', 'transformers', 'faiss', 'matplotlib') if m in sys.modules)\n"
            "print(','.join(heavy) or 'none')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "none"


def test_a_chosen_command_imports_only_its_own_module():
    code = ("import sys\nfrom modalign.cli.main import build_parser\nbuild_parser(['store', 'ls'])\n"
            "print(sorted(m for m in sys.modules if m.startswith('modalign.cli.cmd_')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['modalign.cli.cmd_store']"


def test_eval_zeroshot_on_a_pairs_data_set_says_what_to_use(tmp_path, capsys):
    from modalign.align.projectors import ProjectorConfig
    from modalign.model import AlignedModel, TowerConfig

    towers = {m: TowerConfig(m, spec, "final", d, "fp", ProjectorConfig(type="linear", out_dim=8))
              for m, spec, d in (("image", "effnet-lite0", 1280), ("text", "minilm-l6", 384))}
    AlignedModel(towers).save_pretrained(tmp_path / "run")
    rc = main(["eval", "zeroshot", str(tmp_path / "run"), "--images", "tuxpaint", "--store", str(tmp_path / "s")])
    assert rc == 1  # a clear error, not a traceback
    err = " ".join(capsys.readouterr().err.split())  # the log handler wraps long lines
    assert "tuxpaint is a pairs data set" in err and "use tuxpaint-categories" in err


def test_store_ls_info_rm(tmp_path, pairs_dir, capsys):
    store = ["--store", str(tmp_path / "store"), "-q"]
    assert main(["encode", str(pairs_dir / "pairs.csv"), "--encoder", "minilm-l6", *store]) == 0
    capsys.readouterr()
    assert main(["store", "ls", "--json", *store]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert len(entries) == 1 and entries[0]["key"]["encoder"] == "minilm-l6" and entries[0]["complete"]
    digest = entries[0]["digest"]
    assert main(["store", "info", digest[:8], *store]) == 0
    assert json.loads(capsys.readouterr().out)["layout"]["n_items"] == 12
    assert main(["store", "rm", "nope", *store]) == 1  # an unknown digest is an error, nothing removed
    assert main(["store", "rm", digest[:8], *store]) == 0
    capsys.readouterr()
    assert main(["store", "ls", "--json", *store]) == 0
    assert json.loads(capsys.readouterr().out) == []
