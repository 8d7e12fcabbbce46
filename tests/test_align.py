"""Projectors, loss, sampler, schedule and training on cached features."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from modalign.align.closed_form import fit_procrustes, fit_ridge
from modalign.align.features import FeatureSet, GroupSampler
from modalign.align.losses import clip_loss
from modalign.align.projectors import ProjectorConfig, create_projector
from modalign.align.trainer import TrainConfig, evaluate_features, lr_at, train
from modalign.errors import ConfigError
from modalign.model import AlignedModel, TowerConfig
from modalign.workflows.methods import fit_method, linear_model, list_methods


def _correlated(n: int, seed: int = 0, captions_per_image: int = 1):
    """Two 'modalities' that share a latent: image (n, 48), text (n * cpi, 24)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 8, generator=g)
    wx, wy = torch.randn(8, 48, generator=g), torch.randn(8, 24, generator=g)
    x = z @ wx + 0.3 * torch.randn(n, 48, generator=g)
    zt = z.repeat_interleave(captions_per_image, 0)
    y = zt @ wy + 0.3 * torch.randn(len(zt), 24, generator=g)
    groups = torch.arange(n)
    return x, y, groups, groups.repeat_interleave(captions_per_image)


def _split(x, y, gx, gy, n_train):
    tr = FeatureSet({"image": x[:n_train], "text": y[gy < n_train]}, {"image": gx[:n_train], "text": gy[gy < n_train]})
    va = FeatureSet({"image": x[n_train:], "text": y[gy >= n_train]}, {"image": gx[n_train:], "text": gy[gy >= n_train]})
    return tr, va


def _towers(out_dim=32, type_="mlp"):
    proj = ProjectorConfig(type=type_, out_dim=out_dim, hidden_dim=64)
    return {"image": TowerConfig("image", "img-enc", "final", 48, "fp-i", proj),
            "text": TowerConfig("text", "txt-enc", "final", 24, "fp-t", proj)}


def test_projector_registry_and_shapes():
    x = torch.randn(5, 48)
    for t in ("linear", "mlp"):
        p = create_projector(48, ProjectorConfig(type=t, out_dim=16, hidden_dim=32, depth=3))
        assert p(x).shape == (5, 16)
    with pytest.raises(ConfigError, match="unknown projector type 'nope'; known: .*identity, .*linear, .*mlp"):
        create_projector(48, ProjectorConfig(type="nope"))
    with pytest.raises(ConfigError, match="depth >= 2"):
        create_projector(48, ProjectorConfig(type="mlp", depth=1))
    with pytest.raises(ConfigError, match="unknown projector option"):
        ProjectorConfig.from_dict({"widht": 3})


def test_clip_loss_matches_definition():
    a, b = torch.randn(6, 8), torch.randn(6, 8)
    scale = torch.tensor(math.log(10.0))
    an, bn = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    logits = 10.0 * an @ bn.t()
    manual = 0.5 * (-(logits.log_softmax(1).diag().mean()) - logits.t().log_softmax(1).diag().mean())
    assert clip_loss(a, b, scale).item() == pytest.approx(manual.item(), rel=1e-5)
    # perfectly matched, well separated pairs at a high scale: loss near zero
    assert clip_loss(torch.eye(6), torch.eye(6), torch.tensor(math.log(100.0))).item() < 1e-3


def test_group_sampler_one_item_per_group_and_true_pairs():
    x, y, gx, gy = _correlated(10, captions_per_image=3)
    fs = FeatureSet({"image": x, "text": y}, {"image": gx, "text": gy})
    sampler = GroupSampler(fs, torch.Generator().manual_seed(0))
    rows = sampler.epoch()
    assert sorted(gx[rows["image"]].tolist()) == list(range(10))
    assert torch.equal(gx[rows["image"]], gy[rows["text"]])  # aligned across modalities
    other = sampler.epoch()
    assert not torch.equal(rows["image"], other["image"])  # a new order each epoch


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(lr=1.0, warmup_frac=0.1, min_lr_frac=0.1)
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[0] < lrs[5] < lrs[9] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1, abs=0.01)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))


@pytest.mark.parametrize("projector", ["mlp", "linear"])
def test_training_learns_and_is_reproducible(projector):
    tr, va = _split(*_correlated(300, captions_per_image=2), n_train=240)
    cfg = TrainConfig(epochs=25, batch_size=64, patience=0, seed=3)
    before = evaluate_features(AlignedModel(_towers(type_=projector)), va)
    m1, info = fit_method(projector, _towers(), tr, va, cfg, progress=False)
    m2, _ = fit_method(projector, _towers(), tr, va, cfg, progress=False)
    after = evaluate_features(m1, va)
    assert after["mean_recall@1"] > before["mean_recall@1"] + 0.2
    assert after["image_retrieval_recall@5"] > 0.5  # chance is 5/60
    for k, v in m1.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k  # same seed, same weights
    hist = info["result"].history
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert abs(hist[-1]["temperature"] - 0.07) > 1e-4  # the temperature was learned


def test_early_stopping_keeps_best_weights():
    tr, va = _split(*_correlated(120), n_train=100)
    model = AlignedModel(_towers())
    result = train(model, tr, va, TrainConfig(epochs=200, batch_size=32, patience=3, lr=3e-3), progress=False)
    assert len(result.history) < 200
    best = max(r["val_mean_recall@1"] for r in result.history)
    assert evaluate_features(model, va)["mean_recall@1"] == pytest.approx(best)


def test_closed_form_baselines_align_and_save(tmp_path):
    tr, va = _split(*_correlated(400), n_train=300)
    for fit in (fit_ridge, fit_procrustes):
        maps = fit(tr, va)
        assert evaluate_features(maps, va)["mean_recall@1"] > 0.3  # chance is 0.01
        model = linear_model(_towers(), maps, fit.__name__)
        assert evaluate_features(model, va)["mean_recall@1"] == pytest.approx(
            evaluate_features(maps, va)["mean_recall@1"], abs=0.02)  # float32 model vs float64 maps
        model.save_pretrained(tmp_path / fit.__name__)
        loaded = AlignedModel.from_pretrained(tmp_path / fit.__name__)
        assert torch.equal(loaded.project("image", va.features["image"]), model.project("image", va.features["image"]))
    assert {"mlp", "linear", "ridge", "procrustes"} <= set(list_methods())


def test_training_rejects_too_little_data():
    x, y, gx, gy = _correlated(1)
    fs = FeatureSet({"image": x, "text": y}, {"image": gx, "text": gy})
    with pytest.raises(ConfigError, match="at least 2 training groups"):
        train(AlignedModel(_towers()), fs, None, TrainConfig(epochs=1), progress=False)


def test_train_config_round_trip_and_unknown_keys():
    cfg = TrainConfig(epochs=7, projector=replace(ProjectorConfig(), out_dim=64))
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown training option"):
        TrainConfig.from_dict({"epoch": 3})


@pytest.mark.parametrize("temperature_inv", [20.0, 500.0])  # 500: logits spread past the one-exp path's range
def test_fused_clip_loss_matches_cross_entropy_value_and_gradient(temperature_inv):
    torch.manual_seed(0)
    a = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(math.log(temperature_inv), dtype=torch.float64, requires_grad=True)
    ours = clip_loss(a, b, scale)
    grads = torch.autograd.grad(ours, (a, b, scale))
    an, bn = torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(b, dim=-1)
    logits = scale.exp() * an @ bn.t()
    target = torch.arange(7)
    ref = 0.5 * (torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.t(), target))
    ref_grads = torch.autograd.grad(ref, (a, b, scale))
    # float64 throughout: the fused and the reference formula differ only in the order of operations
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-6, atol=1e-8)


# ---- non-finite input and loss (issue 16, item 1) -----------------------------------------------------
@pytest.mark.parametrize("method", ["mlp", "procrustes", "ridge"])
def test_nan_features_are_refused_naming_the_rows(method):
    from modalign.errors import NonFiniteError

    tr, va = _split(*_correlated(60), n_train=50)
    tr.features["image"][[4, 9]] = float("nan")
    with pytest.raises(NonFiniteError, match=r"training image features hold NaN/inf in row\(s\) 4, 9 of 50"):
        fit_method(method, _towers(), tr, va, TrainConfig(epochs=2), progress=False)


def test_a_loss_that_overflows_stops_training_with_a_clear_error():
    from modalign.align.losses import LOSSES, InfoNCELoss, register_loss
    from modalign.errors import NonFiniteError

    @register_loss("test-overflowing")
    class Overflowing(InfoNCELoss):
        """InfoNCE times a factor that overflows float32 from the second epoch on"""

        def forward(self, batch, logit_scale):
            return super().forward(batch, logit_scale) * torch.tensor(1e30) ** (1 + int(batch.epoch))

    tr, va = _split(*_correlated(80), n_train=64)
    model = AlignedModel(_towers())
    try:
        with pytest.raises(NonFiniteError, match=r"loss became inf at epoch 1, step 4"):
            train(model, tr, va, TrainConfig(epochs=3, batch_size=16, loss="test-overflowing"), progress=False)
    finally:
        LOSSES.remove("test-overflowing")
    assert all(torch.isfinite(p).all() for p in model.state_dict().values())  # stopped before the weights
