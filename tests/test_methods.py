"""Alignment methods beyond the MLP baseline: losses, samplers, heads, CCA, evaluators, recipes."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from modalign.align.closed_form import cca_directions, fit_cca
from modalign.align.evaluators import RetrievalEvaluator, ZeroShotEvaluator
from modalign.align.features import FeatureSet
from modalign.align.losses import (
    LossInputs,
    StructureLoss,
    clip_loss,
    create_loss,
    list_losses,
    multi_positive_clip_loss,
    register_loss,
    sigmoid_loss,
    structure_regulariser,
)
from modalign.align.projectors import ProjectorConfig, create_projector
from modalign.align.samplers import MultiPositiveSampler, iter_batches
from modalign.align.trainer import TrainConfig, evaluate_features, train
from modalign.errors import ConfigError
from modalign.model import AlignedModel, TowerConfig
from modalign.recipes import list_recipes, load_recipe, recipe_info
from modalign.utils.config import merge_dicts as merge_config
from modalign.workflows.fit import FitConfig
from modalign.workflows.methods import fit_method, list_methods


def _correlated(n: int, seed: int = 0, captions_per_image: int = 1, noise: float = 0.3):
    """image (n, 48) and text (n * cpi, 24) features sharing an 8-d latent; groups = image index."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 8, generator=g)
    wx, wy = torch.randn(8, 48, generator=g), torch.randn(8, 24, generator=g)
    x = z @ wx + noise * torch.randn(n, 48, generator=g)
    zt = z.repeat_interleave(captions_per_image, 0)
    y = zt @ wy + noise * torch.randn(len(zt), 24, generator=g)
    groups = torch.arange(n)
    return x, y, groups, groups.repeat_interleave(captions_per_image)


def _split(x, y, gx, gy, n_train):
    tr = FeatureSet({"image": x[:n_train], "text": y[gy < n_train]}, {"image": gx[:n_train], "text": gy[gy < n_train]})
    va = FeatureSet({"image": x[n_train:], "text": y[gy >= n_train]}, {"image": gx[n_train:], "text": gy[gy >= n_train]})
    return tr, va


def _towers(type_="mlp", out_dim=32, **proj):
    p = ProjectorConfig(type=type_, out_dim=out_dim, hidden_dim=64, **proj)
    return {"image": TowerConfig("image", "img-enc", "final", 48, "fp-i", p),
            "text": TowerConfig("text", "txt-enc", "final", 24, "fp-t", p)}


# ---- losses ----------------------------------------------------------------------------------------
def test_loss_registry_and_errors():
    assert {"infonce", "multi-positive", "sigmoid", "structure"} <= set(list_losses())
    with pytest.raises(ConfigError, match="unknown loss 'nope'; known: .*infonce"):
        create_loss("nope")
    with pytest.raises(ConfigError, match="bad options .*'sigmoid'"):
        create_loss("sigmoid", init_bais=-3)
    with pytest.raises(ConfigError, match="divergence must be"):
        create_loss("structure", divergence="l2")

    @register_loss("test-double-infonce")
    class Doubled(type(create_loss("infonce"))):
        def pair(self, a, b, ga, gb, scale):
            return 2 * clip_loss(a, b, scale)

    a, b, g = torch.randn(5, 8), torch.randn(5, 8), torch.arange(5)
    batch = LossInputs({"image": a, "text": b}, {}, {"image": g, "text": g})
    scale = torch.tensor(2.0)
    assert create_loss("test-double-infonce")(batch, scale).item() == pytest.approx(2 * clip_loss(a, b, scale).item())


def test_multi_positive_equals_infonce_for_one_item_per_group_and_uses_soft_targets():
    a, b, g = torch.randn(7, 16), torch.randn(7, 16), torch.arange(7)
    scale = torch.tensor(math.log(20.0))
    assert multi_positive_clip_loss(a, b, g, g, scale).item() == pytest.approx(clip_loss(a, b, scale).item(), rel=1e-5)
    # two images, three captions: captions 0,1 belong to image 0, caption 2 to image 1
    img, cap = torch.randn(2, 4), torch.randn(3, 4)
    gi, gc = torch.tensor([0, 1]), torch.tensor([0, 0, 1])
    logits = 20.0 * F.normalize(img, dim=1) @ F.normalize(cap, dim=1).t()  # (2, 3)
    lp_i, lp_c = logits.log_softmax(1), logits.t().log_softmax(1)
    i2c = -(0.5 * (lp_i[0, 0] + lp_i[0, 1]) + lp_i[1, 2]) / 2
    c2i = -(lp_c[0, 0] + lp_c[1, 0] + lp_c[2, 1]) / 3
    got = multi_positive_clip_loss(img, cap, gi, gc, scale)
    assert got.item() == pytest.approx((0.5 * (i2c + c2i)).item(), rel=1e-5)


def test_sigmoid_loss_matches_siglip_definition_and_defaults():
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    g = torch.tensor([0, 1, 2, 3])
    scale, bias = torch.tensor(math.log(10.0)), torch.tensor(-10.0)
    cos = F.normalize(a, dim=1) @ F.normalize(b, dim=1).t()
    z = 2 * torch.eye(4) - 1
    manual = -torch.log(torch.sigmoid(z * (10.0 * cos - 10.0))).sum() / 4
    assert sigmoid_loss(a, b, g, g, scale, bias).item() == pytest.approx(manual.item(), rel=1e-5)
    loss = create_loss("sigmoid")
    assert loss.bias.item() == -10.0 and loss.bias.requires_grad
    assert loss.default_temperature == pytest.approx(0.1)  # t' = log 10
    assert loss.multi_positive


def test_structure_regulariser_is_zero_for_same_geometry_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 20, generator=g)
    q, _ = torch.linalg.qr(torch.randn(20, 20, generator=g))
    assert structure_regulariser(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert structure_regulariser(x, 3.0 * x @ q).item() == pytest.approx(0.0, abs=1e-5)  # scale + rotation
    z = torch.randn(32, 16, generator=g, requires_grad=True)
    for options in ({}, {"divergence": "kl"}, {"levels": 3, "level_weighting": "inverse"},
                    {"temperatures": [0.05, 0.5]}):
        reg = structure_regulariser(x, z, **options)
        assert reg.item() > 1e-3, options
    frozen = x.clone().requires_grad_(True)
    structure_regulariser(frozen, z).backward()
    assert frozen.grad is None and z.grad is not None and z.grad.abs().sum() > 0  # only the projection learns
    assert structure_regulariser(x, z, divergence="js").item() <= math.log(2) + 1e-6


def test_structure_loss_warms_up_lambda_and_adds_the_regulariser():
    loss = create_loss("structure", weight=10.0, warmup_epochs=4)
    assert isinstance(loss, StructureLoss)
    assert [loss.weight_at(e) for e in (0, 1, 2, 4, 9)] == [0.0, 2.5, 5.0, 10.0, 10.0]
    x, y, gx, gy = _correlated(16)
    emb = {"image": torch.randn(16, 8), "text": torch.randn(16, 8)}
    scale = torch.tensor(math.log(1 / 0.07))
    early = LossInputs(emb, {"image": x, "text": y}, {"image": gx, "text": gy}, epoch=0.0)
    late = LossInputs(emb, {"image": x, "text": y}, {"image": gx, "text": gy}, epoch=10.0)
    base = clip_loss(emb["image"], emb["text"], scale).item()
    assert loss(early, scale).item() == pytest.approx(base, rel=1e-5)
    got = loss(late, scale).item()
    reg = late.parts["structure"].item()
    assert reg > 0 and got == pytest.approx(base + 10.0 * reg, rel=1e-5)
    assert create_loss("structure", base="sigmoid").multi_positive  # inherits from its base


# ---- samplers and training ---------------------------------------------------------------------------
def test_multi_positive_sampler_draws_whole_groups_up_to_m_items():
    counts = torch.tensor([1, 2, 3, 5, 4, 1, 2, 6, 3, 3])  # captions per image
    gy = torch.repeat_interleave(torch.arange(10), counts)
    gx = torch.arange(10)
    fs = FeatureSet({"image": torch.randn(10, 3), "text": torch.randn(len(gy), 3)}, {"image": gx, "text": gy})
    sampler = MultiPositiveSampler(fs, torch.Generator().manual_seed(0), items_per_group=3)
    batches = list(iter_batches(sampler, 4))
    assert len(batches) == 3
    seen_groups = []
    for b in batches:
        img_groups, txt_groups = gx[b["image"]], gy[b["text"]]
        assert sorted(set(img_groups.tolist())) == sorted(set(txt_groups.tolist()))  # whole groups only
        seen_groups += img_groups.tolist()
        per = torch.bincount(txt_groups, minlength=10)
        for grp in set(img_groups.tolist()):
            assert per[grp] == min(int(counts[grp]), 3)
    assert sorted(seen_groups) == list(range(10))  # every group once per epoch
    other = [r["text"] for r in iter_batches(sampler, 4)]
    assert not all(torch.equal(u, v) for u, v in zip(other, [b["text"] for b in batches], strict=True))


def test_multi_positive_training_learns_and_infonce_refuses_several_items_per_group():
    tr, va = _split(*_correlated(200, captions_per_image=3), n_train=160)
    cfg = TrainConfig(epochs=20, batch_size=32, patience=0, loss="multi-positive", items_per_group=3)
    model = AlignedModel(_towers())
    before = evaluate_features(model, va)["mean_recall@1"]
    result = train(model, tr, va, cfg, progress=False)
    assert evaluate_features(model, va)["mean_recall@1"] > before + 0.2
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    with pytest.raises(ConfigError, match="loss='multi-positive'"):
        train(AlignedModel(_towers()), tr, va, replace(cfg, loss="infonce"), progress=False)


def test_sigmoid_training_learns_bias_outside_the_saved_model(tmp_path):
    tr, va = _split(*_correlated(200), n_train=160)
    model, info = fit_method("mlp", _towers(), tr, va, TrainConfig(epochs=15, batch_size=32, patience=0,
                                                                    loss="sigmoid"), progress=False)
    hist = info["result"].history
    assert hist[0]["temperature"] == pytest.approx(0.1, rel=0.2)  # SigLIP's t' = log 10 start
    assert evaluate_features(model, va)["mean_recall@1"] > 0.3  # chance 1/40
    assert set(model.state_dict()) == set(AlignedModel(_towers()).state_dict())  # no loss parameters in it
    model.save_pretrained(tmp_path / "m")
    AlignedModel.from_pretrained(tmp_path / "m")  # loads with no loss parameters in the file


def test_default_loss_is_infonce_at_clip_temperature():
    tr, va = _split(*_correlated(120), n_train=100)
    cfg = TrainConfig(epochs=4, batch_size=32, patience=0)
    m1, m2 = AlignedModel(_towers()), AlignedModel(_towers())
    m2.load_state_dict(m1.state_dict())
    train(m1, tr, va, cfg, progress=False)
    train(m2, tr, va, replace(cfg, loss="infonce", init_temperature=0.07, loss_options={}), progress=False)
    for k, v in m1.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k


@pytest.mark.parametrize("loss", ["structure", "sigmoid"])
def test_other_losses_train_to_well_above_chance(loss):
    tr, va = _split(*_correlated(200), n_train=160)
    cfg = TrainConfig(epochs=15, batch_size=32, patience=0, loss=loss)
    model, info = fit_method("linear", _towers(), tr, va, cfg, progress=False)
    assert evaluate_features(model, va)["mean_recall@1"] > 0.3
    if loss == "structure":
        assert info["result"].history[-1]["train_structure"] > 0  # the regulariser's value is logged


# ---- heads -----------------------------------------------------------------------------------------
def test_lowrank_and_star_heads(tmp_path):
    x = torch.randn(6, 48)
    low = create_projector(48, ProjectorConfig(type="lowrank", out_dim=16, rank=4, dropout=0.0)).eval()
    assert low(x).shape == (6, 16)
    assert torch.allclose(low(x), low.linear(low.norm(low.standardize(x))))  # the residual starts at zero
    assert sum(p.numel() for p in low.down.parameters()) == 48 * 4 + 4
    star = create_projector(48, ProjectorConfig(type="star", out_dim=16, hidden_dim=32, residual=False)).eval()
    assert star(x).shape == (6, 16)
    h = torch.nn.functional.relu6(star.gate(star.norm(x))) * star.value(star.norm(x))
    assert torch.allclose(star(x), star.out(h), atol=1e-6)  # the gated product of two branches
    with pytest.raises(ConfigError, match="rank >= 1"):
        create_projector(48, ProjectorConfig(type="lowrank", rank=0))
    tr, va = _split(*_correlated(200), n_train=160)
    for head in ("lowrank", "star"):
        model, _ = fit_method(head, _towers(rank=8), tr, va, TrainConfig(epochs=12, batch_size=32, patience=0),
                              progress=False)
        assert evaluate_features(model, va)["mean_recall@1"] > 0.3, head
        model.save_pretrained(tmp_path / head)
        loaded = AlignedModel.from_pretrained(tmp_path / head)
        assert torch.equal(loaded.project("text", va.features["text"]), model.project("text", va.features["text"]))


# ---- CCA ---------------------------------------------------------------------------------------------
def test_cca_directions_whiten_and_correlate():
    x, y, _, _ = _correlated(400, noise=0.1)
    xc, yc = (x - x.mean(0)).double(), (y - y.mean(0)).double()
    wx, wy, corr = cca_directions(xc, yc, reg=1e-6)
    u, v = xc @ wx[:, :8], yc @ wy[:, :8]  # (n, 8): the shared latent is 8-d
    cov_u = u.t() @ u / (len(u) - 1)
    assert torch.allclose(cov_u, torch.eye(8, dtype=cov_u.dtype), atol=1e-3)  # whitened
    assert corr[:8].min() > 0.95 and corr[8] < 0.6  # 8 strong canonical pairs, then noise
    per_dim = (u * v).sum(0) / (len(u) - 1)
    assert torch.allclose(per_dim, corr[:8], atol=1e-4)


def test_cca_method_aligns_saves_and_loads(tmp_path):
    tr, va = _split(*_correlated(400), n_train=300)
    model, info = fit_method("cca", _towers(), tr, va, TrainConfig())
    assert "cca" in list_methods() and model.metadata["method"] == "cca"
    assert info["cca_dim"] == 24  # every candidate dim is clipped to min(d_image=48, d_text=24, n - 1)
    assert evaluate_features(model, va)["mean_recall@1"] > 0.4  # chance 0.01
    model.save_pretrained(tmp_path / "cca")
    loaded = AlignedModel.from_pretrained(tmp_path / "cca")
    assert type(loaded.projectors["image"]).__name__ == "LinearProjector"
    assert torch.equal(loaded.project("image", va.features["image"]), model.project("image", va.features["image"]))
    fixed = fit_cca(tr, None, regs=(0.1,), dims=(6,))
    assert fixed.info == {"cca_reg": 0.1, "cca_dim": 6, "cca_top_corr": pytest.approx(fixed.info["cca_top_corr"])}
    assert {m.out_dim for m in fixed.maps.values()} == {6}


# ---- evaluators --------------------------------------------------------------------------------------
def test_evaluators_are_logged_every_epoch_and_can_be_monitored():
    x, y, gx, gy = _correlated(240)
    tr, va = _split(x, y, gx, gy, n_train=200)
    labels = (x[200:, 0] > 0).long()  # a 2-class task on held-out images
    proto = torch.stack([y[200:][labels == c].mean(0) for c in (0, 1)])  # stand-in "prompt" features
    zs = ZeroShotEvaluator.from_prompt_features(x[200:], labels, proto, n_classes=2)
    evaluators = {"zs": zs, "again": RetrievalEvaluator(va)}
    cfg = TrainConfig(epochs=6, batch_size=32, patience=0, monitor="zs_acc1")
    model = AlignedModel(_towers())
    result = train(model, tr, va, cfg, progress=False, evaluators=evaluators)
    rec = result.history[-1]
    assert {"zs_acc1", "zs_acc5", "zs_mean_per_class_recall", "again_mean_recall@1"} <= set(rec)
    assert rec["again_mean_recall@1"] == pytest.approx(rec["val_mean_recall@1"])  # same data, same numbers
    best = max(r["zs_acc1"] for r in result.history)
    assert zs(model)["acc1"] == pytest.approx(best)  # the kept weights are the best by the monitor
    assert result.best_metrics["zs_acc1"] == pytest.approx(best)
    with pytest.raises(ConfigError, match="monitor 'nope' is not a metric"):
        train(AlignedModel(_towers()), tr, va, replace(cfg, monitor="nope"), progress=False)
    with pytest.raises(ConfigError, match="whole number of templates"):
        ZeroShotEvaluator.from_prompt_features(x[:4], labels[:4], proto[:1].repeat(3, 1), n_classes=2)


# ---- recipes -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(list_recipes()))
def test_every_shipped_recipe_is_a_valid_fit_config(name):
    cfg = FitConfig.from_dict(load_recipe(name))
    info = recipe_info(name)
    assert info["description"] and info["source"]
    assert cfg.method in list_methods() and all(b in list_methods() for b in cfg.baselines)
    loss = create_loss(cfg.train.loss, **cfg.train.loss_options)
    assert cfg.train.items_per_group == 1 or loss.multi_positive
    head = create_projector(16, replace(cfg.train.projector, hidden_dim=min(cfg.train.projector.hidden_dim, 64)))
    assert head(torch.randn(3, 16)).shape == (3, cfg.train.projector.out_dim)
    assert set(cfg.encoders) == {"image", "text"} and all(cfg.encoders.values())
    assert FitConfig.from_dict(cfg.to_dict()) == cfg


def test_recipe_contents_loader_and_merge(tmp_path):
    assert {"default", "freeze-align", "structure", "sail"} <= set(list_recipes())
    assert FitConfig.from_dict(load_recipe("default")) == FitConfig()  # the defaults, spelled out
    sail = FitConfig.from_dict(load_recipe("sail"))
    assert (sail.train.loss, sail.train.projector.type, sail.train.init_temperature) == ("sigmoid", "star", 0.05)
    structure = FitConfig.from_dict(load_recipe("structure"))
    assert structure.train.loss == "structure" and structure.train.loss_options["weight"] == 10.0
    assert FitConfig.from_dict(load_recipe("freeze-align")).encoders["text"].endswith("all-roberta-large-v1")
    path = tmp_path / "mine.toml"
    path.write_text('method = "linear"\n[recipe]\ndescription = "x"\n[train]\nepochs = 3\n')
    assert load_recipe(path) == {"method": "linear", "train": {"epochs": 3}}
    with pytest.raises(ConfigError, match="unknown recipe 'nope'; known: default"):
        load_recipe("nope")
    (tmp_path / "bad.toml").write_text("method = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_recipe(tmp_path / "bad.toml")
    merged = merge_config({"train": {"lr": 1.0, "projector": {"type": "mlp"}}, "method": "mlp"},
                          {"train": {"projector": {"out_dim": 8}}, "method": "star"})
    assert merged == {"train": {"lr": 1.0, "projector": {"type": "mlp", "out_dim": 8}}, "method": "star"}
