"""An open_clip-like face for a saved AlignedModel (image + text towers).

    model, preprocess_train, preprocess_val = create_model_and_transforms("runs/tux")   # or "hf-hub:org/name"
    tokenizer = get_tokenizer("runs/tux")
    image = preprocess_val(Image.open("cat.png")).unsqueeze(0)      # (1, 3, S, S)
    text = tokenizer(["a cat", "a car"])                            # (2, context_length) token ids
    with torch.no_grad():
        img, txt = model.encode_image(image), model.encode_text(text)   # (N, D) each, L2-normalised

The preprocess and tokenizer are the frozen encoders' own input pipelines (Encoder.load + collate), so
these embeddings equal AlignedModel.encode_image / encode_text. As open_clip's, the tokenizer returns one
LongTensor of token ids padded to `context_length` (the text encoder's token limit); encode_text rebuilds
the attention mask from the padding id. Projector training happens on cached features, so there is no
training augmentation: preprocess_train is preprocess_val.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
        # tokens: (N, L) ids from get_tokenizer (or the text encoder's own batch)
        return self._encode("text", token_batch(self.aligned.encoder("text"), tokens), normalize)

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
    """Strings -> (N, context_length) LongTensor of token ids, as open_clip's tokenizers return.

    Encoders without a Hugging Face tokenizer (or one without a padding token) get their own token batch.
    """

    def __init__(self, encoder: Any):
        self.encoder = encoder
        self.hf = _hf_tokenizer(encoder)
        limit = getattr(encoder, "max_tokens", None) or getattr(getattr(encoder, "st", None), "max_seq_length", None)
        self.context_length = int(limit or min(getattr(self.hf, "model_max_length", 77), 512))

    def __call__(self, texts: str | Sequence[str]) -> Any:
        texts = [texts] if isinstance(texts, str) else list(texts)
        batch = self.encoder.collate([self.encoder.load(t) for t in texts])
        if self.hf is None or not isinstance(batch, Mapping) or "input_ids" not in batch:
            return batch
        ids = batch["input_ids"]  # (N, T), T <= context_length
        out = torch.full((ids.shape[0], self.context_length), self.hf.pad_token_id, dtype=torch.long)
        out[:, : ids.shape[1]] = ids
        return out


def _hf_tokenizer(encoder: Any) -> Any:
    """The encoder's Hugging Face tokenizer (hf: or sentence-transformers) when it pads with a known id."""
    tok = getattr(encoder, "tokenizer", None) or getattr(getattr(encoder, "st", None), "tokenizer", None)
    return tok if getattr(tok, "pad_token_id", None) is not None else None


def token_batch(encoder: Any, tokens: Any) -> Any:
    """A Tokenizer's (N, L) ids -> the encoder's own batch (input_ids, attention_mask, token_type_ids)."""
    tok = _hf_tokenizer(encoder)
    if not isinstance(tokens, torch.Tensor) or tok is None:
        return tokens
    probe = encoder.collate([encoder.load("probe")])  # the keys the encoder's forward reads
    mask = (tokens != tok.pad_token_id).long()  # (N, L)
    length = max(1, int(mask.sum(dim=1).max()))  # drop the all-padding tail: shorter attention, same vectors
    parts = {"input_ids": tokens, "attention_mask": mask, "token_type_ids": torch.zeros_like(tokens)}
    unknown = {k for k, v in probe.items() if isinstance(v, torch.Tensor)} - set(parts)
    if unknown:
        raise TypeError(f"cannot rebuild the {sorted(unknown)} inputs of {encoder.spec!r} from token ids; pass the "
                        f"encoder's own batch (encoder.collate) instead")
    # tensors rebuilt from the ids; other entries (e.g. sentence-transformers' "modality": "text") as collate gives
    return {k: parts[k][:, :length] if isinstance(v, torch.Tensor) else v for k, v in probe.items()}


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
