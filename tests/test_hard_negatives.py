"""VSE++ max-violation and geodesic-mixup losses: values by hand, finite gradients, matched < shuffled, training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from modalign.align.features import FeatureSet
from modalign.align.hard_negatives import geodesic_mixup_loss, max_violation_loss, slerp
from modalign.align.losses import LOSSES, LossInputs, create_loss
from modalign.errors import ConfigError


def _pairs(n: int = 12, d: int = 10, noise: float = 0.05, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    return a, F.normalize(a + noise * torch.randn(n, d, generator=g), dim=-1)


def test_both_losses_are_registered():
    assert {"vsepp", "geomix"} <= set(LOSSES.list())
    assert "VSE++" in LOSSES.descriptions()["vsepp"] and "mixup" in LOSSES.descriptions()["geomix"]


def test_slerp_stays_on_the_sphere_between_its_ends():
    a, b = _pairs(noise=1.0)
    for lam in (0.0, 0.3, 1.0):
        m = slerp(a, b, torch.full((len(a),), lam))
        assert torch.allclose(m.norm(dim=-1), torch.ones(len(a)), atol=1e-5)
        # the geodesic angle from a is lam times the full angle
        full = torch.acos((a * b).sum(-1).clamp(-1, 1))
        assert torch.allclose(torch.acos((a * m).sum(-1).clamp(-1, 1)), lam * full, atol=1e-3)
    same = slerp(a, a, torch.full((len(a),), 0.5))  # parallel ends: the limit, not a division by zero
    assert torch.isfinite(same).all() and torch.allclose(same, a, atol=1e-5)


def test_max_violation_matches_a_hand_computation():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[math.cos(0.3), math.sin(0.3)], [0.0, 1.0]])
    g = torch.arange(2)
    s = a @ b.t()
    # a_0: margin - s00 + s01; a_1: margin - s11 + s10; b_0 as query: margin - s00 + s10; b_1: margin - s11 + s01
    m = 0.2
    expected = (max(0, m - s[0, 0] + s[0, 1]) + max(0, m - s[1, 1] + s[1, 0])) / 2 \
        + (max(0, m - s[0, 0] + s[1, 0]) + max(0, m - s[1, 1] + s[0, 1])) / 2
    assert max_violation_loss(a, b, g, g, margin=m).item() == pytest.approx(float(expected), rel=1e-5)


def test_max_violation_takes_only_the_hardest_negative():
    a, b = _pairs(n=8, noise=0.6)
    g = torch.arange(8)
    hardest, mean = max_violation_loss(a, b, g, g), max_violation_loss(a, b, g, g, hardest=False)
    assert hardest > mean > 0  # the hardest violation exceeds the average one
    # same-group items are never negatives: two identical groups give no violation from each other
    twin = torch.cat([a[:1], a[:1]])
    assert max_violation_loss(twin, twin, torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long)) == 0


def test_geodesic_mixup_term_is_lower_for_true_pairs_and_harder_than_plain_negatives():
    a, b = _pairs(n=16, noise=0.3)
    g = torch.arange(16)
    scale = torch.tensor(math.log(10.0))
    lam = torch.full((16,), 0.5)
    matched = geodesic_mixup_loss(a, b, g, g, scale, lam)
    shuffled = geodesic_mixup_loss(a, b[torch.randperm(16, generator=torch.Generator().manual_seed(1))], g, g,
                                   scale, lam)
    assert matched < shuffled
    # mixtures in the gap are harder negatives than the other modality's items: lam=1 uses b_j themselves
    assert geodesic_mixup_loss(a, b, g, g, scale, torch.full((16,), 1.0)) < matched


@pytest.mark.parametrize("name", ["vsepp", "geomix"])
def test_gradients_are_finite_and_nonzero(name):
    a, b = _pairs(n=16, noise=0.5)
    a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
    scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    groups = {"image": torch.arange(16), "text": torch.arange(16)}
    torch.manual_seed(0)
    loss = create_loss(name)(LossInputs({"image": a, "text": b}, {}, groups), scale)
    loss.backward()
    for grad in (a.grad, b.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    if name == "geomix":
        assert scale.grad is not None and torch.isfinite(scale.grad)


def test_bad_options_and_unmatched_rows_are_refused():
    with pytest.raises(ConfigError, match="margin > 0"):
        create_loss("vsepp", margin=0)
    with pytest.raises(ConfigError, match="alpha > 0"):
        create_loss("geomix", alpha=-1)
    a, b = _pairs(n=4)
    with pytest.raises(ConfigError, match="matched pair"):
        max_violation_loss(a, b, torch.arange(4), torch.tensor([1, 0, 2, 3]))


def test_vsepp_warmup_switches_from_mean_to_hardest():
    a, b = _pairs(n=8, noise=0.6)
    groups = {"image": torch.arange(8), "text": torch.arange(8)}
    loss = create_loss("vsepp", warmup_epochs=1.0)
    early = loss(LossInputs({"image": a, "text": b}, {}, groups, epoch=0.5), torch.tensor(0.0))
    late = loss(LossInputs({"image": a, "text": b}, {}, groups, epoch=1.0), torch.tensor(0.0))
    g = torch.arange(8)
    assert early.item() == pytest.approx(max_violation_loss(a, b, g, g, hardest=False).item(), rel=1e-5)
    assert late.item() == pytest.approx(max_violation_loss(a, b, g, g).item(), rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vsepp", "geomix"])
def test_training_with_the_loss_aligns_a_hidden_linear_map(name):
    from modalign.align.projectors import ProjectorConfig
    from modalign.align.trainer import TrainConfig, evaluate_features, train
    from modalign.model import AlignedModel, TowerConfig

    g = torch.Generator().manual_seed(0)
    n, d = 400, 16
    x = torch.randn(n, d, generator=g)
    y = x @ torch.randn(d, 12, generator=g) + 0.02 * torch.randn(n, 12, generator=g)  # text = map of image
    groups = torch.arange(n)
    train_fs = FeatureSet({"image": x[:300], "text": y[:300]}, {"image": groups[:300], "text": groups[:300]})
    val_fs = FeatureSet({"image": x[300:], "text": y[300:]}, {"image": groups[300:], "text": groups[300:]})
    proj = ProjectorConfig(type="linear", out_dim=16)
    towers = {"image": TowerConfig("image", "x", "final", d, "-", proj),
              "text": TowerConfig("text", "y", "final", 12, "-", proj)}
    model = AlignedModel(towers)
    before = evaluate_features(model, val_fs)["mean_recall@1"]
    train(model, train_fs, val_fs, TrainConfig(epochs=40, batch_size=64, patience=0, loss=name), progress=False)
    after = evaluate_features(model, val_fs)["mean_recall@1"]
    assert after > max(0.35, 5 * before)  # chance is 1/100; InfoNCE reaches ~0.53 here
