"""An open_clip-like face for a saved AlignedModel (image + text towers).

    model, preprocess_train, preprocess_val = create_model_and_transforms("runs/tux")   # or "hf-hub:org/name"
    tokenizer = get_tokenizer("runs/tux")
    image = preprocess_val(Image.open("cat.png")).unsqueeze(0)      # (1, 3, S, S)
    text = tokenizer(["a cat", "a car"])                            # the text encoder's token batch
    with torch.no_grad():
        img, txt = model.encode_image(image), model.encode_text(text)   # (N, D) each, L2-normalised

The preprocess and tokenizer are the frozen encoders' own input pipelines (Encoder.load + collate), so
these embeddings equal AlignedModel.encode_image / encode_text. Projector training happens on cached
features, so there is no training augmentation: preprocess_train is preprocess_val.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modalign.model import AlignedModel


class OpenCLIPStyleModel(nn.Module):
    """encode_image(pixel batch) / encode_text(token batch) -> (N, D) embeddings, logit_scale like open_clip."""

    def __init__(self, aligned: AlignedModel):
        super().__init__()
        self.aligned = aligned
        self.logit_scale = aligned.logit_scale

    def _encode(self, modality: str, batch: Any, normalize: bool) -> torch.Tensor:
        enc = self.aligned.encoder(modality)
        names = enc.resolve_layers(self.aligned.towers[modality].layers)
        feats = enc.forward(batch, names)  # {layer: (B, d_l)}
        x = torch.cat([feats[n].float() for n in names], dim=1)  # (B, input_dim)
        return self.aligned.project(modality, x, normalize=normalize)

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self._encode("image", images, normalize)  # images: (B, 3, S, S) from preprocess

    def encode_text(self, tokens: Any, normalize: bool = True) -> torch.Tensor:
        return self._encode("text", tokens, normalize)  # tokens: what get_tokenizer returns

    def forward(self, images: torch.Tensor | None = None, tokens: Any = None
                ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        img = self.encode_image(images) if images is not None else None
        txt = self.encode_text(tokens) if tokens is not None else None
        return img, txt, self.logit_scale.exp()


class Preprocess:
    """One image (PIL, path, array or bytes) -> the image encoder's input tensor, e.g. (3, S, S)."""

    def __init__(self, encoder: Any):
        self.encoder = encoder

    def __call__(self, image: Any) -> torch.Tensor:
        return self.encoder.collate([self.encoder.load(image)])[0]


class Tokenizer:
    """Strings -> the text encoder's token batch (a tensor or a dict of tensors)."""

    def __init__(self, encoder: Any):
        self.encoder = encoder

    def __call__(self, texts: str | Sequence[str]) -> Any:
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self.encoder.collate([self.encoder.load(t) for t in texts])


def _load(path: str | Path | AlignedModel, device: str) -> AlignedModel:
    if isinstance(path, AlignedModel):
        return path
    from modalign.integrations.hub import from_pretrained

    return from_pretrained(path, device=device) if str(path).startswith("hf-hub:") else \
        AlignedModel.from_pretrained(path, device=device)


def create_model_and_transforms(path: str | Path | AlignedModel, device: str = "cpu"
                                ) -> tuple[OpenCLIPStyleModel, Preprocess, Preprocess]:
    """(model, preprocess_train, preprocess_val) of a saved model folder, "hf-hub:org/name", or a model."""
    aligned = _load(path, device)
    model = OpenCLIPStyleModel(aligned).eval()
    preprocess = Preprocess(aligned.encoder("image"))
    return model, preprocess, preprocess


def get_tokenizer(path: str | Path | AlignedModel, device: str = "cpu") -> Tokenizer:
    return Tokenizer(_load(path, device).encoder("text"))
