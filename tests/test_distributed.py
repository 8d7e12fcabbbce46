"""Data-parallel training: 2 gloo processes on CPU give the one-process loss curve at the same global batch."""

from __future__ import annotations

import math

import pytest
import torch

from modalign.align.features import FeatureSet
from modalign.align.projectors import ProjectorConfig
from modalign.align.trainer import TrainConfig, train
from modalign.distributed import train_distributed
from modalign.model import AlignedModel, TowerConfig

dist = pytest.importorskip("torch.distributed")
pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")


def _data(n: int, seed: int) -> FeatureSet:
    """Correlated synthetic features: image and text are noisy linear views of one latent per group."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 6, generator=g)  # (n, 6) latent
    img = z @ torch.randn(6, 16, generator=g) + 0.3 * torch.randn(n, 16, generator=g)  # (n, 16)
    txt = z @ torch.randn(6, 12, generator=g) + 0.3 * torch.randn(n, 12, generator=g)  # (n, 12)
    groups = torch.arange(n)
    return FeatureSet({"image": img, "text": txt}, {"image": groups, "text": groups.clone()})


def _model(proj: ProjectorConfig) -> AlignedModel:
    torch.manual_seed(0)
    return AlignedModel({"image": TowerConfig("image", "img-enc", "final", 16, "fp-i", proj),
                         "text": TowerConfig("text", "txt-enc", "final", 12, "fp-t", proj)})


def test_two_processes_match_one() -> None:
    proj = ProjectorConfig(type="mlp", out_dim=8, hidden_dim=16, dropout=0.0)
    cfg = TrainConfig(projector=proj, epochs=4, batch_size=25, lr=3e-3, patience=0, seed=3)
    train_fs, val_fs = _data(70, 0), _data(20, 1)  # 70 groups at 25: odd shards (13 + 12), a smaller last batch

    ref_model = _model(proj)
    ref = train(ref_model, train_fs, val_fs, cfg, progress=False)
    model = _model(proj)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    got = train_distributed(model, train_fs, val_fs, cfg, nprocs=2)

    ref_loss = [r["train_loss"] for r in ref.history]
    got_loss = [r["train_loss"] for r in got.history]
    assert len(got_loss) == len(ref_loss) == 4
    assert ref_loss[-1] < 0.7 * ref_loss[0]  # it learns, so matching curves are not trivially flat
    for a, b in zip(got_loss, ref_loss, strict=True):
        assert math.isclose(a, b, rel_tol=1e-4), (got_loss, ref_loss)
    for a, b in zip(got.history, ref.history, strict=True):
        assert math.isclose(a["val_mean_recall@1"], b["val_mean_recall@1"], abs_tol=1e-6)
    assert got.steps == ref.steps == 12
    # the trained weights come back into the caller's model, equal to the one-process weights
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in after)
    for k, v in ref_model.state_dict().items():
        torch.testing.assert_close(after[k], v, rtol=1e-4, atol=1e-5)


def test_tensorboard_logging_of_a_run(tmp_path) -> None:
    pytest.importorskip("tensorboard")
    from modalign.integrations.tracking import TensorBoardLogger, read_scalars

    proj = ProjectorConfig(type="linear", out_dim=8, dropout=0.0)
    cfg = TrainConfig(projector=proj, epochs=3, batch_size=16, lr=1e-2, patience=0, seed=1)
    seen: list[dict[str, float]] = []
    with TensorBoardLogger(tmp_path / "tb", config=cfg.to_dict(), then=seen.append) as tb:
        result = train(_model(proj), _data(40, 2), _data(12, 3), cfg, on_epoch=tb, progress=False)
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    scalars = read_scalars(tmp_path / "tb")
    assert [s for s, _ in scalars["train_loss"]] == [r["step"] for r in result.history] == [3, 6, 9]
    for (_, v), r in zip(scalars["train_loss"], result.history, strict=True):
        assert math.isclose(v, r["train_loss"], rel_tol=1e-6)
    assert "val_mean_recall@1" in scalars and "lr" in scalars
    assert len(seen) == 3  # the chained callback still runs
