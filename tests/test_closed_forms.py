"""Closed-form maps on embeddings: kernel CCA (exact and Nystrom), ASIF, the label bridge, ensembles;
each as a registered projector that saves and reloads to the same embeddings."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modalign.align.ensemble import EnsembleMap, ModuleMap, load_feature_map
from modalign.align.kernel_cca import KernelCCAConfig, fit_kernel_cca
from modalign.align.label_bridge import BridgeConfig, bridge_prompts, fit_label_bridge
from modalign.align.map_utils import paired_moments
from modalign.align.projectors import ProjectorConfig, create_projector
from modalign.align.relative import RelativeConfig, fit_relative
from modalign.encoders.label_head import LabelHead
from modalign.errors import ConfigError
from modalign.evaluate.retrieval import retrieval_metrics
from modalign.model import AlignedModel, TowerConfig


def _nonlinear_pairs(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """x (n, 32) and y (n, 16) tied through a shared 6-d latent z: x sees z only through z * z (a
    quadratic relation no linear map recovers), y sees z linearly; rows are i.i.d., so any slice of
    them is a fair held-out set for a map fitted on another slice."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 6, generator=g)
    x = (z[:, :, None] * z[:, None, :]).flatten(1) @ torch.randn(36, 32, generator=g)
    y = z @ torch.randn(6, 16, generator=g)
    return x + 0.05 * torch.randn(n, 32, generator=g), y + 0.05 * torch.randn(n, 16, generator=g)


def _r1(a: torch.Tensor, b: torch.Tensor) -> float:
    g = torch.arange(len(a)).numpy()
    return retrieval_metrics(a.float(), b.float(), g, g)["mean_recall@1"]


def _roundtrip(fm, in_dim: int, x: torch.Tensor, tmp_path, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(map output, output of the projector rebuilt from its saved config + safetensors)."""
    cfg = fm.projector_config()
    tower = TowerConfig("image", "enc", "final", in_dim, "fp", cfg)
    model = AlignedModel({"image": tower})
    load_feature_map(model.projectors["image"], fm)
    model.save_pretrained(tmp_path / name)
    loaded = AlignedModel.from_pretrained(tmp_path / name)
    assert loaded.towers["image"].projector == cfg
    return fm.project(x).float(), loaded.project("image", x, normalize=False)


def test_kernel_cca_finds_a_nonlinear_relation_and_nystrom_approximates_it():
    x, y = _nonlinear_pairs(700)
    x, y, xt, yt = x[:500], y[:500], x[500:], y[500:]
    exact_x, exact_y, corr = fit_kernel_cca(x[:300], y[:300], KernelCCAConfig(degree=2, reg=0.1))
    assert len(exact_x.landmarks) == 300 and corr[0] > 0.9 and bool((corr[:-1] >= corr[1:]).all())
    lin_x, lin_y, _ = fit_kernel_cca(x[:300], y[:300], KernelCCAConfig(degree=1, coef0=0.0, reg=0.1))
    exact, linear = _r1(exact_x.project(xt), exact_y.project(yt)), _r1(lin_x.project(xt), lin_y.project(yt))
    assert exact > linear + 0.1, (exact, linear)  # the quadratic term is only reachable by the kernel
    nx, ny, _ = fit_kernel_cca(x, y, KernelCCAConfig(degree=2, reg=0.1, n_landmarks=150, chunk=64))
    assert len(nx.landmarks) == 150 and nx.weight.shape[0] == 150
    assert _r1(nx.project(xt), ny.project(yt)) > linear


def test_kernel_cca_refuses_bad_settings():
    x, y = _nonlinear_pairs(10)
    with pytest.raises(ConfigError, match="degree >= 1"):
        fit_kernel_cca(x, y, KernelCCAConfig(degree=0))
    with pytest.raises(ConfigError, match=">= 3 paired rows"):
        fit_kernel_cca(x[:2], y[:2])


def test_chunked_moments_equal_the_whole_matrix():
    x, y = _nonlinear_pairs(103)
    x, y = x.double(), y.double()
    mx, my, cxx, cyy, cxy = paired_moments(lambda a: a.tanh(), lambda b: b * 2, x, y, chunk=10)
    xc, yc = x.tanh() - x.tanh().mean(0), 2 * y - (2 * y).mean(0)
    torch.testing.assert_close(mx, x.tanh().mean(0))
    torch.testing.assert_close(cxx, xc.t() @ xc / 102)
    torch.testing.assert_close(cxy, xc.t() @ yc / 102)
    torch.testing.assert_close(cyy, yc.t() @ yc / 102)
    assert my.shape == (16,)


def test_asif_profiles_are_sparse_and_match_pairs():
    x, y = _nonlinear_pairs(300)
    mx, my = fit_relative(x[:200], y[:200], RelativeConfig(topk=20, power=3.0))
    px, py = mx.project(x[200:]), my.project(y[200:])
    assert px.shape == (100, 200) and int((px > 0).sum(1).max()) <= 20 and bool((px >= 0).all())
    assert _r1(px, py) > 5 / 100  # far above chance (1 / 100)
    capped, _ = fit_relative(x, y, RelativeConfig(max_anchors=50))
    assert len(capped.anchors) == 50


def test_label_bridge_is_softmax_weighted_class_text():
    g = torch.Generator().manual_seed(0)
    head = LabelHead(torch.randn(5, 8, generator=g), torch.randn(5, generator=g), tuple("abcde"))
    class_text = torch.randn(5, 4, generator=g)
    x, y = torch.randn(20, 8, generator=g), torch.randn(20, 4, generator=g)
    image_map, text_map = fit_label_bridge(head, class_text, x, y, BridgeConfig(temperature=2.0))
    expected = torch.softmax(head.logits(x) / 2.0, -1) @ class_text
    torch.testing.assert_close(image_map.project(x), expected - expected.mean(0))
    torch.testing.assert_close(text_map.project(y), y - y.mean(0))
    assert bridge_prompts(["cat", "dog"]) == ["a cat.", "a dog."]
    with pytest.raises(ConfigError, match="class-prompt embeddings"):
        fit_label_bridge(head, class_text[:3], x, y)
    with pytest.raises(ConfigError, match="needs a"):
        bridge_prompts(["cat"], "a photo")


def test_ensemble_cosine_is_the_weighted_sum_of_part_cosines():
    x, y = _nonlinear_pairs(200)
    kx, ky, _ = fit_kernel_cca(x, y, KernelCCAConfig(degree=2))
    ax, ay = fit_relative(x, y, RelativeConfig(topk=30))
    ex, ey = EnsembleMap([kx, ax], [0.25, 0.75]), EnsembleMap([ky, ay], [0.25, 0.75])
    a, b = ex.project(x[:7]).float(), ey.project(y[:7]).float()
    part = [F.normalize(m.project(v).float(), dim=-1) for m, v in ((kx, x[:7]), (ky, y[:7]), (ax, x[:7]), (ay, y[:7]))]
    expected = 0.25 * part[0] @ part[1].t() + 0.75 * part[2] @ part[3].t()
    torch.testing.assert_close(a @ b.t(), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="one weight per part"):
        EnsembleMap([kx, ax], [1.0])
    with pytest.raises(ConfigError, match="not all 0"):
        EnsembleMap([kx], [0.0])


def test_every_closed_form_projector_round_trips(tmp_path):
    x, y = _nonlinear_pairs(120)
    kx, _, _ = fit_kernel_cca(x, y, KernelCCAConfig(n_landmarks=60))
    rx, _ = fit_relative(x, y, RelativeConfig(topk=10))
    head = LabelHead(torch.randn(7, 32), torch.randn(7), tuple("abcdefg"))
    bx, cy = fit_label_bridge(head, torch.randn(7, 16), x, y)
    mlp_cfg = ProjectorConfig(type="mlp", out_dim=8, hidden_dim=16)
    trained = ModuleMap(create_projector(32, mlp_cfg).eval(), mlp_cfg)
    maps = {"kernel": kx, "relative": rx, "label-bridge": bx, "ensemble": EnsembleMap([kx, bx, trained], [1, 2, 3])}
    for name, fm in maps.items():
        direct, reloaded = _roundtrip(fm, 32, x[:9], tmp_path, name)
        torch.testing.assert_close(reloaded, direct, rtol=1e-5, atol=1e-5)
    direct, reloaded = _roundtrip(cy, 16, y[:9], tmp_path, "centre")
    torch.testing.assert_close(reloaded, direct, rtol=1e-5, atol=1e-5)


def test_option_typos_are_refused():
    bad = ProjectorConfig(type="kernel", out_dim=4, options={"n_landmarks": 3, "degre": 2})
    with pytest.raises(ConfigError, match="degre"):
        create_projector(8, bad)
    with pytest.raises(ConfigError, match="sum of its parts"):
        create_projector(8, ProjectorConfig(type="ensemble", out_dim=5, options={
            "parts": [ProjectorConfig(type="linear", out_dim=4).to_dict()], "weights": [1.0]}))

