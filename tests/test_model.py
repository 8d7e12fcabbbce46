"""AlignedModel: save/load round trip on real encoders, and clear errors on mismatches."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import caption_of
from modalign.align.projectors import ProjectorConfig
from modalign.encoders import create_encoder
from modalign.errors import MismatchError
from modalign.model import AlignedModel, TowerConfig


@pytest.fixture(scope="module")
def encoders():
    return {"image": create_encoder("effnet-lite0"), "text": create_encoder("minilm-l6")}


def _model(encoders, seed=0):
    torch.manual_seed(seed)
    proj = ProjectorConfig(type="mlp", out_dim=64, hidden_dim=128)
    towers = {m: TowerConfig(m, e.spec, "final", e.dim, e.fingerprint(), proj) for m, e in encoders.items()}
    model = AlignedModel(towers, metadata={"note": "test"})
    for m, e in encoders.items():
        model.set_encoder(m, e)
    return model


def test_round_trip_gives_identical_embeddings(tmp_path, encoders, tux_images):
    model = _model(encoders)
    captions = [caption_of(p) for p in tux_images[:4]]
    img, txt = model.encode_image(tux_images[:4]), model.encode_text(captions)
    assert img.shape == (4, 64) and txt.shape == (4, 64)
    assert torch.allclose(img.norm(dim=1), torch.ones(4), atol=1e-5)
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["towers"]["image"]["encoder"] == "effnet-lite0" and cfg["embed_dim"] == 64
    assert cfg["towers"]["text"]["input_dim"] == 384 and cfg["metadata"]["note"] == "test"
    loaded = AlignedModel.from_pretrained(tmp_path)  # creates its encoders from the saved specs
    assert torch.equal(loaded.encode_image(tux_images[:4]), img)
    assert torch.equal(loaded.encode_text(captions), txt)
    sim = loaded.similarity(img, txt)
    assert sim.shape == (4, 4) and sim.max() <= 1.0 + 1e-6


def test_wrong_encoder_for_a_tower_is_refused(tmp_path, encoders):
    _model(encoders).save_pretrained(tmp_path)
    with pytest.raises(MismatchError, match="fingerprint"):
        AlignedModel.from_pretrained(tmp_path, encoders={"image": "effnet-lite2"})  # same dim, other weights
    with pytest.raises(MismatchError, match=r"modality is 'text', expected 'image'"):
        AlignedModel.from_pretrained(tmp_path, encoders={"image": encoders["text"]})
    with pytest.raises(MismatchError, match="gives 40-d features, the projector expects 1280"):
        AlignedModel.from_pretrained(tmp_path, encoders={"image": create_encoder("effnet-lite0?resize=pad")}
                                     ).set_encoder("image", _layer_swapped(encoders["image"]))


def _layer_swapped(enc):
    """effnet-lite0 read at blocks.3 (40 channels) instead of final: a dims mismatch."""
    class Swapped(type(enc)):
        def layer_info(self, name):
            return super().layer_info("blocks.3")

    swapped = object.__new__(Swapped)
    swapped.__dict__.update(enc.__dict__)
    return swapped


def test_weights_not_matching_config_are_refused(tmp_path, encoders):
    _model(encoders).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["towers"]["text"]["input_dim"] = 768  # as if trained on a 768-d text encoder
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MismatchError, match=r"shape mismatch .*text.*\(.*384\).*768"):
        AlignedModel.from_pretrained(tmp_path)


def test_features_of_wrong_width_are_refused(encoders):
    with pytest.raises(MismatchError, match=r"expects \(N, 1280\) from effnet-lite0"):
        _model(encoders).project("image", torch.zeros(2, 384))
