"""The open_clip-like interface gives the same embeddings as AlignedModel.encode_image / encode_text."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from conftest import caption_of
from modalign.align.features import FeatureSet
from modalign.align.projectors import ProjectorConfig
from modalign.align.trainer import TrainConfig, train
from modalign.encoders.registry import create_encoder
from modalign.model import AlignedModel, TowerConfig


def test_openclip_path_matches_aligned_model(tmp_path: Path, tux_images: list[Path]) -> None:
    from modalign.integrations.openclip import create_model_and_transforms, get_tokenizer

    images, captions = tux_images[:6], [caption_of(p) for p in tux_images[:6]]
    img_enc, txt_enc = create_encoder("effnet-lite0"), create_encoder("minilm-l6")
    fi, ft = torch.from_numpy(img_enc.encode(images)), torch.from_numpy(txt_enc.encode(captions))
    proj = ProjectorConfig(type="linear", out_dim=16, dropout=0.0)
    towers = {"image": TowerConfig("image", img_enc.spec, "final", fi.shape[1], img_enc.fingerprint(), proj),
              "text": TowerConfig("text", txt_enc.spec, "final", ft.shape[1], txt_enc.fingerprint(), proj)}
    model = AlignedModel(towers)
    groups = torch.arange(6)
    train(model, FeatureSet({"image": fi, "text": ft}, {"image": groups, "text": groups.clone()}), None,
          TrainConfig(projector=proj, epochs=3, batch_size=6, patience=0), progress=False)
    model.save_pretrained(tmp_path / "m")

    clip, preprocess_train, preprocess_val = create_model_and_transforms(tmp_path / "m")
    tokenizer = get_tokenizer(tmp_path / "m")
    pixels = torch.stack([preprocess_val(Image.open(p).convert("RGBA")) for p in images])
    assert pixels.ndim == 4 and pixels.shape[:2] == (6, 3)
    tokens = tokenizer(captions)
    assert isinstance(tokens, torch.Tensor) and tokens.dtype == torch.long  # as open_clip's tokenizers return
    assert tokens.shape == (6, tokenizer.context_length) and tokenizer.context_length == txt_enc.st.max_seq_length
    with torch.no_grad():
        img, txt = clip.encode_image(pixels), clip.encode_text(tokens)
        one = clip.encode_text(tokenizer(captions[0]))  # a single string: a (1, context_length) batch
    ref = AlignedModel.from_pretrained(tmp_path / "m", encoders={"image": img_enc, "text": txt_enc})
    torch.testing.assert_close(img, ref.encode_image(images), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(txt, ref.encode_text(captions), rtol=1e-4, atol=1e-5)
    assert img.shape == txt.shape == (6, 16)
    torch.testing.assert_close(one, txt[:1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(img.norm(dim=1), torch.ones(6))
