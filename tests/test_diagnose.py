"""Embedding diagnostics: the numbers on known geometry, and `modalign diagnose` end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from modalign.cli.main import main
from modalign.evaluate.diagnostics import (
    alignment,
    auc,
    confusion_matrix,
    confusion_report,
    embedding_diagnostics,
    mean_cosine,
    modality_gap,
    uniformity,
)


def test_gap_alignment_uniformity_on_known_geometry():
    e = torch.eye(4)  # four orthogonal unit vectors
    assert modality_gap(e, e) == pytest.approx(0.0)
    assert modality_gap(e[:2], e[2:]) == pytest.approx(1.0)  # centroids (.5,.5,0,0) and (0,0,.5,.5)
    assert alignment(e, e) == pytest.approx(0.0)
    assert alignment(e[:2], e[2:]) == pytest.approx(2.0)  # ||e_i - e_j||^2 = 2 for orthogonal units
    assert alignment(3 * e, e) == pytest.approx(0.0)  # normalised first
    assert uniformity(e) == pytest.approx(-4.0)  # every distinct pair at squared distance 2
    assert uniformity(torch.ones(5, 3)) == pytest.approx(0.0)  # all at one point: the worst
    assert mean_cosine(e) == pytest.approx(0.0) and mean_cosine(torch.ones(5, 3)) == pytest.approx(1.0)
    z = torch.nn.functional.normalize(torch.randn(300, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    assert uniformity(z) < uniformity(z + 2.0)  # a shifted cloud is less uniform


def test_auc_and_embedding_diagnostics():
    assert auc(np.array([0.9, 0.8]), np.array([0.1, 0.2, 0.3])) == 1.0
    assert auc(np.array([0.1]), np.array([0.5, 0.6])) == 0.0
    assert auc(np.array([0.5]), np.array([0.5])) == 0.5
    g = torch.Generator().manual_seed(1)
    img = torch.randn(20, 8, generator=g)
    txt = torch.cat([img, img[:5]]) + 0.01 * torch.randn(25, 8, generator=g)  # 5 images with 2 captions
    groups_t = np.concatenate([np.arange(20), np.arange(5)])
    d = embedding_diagnostics(img, txt, np.arange(20), groups_t)
    assert d["n_pairs"] == 25 and d["pair_auc"] > 0.99 and d["alignment"] < 1e-3
    assert d["matched_mean"] > 0.99 > d["unmatched_mean"]
    shuffled = embedding_diagnostics(img, txt, np.arange(20), np.roll(groups_t, 7))
    assert shuffled["pair_auc"] < 0.8 and shuffled["alignment"] > 0.5


def test_confusion_matrix_and_report():
    cm = confusion_matrix([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    rep = confusion_report(cm, ["cat", "dog", "car"])
    assert rep["acc1"] == pytest.approx(3 / 5)
    assert rep["per_class"]["cat"] == {"n": 2, "recall": 0.5, "most_confused_with": "dog"}
    assert rep["per_class"]["dog"]["most_confused_with"] is None
    assert rep["per_class"]["car"]["recall"] == 0.0


def test_diagnose_cli_end_to_end(tmp_path, pairs_dir, image_tree, capsys):
    store, run = tmp_path / "store", tmp_path / "run"
    common = ["--store", str(store), "-q"]
    pairs = str(pairs_dir / "pairs.csv")
    rc = main(["train", "--recipe", "default", "--pairs", pairs, "--out", str(run), "--epochs", "2",
               "--batch-size", "8", "--out-dim", "32", "--hidden-dim", "64", *common])
    assert rc == 0
    fit_cfg = json.loads((run / "fit_config.json").read_text())
    assert fit_cfg["train"]["loss"] == "infonce" and fit_cfg["train"]["epochs"] == 2  # recipe + flags
    capsys.readouterr()

    out = tmp_path / "diag"
    assert main(["diagnose", str(run), "--split", "all", "--pairs", pairs, "--images", str(image_tree), "--out", str(out),
                 *common]) == 0
    d = json.loads((out / "diagnostics.json").read_text())
    for key in ("modality_gap", "alignment", "uniformity_image", "uniformity_text", "matched_mean",
                "unmatched_mean", "pair_auc", "ridge/modality_gap", "procrustes/pair_auc",
                "frozen/uniformity_image", "frozen/mean_cosine_text", "zeroshot_acc1"):
        assert key in d and math.isfinite(d[key]), key
    assert d["n_pairs"] == 12 and 0 <= d["modality_gap"] <= 2 and -4.5 < d["uniformity_text"] <= 0
    assert 0 <= d["pair_auc"] <= 1
    # frozen post-ReLU image features are anisotropic: much more alike than the projected embeddings
    assert d["frozen/mean_cosine_image"] > d["mean_cosine_image"]
    conf = json.loads((out / "confusion.json").read_text())
    assert np.array(conf["matrix"]).sum() == 12 and len(conf["classnames"]) == 6
    assert conf["acc1"] == pytest.approx(d["zeroshot_acc1"])
    for png in ("similarity_hist.png", "confusion.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    printed = capsys.readouterr().out
    assert "procrustes" in printed and "ridge" in printed and f"diagnostics written to {out}" in printed
