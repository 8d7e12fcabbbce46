"""The default method `auto` and the label bridge on real encoders and real Tux Paint stamps: classifier
heads, the bridge's refusal without one, save/reload of the ensemble, invariance to the test split."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modalign.align.ensemble import combine, select_weights, weight_combos
from modalign.align.features import FeatureSet
from modalign.align.trainer import TrainConfig, evaluate_features
from modalign.data.pairs import load_pairs
from modalign.encoders import FINAL_LAYER, create_encoder
from modalign.encoders.label_head import imagenet_classnames
from modalign.errors import ConfigError
from modalign.evaluate.retrieval import retrieval_metrics
from modalign.model import AlignedModel, TowerConfig
from modalign.store import EmbeddingStore
from modalign.workflows.fit import FitConfig, fit
from modalign.workflows.methods import fit_method

SPLIT = {"train": 0.6, "val": 0.2, "test": 0.2}


@pytest.fixture(scope="module")
def effnet():
    return create_encoder("effnet-lite0")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> EmbeddingStore:
    """One store for the module: the 1000 bridge prompts are encoded once."""
    return EmbeddingStore(tmp_path_factory.mktemp("store"))


def test_effnet_label_head_gives_the_models_own_logits(effnet, tux_images):
    head = effnet.label_head()
    assert head is not None and head.n_classes == 1000 and head.classnames == imagenet_classnames()
    assert head.classnames[:2] == ("tench", "goldfish") and head.layer == FINAL_LAYER
    batch = effnet.collate([effnet.load(p) for p in tux_images[:4]])
    with torch.no_grad():
        expected = effnet.model(batch)  # the package's own forward: pool -> dropout (off) -> _fc
    logits = head.logits(effnet.forward(batch, [FINAL_LAYER])[FINAL_LAYER])
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


def test_timm_label_head_comes_from_the_weights_file(tmp_path, tux_images):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(3)
    full = timm.create_model("test_resnet", pretrained=False).eval()  # with its 1000-way classifier
    save_file(full.state_dict(), str(tmp_path / "w.safetensors"))
    enc = create_encoder(f"timm:test_resnet?weights={tmp_path / 'w.safetensors'}")
    batch = enc.collate([enc.load(p) for p in tux_images[:3]])
    with torch.no_grad():
        expected = full(batch)
    head = enc.label_head()
    assert head is not None
    torch.testing.assert_close(head.logits(enc.forward(batch, [FINAL_LAYER])[FINAL_LAYER]), expected,
                               rtol=1e-4, atol=1e-4)
    assert create_encoder("timm:test_resnet?pretrained=false").label_head() is None  # random init: no labels


def test_the_bridge_refuses_an_encoder_without_a_head_and_auto_falls_back(store):
    image_enc, text_enc = create_encoder("timm:test_resnet?pretrained=false"), create_encoder("minilm-l6")
    towers = {m: TowerConfig(m, e.spec, FINAL_LAYER, e.dim, e.fingerprint()) for m, e in
              (("image", image_enc), ("text", text_enc))}
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, image_enc.dim, generator=g), torch.randn(12, text_enc.dim, generator=g)
    fs = FeatureSet({"image": x, "text": y + x[:, :1]}, {"image": torch.arange(12), "text": torch.arange(12)})
    encoders = {"image": image_enc, "text": text_enc}
    with pytest.raises(ConfigError, match=r"needs an image encoder with a classifier head.*has none.*--method kcca"):
        fit_method("bridge", towers, fs, None, TrainConfig(), encoders=encoders, store=store)
    model, info = fit_method("auto", towers, fs, None, TrainConfig(), encoders=encoders, store=store)
    assert info["choice"] == "kcca" and "no classifier head" in info["reasons"][0]
    assert model.towers["image"].projector.type == "kernel"


def _latent_pairs(effnet):
    """150 pairs whose text partner has nothing to do with ImageNet classes (the icon sets' case): both
    sides are images of a shared 6-d latent. (towers, encoders, train (110), val (40))."""
    text_enc = create_encoder("minilm-l6")
    encoders = {"image": effnet, "text": text_enc}
    towers = {m: TowerConfig(m, e.spec, FINAL_LAYER, e.dim, e.fingerprint()) for m, e in encoders.items()}
    g = torch.Generator().manual_seed(0)
    z = torch.randn(150, 6, generator=g)
    x = (z @ torch.randn(6, effnet.dim, generator=g)).relu()
    y = z @ torch.randn(6, text_enc.dim, generator=g)
    groups = torch.arange(150)
    train = FeatureSet({"image": x[:110], "text": y[:110]}, {"image": groups[:110], "text": groups[:110]})
    val = FeatureSet({"image": x[110:], "text": y[110:]}, {"image": groups[110:], "text": groups[110:]})
    return towers, encoders, train, val


def test_auto_drops_a_bridge_that_is_broken_on_validation(effnet, store):
    """The bridge is near chance on validation, kernel CCA is not, so auto keeps kernel CCA alone and says
    why; with the guard off (part_min_val_ratio = 0) it keeps the bridge."""
    towers, encoders, train, val = _latent_pairs(effnet)
    model, info = fit_method("auto", towers, train, val, TrainConfig(), encoders=encoders, store=store)
    scores = info["val_mean_recall@1"]
    assert scores["kcca"] > 0.5 and scores["bridge"] < 0.5 * scores["kcca"]
    assert info["choice"] == "kcca" and any("label bridge dropped" in r for r in info["reasons"])
    assert model.towers["image"].projector.type == "kernel"
    _, kept = fit_method("auto", towers, train, val, TrainConfig(), options={"part_min_val_ratio": 0},
                         encoders=encoders, store=store)
    assert kept["choice"] == "bridge+kcca" and "weight_scores" not in kept  # 40 validation pairs: no choice


def test_auto_chooses_weights_on_a_large_validation_split(effnet, store):
    """From mlp_min_pairs on the trained MLP joins; with select_min_val validation pairs each part's weight
    is chosen there: the chosen weighting scores best, so never below any part alone, and the returned
    model scores on validation what the choice was judged on."""
    towers, encoders, train, val = _latent_pairs(effnet)
    options = {"mlp_min_pairs": 100, "select_min_val": 40}
    model, info = fit_method("auto", towers, train, val, TrainConfig(seed=0), options=options,
                             encoders=encoders, store=store)
    scores = info["weight_scores"]
    assert len(scores) == 4 ** 3 - 3 ** 3 and next(iter(scores)) == "1,1,1"  # largest weight 1, equal first
    chosen = ",".join(f"{info['weights'].get(p, 0.0):g}" for p in ("bridge", "kcca", "mlp"))
    assert scores[chosen] == max(scores.values())
    assert all(scores[chosen] >= scores[alone] for alone in ("1,0,0", "0,1,0", "0,0,1"))
    assert info["choice"] == "+".join(info["weights"]) and any("weights chosen on 40" in r for r in info["reasons"])
    assert evaluate_features(model, val)["mean_recall@1"] == pytest.approx(scores[chosen], abs=1 / 40)
    assert weight_combos(2, [0, 0.5, 1]) == [(1, 1), (1, 0.5), (1, 0), (0.5, 1), (0, 1)]
    with pytest.raises(ConfigError, match="1 among them"):
        weight_combos(2, [0, 0.5])


def test_weight_scores_are_the_recall_of_the_concatenated_ensemble():
    """select_weights scores each weighting from the parts' cosines without concatenating: the same
    mean R@1 as retrieval_metrics on the concatenated, sqrt(weight)-scaled parts (groups with 2 images)."""
    g = torch.Generator().manual_seed(1)
    z = torch.randn(60, 8, generator=g)
    img_groups, txt_groups = torch.arange(60).repeat(2), torch.arange(60)
    imgs = torch.cat([z, z + 0.5 * torch.randn(60, 8, generator=g)])  # (120, 8): two images per group
    parts_a = [imgs @ torch.randn(8, k, generator=g) + 0.8 * torch.randn(120, k, generator=g) for k in (5, 7, 6)]
    parts_b = [z @ torch.randn(8, k, generator=g) + 0.8 * torch.randn(60, k, generator=g) for k in (5, 7, 6)]
    best, scores = select_weights(parts_a, parts_b, img_groups, txt_groups, [0, 0.5, 1], block=16)
    assert len(scores) == 3 ** 3 - 2 ** 3 and len(set(scores.values())) > 3  # the weightings do differ
    for label, score in scores.items():
        w = [float(x) for x in label.split(",")]
        keep = [i for i, x in enumerate(w) if x > 0]
        ea = combine([parts_a[i] for i in keep], [w[i] for i in keep])
        eb = combine([parts_b[i] for i in keep], [w[i] for i in keep])
        expected = retrieval_metrics(ea, eb, img_groups.numpy(), txt_groups.numpy())["mean_recall@1"]
        assert score == pytest.approx(expected, abs=1e-6), label
    assert scores[",".join(f"{x:g}" for x in best)] == max(scores.values())


def _write_pairs(folder: Path, images: list[Path], captions: list[str]) -> Path:
    (folder / "images").mkdir(parents=True)
    with open(folder / "pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        for png, cap in zip(images, captions, strict=True):
            shutil.copy(png, folder / "images" / png.name)
            w.writerow([f"images/{png.name}", cap])
    return folder / "pairs.csv"


def _fit(pairs_csv: Path, out: Path, store: EmbeddingStore):
    cfg = FitConfig(baselines=[], split=SPLIT, split_seed=1)
    return fit(load_pairs(pairs_csv), cfg, out, store, progress=False, plots=False)


def test_auto_ensemble_saves_reloads_and_ignores_the_test_split(tmp_path, tux_images, store):
    from conftest import caption_of

    captions = [caption_of(p) for p in tux_images]
    run = _fit(_write_pairs(tmp_path / "a", tux_images, captions), tmp_path / "run_a", store)
    method = json.loads((tmp_path / "run_a" / "method.json").read_text())
    assert method["method"] == "auto" and method["choice"] == "bridge+kcca"
    assert any("effnet-lite0 has a 1000-class head" in r for r in method["reasons"])
    assert run.model.towers["image"].projector.type == "ensemble"

    # reloaded from the folder, raw images and captions give the embeddings of the fitted model
    loaded = AlignedModel.from_pretrained(tmp_path / "run_a")
    img, txt = loaded.encode_image(tux_images[:5]), loaded.encode_text(captions[:5])
    enc_img = create_encoder("effnet-lite0").encode(tux_images[:5])
    enc_txt = create_encoder("minilm-l6").encode(captions[:5])
    torch.testing.assert_close(img, run.model.project("image", enc_img), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(txt, run.model.project("text", enc_txt), rtol=1e-5, atol=1e-5)

    # other images and captions in the test split: the fitted weights do not move at all
    dataset = load_pairs(tmp_path / "a" / "pairs.csv")
    test_names = {dataset.group_names[g] for g in run.split["test"]}
    assert test_names and len(run.split["train"]) >= 3
    others = iter(p for p in sorted(tux_images[0].parents[2].glob("*/*/*.png")) if p not in tux_images)
    folder = tmp_path / "b"
    shutil.copytree(tmp_path / "a", folder)
    changed = []
    for png, cap in zip(tux_images, captions, strict=True):
        name = f"images/{png.name}"
        if name in test_names:  # same file name (so the same group and split), other picture and caption
            shutil.copy(next(others), folder / name)
            cap = f"something else entirely: {len(changed)}"
        changed.append([name, cap])
    with open(folder / "pairs.csv", "w", newline="") as f:
        csv.writer(f).writerows([["image", "caption"], *changed])
    run_b = _fit(folder / "pairs.csv", tmp_path / "run_b", store)
    assert {k: v.tolist() for k, v in run_b.split.items()} == {k: v.tolist() for k, v in run.split.items()}
    assert run_b.results["auto"] != run.results["auto"]  # the test split did change
    wa = load_file(str(tmp_path / "run_a" / "model.safetensors"))
    wb = load_file(str(tmp_path / "run_b" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=0)


def test_finetune_starts_exactly_at_the_closed_form_map():
    """With a zero learning rate the trained head is still the Procrustes map it started from."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(60, 8, generator=g)
    x, y = z @ torch.randn(8, 48, generator=g), z @ torch.randn(8, 24, generator=g)
    groups = torch.arange(60)
    train = FeatureSet({"image": x[:40], "text": y[:40]}, {"image": groups[:40], "text": groups[:40]})
    val = FeatureSet({"image": x[40:], "text": y[40:]}, {"image": groups[40:], "text": groups[40:]})
    towers = {"image": TowerConfig("image", "img", FINAL_LAYER, 48, "fp-i"),
              "text": TowerConfig("text", "txt", FINAL_LAYER, 24, "fp-t")}
    start, _ = fit_method("procrustes", towers, train, val, TrainConfig())
    tuned, info = fit_method("finetune", towers, train, val, TrainConfig(epochs=2, lr=0.0, batch_size=16),
                             progress=False)
    assert tuned.towers["image"].projector.type == "lowrank" and info["finetune"]["init"] == "procrustes"
    for m, feats in (("image", x[40:]), ("text", y[40:])):
        torch.testing.assert_close(tuned.project(m, feats), start.project(m, feats), rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="procrustes, cca or ridge"):
        fit_method("finetune", towers, train, val, TrainConfig(), options={"init": "kcca"})


def test_methods_command_lists_the_default_first(capsys):
    from modalign.cli.main import main

    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert out.index("auto (default)") < out.index("asif") < out.index("kcca") < out.index("mlp")
    assert main(["methods", "bridge"]) == 0
    out = capsys.readouterr().out
    assert "bridge+kcca" in out and "mlp" not in out
