"""Few-shot heads on embeddings: each beats zero-shot where the prompts are off, saves and reloads exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modalign.adapt import HEADS, FewShotData, fit_head, load_head, save_head
from modalign.adapt.cache import CacheModel
from modalign.adapt.probe import LinearProbe, train_logistic
from modalign.errors import ConfigError, MismatchError, NotFoundError

C, D = 5, 16


def _clusters(n_per_class: int, seed: int, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(C).repeat_interleave(n_per_class)
    x = centres[y] + 0.35 * torch.randn(len(y), D, generator=g)
    return F.normalize(x, dim=-1), y


@pytest.fixture(scope="module")
def data() -> tuple[FewShotData, tuple[torch.Tensor, torch.Tensor]]:
    """Image clusters around class centres; the class prompts point only roughly at them (zero-shot is weak)."""
    g = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(C, D, generator=g), dim=-1)
    prompts = F.normalize(centres + 0.9 * torch.randn(C, D, generator=g), dim=-1)
    tx, ty = _clusters(4, 1, centres)
    vx, vy = _clusters(4, 2, centres)
    test = _clusters(60, 3, centres)
    return FewShotData(tx, ty, vx, vy, prompts, scale=20.0), test


def _acc(head, test) -> float:
    x, y = test
    return (head.predict(x) == y).float().mean().item()


def test_every_head_is_registered():
    assert set(HEADS.list()) == {"cache", "probe", "prototype", "zeroshot"}


@pytest.mark.parametrize("kind", ["probe", "cache", "prototype"])
def test_heads_beat_zero_shot_when_the_prompts_are_off(kind, data):
    fsd, test = data
    zs = _acc(fit_head("zeroshot", fsd), test)
    adapted = _acc(fit_head(kind, fsd), test)
    assert zs < 0.9 and adapted > zs + 0.05, (kind, zs, adapted)


@pytest.mark.parametrize("kind", ["zeroshot", "probe", "cache", "prototype"])
def test_fit_is_deterministic_and_save_reload_gives_the_same_logits(kind, data, tmp_path):
    fsd, (x, _) = data
    head = fit_head(kind, fsd)
    again = fit_head(kind, fsd)
    assert torch.allclose(head(x), again(x), rtol=1e-5, atol=1e-5) and head.hyper == again.hyper
    save_head(head, tmp_path / kind)
    loaded = load_head(tmp_path / kind)
    assert type(loaded) is type(head) and loaded.hyper == head.hyper
    assert torch.allclose(loaded(x), head(x), rtol=1e-5, atol=1e-5)
    proba = loaded.predict_proba(x)
    assert proba.shape == (len(x), C) and torch.allclose(proba.sum(1), torch.ones(len(x)), atol=1e-5)


def test_cache_falls_back_to_zero_shot_when_the_shots_mislead():
    g = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(C, D, generator=g), dim=-1)
    tx, ty = _clusters(2, 1, centres)
    vx, vy = _clusters(8, 2, centres)
    test = _clusters(60, 3, centres)
    # shots deliberately mislabelled: votes can only hurt, so validation must keep them (nearly) silent
    data = FewShotData(tx, (ty + 1) % C, vx, vy, centres, scale=20.0)
    zs = _acc(fit_head("zeroshot", data), test)
    loud = CacheModel.fit_fixed(data, alpha=400.0, beta=5.0)
    assert _acc(loud, test) < zs - 0.3  # a strong cache follows the wrong labels
    assert _acc(CacheModel.fit(data), test) >= zs - 0.02


def test_refit_keeps_the_hyper_parameters_and_uses_the_new_shots(data):
    from modalign.adapt import refit_head

    fsd, (x, _) = data
    for kind in ("probe", "cache", "prototype"):
        head = fit_head(kind, fsd)
        both = FewShotData(torch.cat([fsd.train_x, fsd.val_x]), torch.cat([fsd.train_y, fsd.val_y]),
                           fsd.val_x[:0], fsd.val_y[:0], fsd.class_emb, fsd.scale)
        again = refit_head(head, both)
        assert again.hyper == head.hyper and not torch.allclose(again(x), head(x))
        # refitting on the same shots gives the same head
        assert torch.allclose(refit_head(head, fsd)(x), head(x), rtol=1e-4, atol=1e-4)


def test_probe_regularisation_shrinks_weights_and_is_chosen_on_validation(data):
    fsd, _ = data
    w_weak, _ = train_logistic(fsd.train_x, fsd.train_y, C, l2=1e-6)
    w_strong, _ = train_logistic(fsd.train_x, fsd.train_y, C, l2=1.0)
    assert w_strong.norm() < 0.2 * w_weak.norm()
    probe = LinearProbe.fit(fsd)
    assert 1e-6 <= probe.hyper["l2"] <= 1e2


def test_bad_data_gives_clear_errors(data, tmp_path):
    fsd, _ = data
    with pytest.raises(MismatchError, match="do not match"):
        FewShotData(fsd.train_x[:, :4], fsd.train_y, fsd.val_x, fsd.val_y, fsd.class_emb, 1.0)
    with pytest.raises(ConfigError, match="labels must lie"):
        FewShotData(fsd.train_x, fsd.train_y + C, fsd.val_x, fsd.val_y, fsd.class_emb, 1.0)
    with pytest.raises(ConfigError, match="unknown few-shot head 'svm'"):
        fit_head("svm", fsd)
    with pytest.raises(NotFoundError, match="no saved few-shot head"):
        load_head(tmp_path)
