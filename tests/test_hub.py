"""The Hub round trip, offline: a repo in huggingface_hub's cache layout loads as "hf-hub:org/name"."""

from __future__ import annotations

import pytest
import torch

from modalign.align.projectors import ProjectorConfig
from modalign.model import AlignedModel, TowerConfig

pytest.importorskip("huggingface_hub")


def _model() -> AlignedModel:
    torch.manual_seed(0)
    proj = ProjectorConfig(type="mlp", out_dim=8, hidden_dim=16)
    model = AlignedModel({"image": TowerConfig("image", "effnet-lite0", "final", 16, "fp-i", proj),
                          "text": TowerConfig("text", "minilm-l6", "final", 12, "fp-t", proj)},
                         metadata={"dataset": "tuxpaint", "n_groups": {"train": 500, "test": 100},
                                   "test_metrics": {"mean_recall@1": 0.4321}})
    return model


def test_card_and_offline_reload(tmp_path, monkeypatch) -> None:
    from modalign.integrations.hub import from_pretrained, save_for_hub, write_to_cache

    model = _model()
    folder = save_for_hub(model, tmp_path / "repo", repo_id="org/tux")
    card = (folder / "README.md").read_text()
    assert "effnet-lite0" in card and "minilm-l6" in card and "tuxpaint" in card
    assert "| mean_recall@1 | 0.4321 |" in card and 'from_pretrained("hf-hub:org/tux")' in card

    cache = tmp_path / "cache"
    write_to_cache(folder, "org/tux", cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = from_pretrained("hf-hub:org/tux", cache_dir=cache)
    x = torch.randn(5, 16)
    torch.testing.assert_close(loaded.project("image", x), model.project("image", x), rtol=0, atol=0)
    assert loaded.metadata["test_metrics"]["mean_recall@1"] == 0.4321
    # local_dir: a plain folder in hub layout
    again = from_pretrained("hf-hub:org/tux", local_dir=folder)
    torch.testing.assert_close(again.project("text", torch.ones(2, 12)), model.project("text", torch.ones(2, 12)))
    with pytest.raises(FileNotFoundError, match="org/missing"):
        from_pretrained("hf-hub:org/missing", cache_dir=cache)


def test_aligned_model_from_pretrained_accepts_hf_hub_spec(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    from modalign.integrations.hub import save_for_hub, write_to_cache
    from modalign.model import AlignedModel

    model = _model()
    folder = save_for_hub(model, tmp_path / "repo", repo_id="org/tux")
    cache = tmp_path / "cache"
    write_to_cache(folder, "org/tux", cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))  # the default cache, read at call time
    loaded = AlignedModel.from_pretrained("hf-hub:org/tux")
    x = torch.randn(3, 16)
    torch.testing.assert_close(loaded.project("image", x), model.project("image", x), rtol=0, atol=0)
