"""Hugging Face transformers encoders: `hf:ID_OR_PATH?pooling=cls|mean&max_tokens=N`.

The modality comes from the model's config: a vision config (image_size / num_channels) loads an
image processor, anything else a tokenizer. Multimodal configs (CLIP, SigLIP: text and vision inside)
are refused: this backend loads unimodal encoders.

Layers: `hidden.0` (embedding output) ... `hidden.N` (each layer's output) and `final` (the last
hidden state, after the model's final norm where it has one). Every layer is pooled the same way:
`mean` (text: over real tokens with the attention mask; vision: over patch tokens, without CLS /
distillation tokens) or `cls` (the first token). Convolutional feature maps (B, C, H, W) are always
averaged over H, W. Default pooling: `mean` for text, `cls` for vision models that have a CLS token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from modalign.data.images import load_image, load_text
from modalign.encoders.base import FINAL_LAYER, Encoder, LayerInfo
from modalign.encoders.common import (
    describe_tokenizer,
    hf_source,
    masked_mean,
    model_folder_fingerprint,
    opt_choice,
    opt_int,
)
from modalign.encoders.fast_path import FastImageForward
from modalign.encoders.registry import register_backend
from modalign.errors import ConfigError
from modalign.utils.hashing import hash_state_dict

POOLINGS = ("cls", "mean")


def is_vision_config(config: Any) -> bool:
    return getattr(config, "num_channels", None) is not None or getattr(config, "image_size", None) is not None


def _image_processor(source: str) -> Any:
    """The model's image processor on its PIL backend: the same numbers on every machine, no torchvision."""
    import transformers
    from transformers import AutoImageProcessor

    if int(transformers.__version__.split(".")[0]) >= 5:
        return AutoImageProcessor.from_pretrained(source, backend="pil")
    return AutoImageProcessor.from_pretrained(source, use_fast=False)


class HFEncoder(FastImageForward, Encoder):
    """Hugging Face transformers encoder (text or vision), pooled hidden states of any layer."""

    def __init__(self, id_or_path: str, pooling: str | None = None, max_tokens: int | str | None = None):
        try:
            from transformers import AutoConfig, AutoModel, AutoTokenizer
        except ImportError as e:
            raise ImportError("pip install 'modalign[hf]' (transformers)") from e
        self.local_dir, source = hf_source(id_or_path)
        self.spec = f"hf:{id_or_path}"
        try:
            config = AutoConfig.from_pretrained(source)
            if hasattr(config, "text_config") and hasattr(config, "vision_config"):
                raise ConfigError(
                    f"{id_or_path!r} is a multimodal model ({type(config).__name__}); hf: loads unimodal encoders"
                )
            self.modality = "image" if is_vision_config(config) else "text"
            self.model = AutoModel.from_pretrained(source).eval()
            if self.modality == "image":
                self.processor = _image_processor(source)
            else:
                self.tokenizer = AutoTokenizer.from_pretrained(source)
        except OSError as e:
            raise ConfigError(
                f"could not load Hugging Face model {id_or_path!r}: {e}. Offline, pass a local folder (hf:/path)"
            ) from e
        self.model.requires_grad_(False)
        embeddings = getattr(self.model, "embeddings", None)
        # tokens before the patches (ViT: CLS; DeiT: CLS + distillation), left out of mean pooling
        self.n_prefix = sum(hasattr(embeddings, t) for t in ("cls_token", "distillation_token"))
        if pooling is None:
            pooling = "cls" if self.modality == "image" and self.n_prefix else "mean"
        self.pooling = opt_choice(pooling, "pooling", POOLINGS)
        if self.pooling == "cls" and self.modality == "image" and not self.n_prefix:
            raise ConfigError(f"{id_or_path!r} has no CLS token; use ?pooling=mean")
        self.max_tokens = None
        self.length_bucketing = self.modality == "text"  # text batches pad to their longest: sort by length
        if self.modality == "text":
            limits = [self.tokenizer.model_max_length, getattr(config, "max_position_embeddings", None), 512]
            self.max_tokens = opt_int(max_tokens, "max_tokens") or min(x for x in limits if x)
        self._layers: list[LayerInfo] | None = None
        self._fingerprint: str | None = None

    # ---- description -------------------------------------------------------------------------
    def layers(self) -> list[LayerInfo]:
        if self._layers is None:  # one probe pass reads every layer's width
            probe = "a probe sentence" if self.modality == "text" else np.full((32, 32, 3), 128, np.uint8)
            hidden, last, mask = self._run(self.collate([self.load(probe)]))
            kind = self.pooling
            self._layers = [LayerInfo(f"hidden.{i}", self._pool(h, mask).shape[-1], kind) for i, h in enumerate(hidden)]
            self._layers.append(LayerInfo(FINAL_LAYER, self._pool(last, mask).shape[-1], kind))
        return self._layers

    def preprocessing(self) -> dict[str, Any]:
        if self.modality == "text":
            return {**describe_tokenizer(self.tokenizer), "max_tokens": self.max_tokens, "pooling": self.pooling}
        return {"processor": type(self.processor).__name__, **self.processor.to_dict(), "pooling": self.pooling}

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = (model_folder_fingerprint(self.local_dir) if self.local_dir is not None
                                 else hash_state_dict(self.model.state_dict()))
        return self._fingerprint

    def _move(self, device: torch.device) -> None:
        self.model.to(device)

    # ---- the pipeline ------------------------------------------------------------------------
    def load(self, item: Any) -> Any:
        if self.modality == "text":
            return load_text(item)
        pixels = self.processor(images=load_image(item), return_tensors="np")["pixel_values"]
        return np.asarray(pixels[0], dtype=np.float32)  # (3, H, W)

    def input_length(self, loaded: Any) -> int:
        return len(loaded) if isinstance(loaded, str) else 0  # characters of a caption

    def collate(self, loaded: Sequence[Any]) -> dict[str, torch.Tensor]:
        if self.modality == "text":
            return dict(self.tokenizer(list(loaded), padding=True, truncation=True,
                                       max_length=self.max_tokens, return_tensors="pt"))
        return {"pixel_values": torch.from_numpy(np.stack(loaded, axis=0))}  # (B, 3, H, W)

    def _run(self, batch: dict[str, torch.Tensor]) -> tuple[Sequence[torch.Tensor], torch.Tensor, torch.Tensor | None]:
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with torch.no_grad():
            out = self.model(**batch, output_hidden_states=True, return_dict=True)
        return out.hidden_states, out.last_hidden_state, batch.get("attention_mask")

    def _pool(self, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if h.ndim == 4:  # convolutional feature map (B, C, H, W)
            return h.mean(dim=(2, 3))
        if h.ndim == 2:
            return h
        if self.pooling == "cls":
            return h[:, 0]  # (B, D)
        if mask is not None:
            return masked_mean(h, mask)  # (B, D), text
        return h[:, self.n_prefix:].mean(dim=1)  # (B, D), mean over patch tokens

    def _torch_model(self) -> torch.nn.Module:
        return self.model

    @torch.no_grad()
    def forward(self, batch: dict[str, torch.Tensor], layers: Sequence[str]) -> dict[str, torch.Tensor]:
        names = list(dict.fromkeys(layers))
        for name in names:
            self.layer_info(name)  # raises with the valid names
        if self.modality == "image":  # ONNX Runtime fast path when it exports and agrees
            pixels = batch["pixel_values"]  # (B, 3, H, W)
            return self._fast_or_eager(pixels, names, int(pixels.shape[-1]))
        hidden, last, mask = self._run(batch)
        return {name: self._pool(last if name == FINAL_LAYER else hidden[int(name.split(".")[1])], mask).float()
                for name in names}

    def _pooled(self, pixels: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        """Eager torch for vision models: (B, 3, H, W) -> {layer: (B, D)}."""
        hidden, last, _ = self._run({"pixel_values": pixels})
        return {name: self._pool(last if name == FINAL_LAYER else hidden[int(name.split(".")[1])], None)
                for name in layers}


def _hf_backend(target: str, pooling: str | None = None, max_tokens: str | None = None) -> Encoder:
    return HFEncoder(target, pooling=pooling, max_tokens=max_tokens)


register_backend("hf", _hf_backend, modality="any",
                 description="Hugging Face transformers text or vision model: hf:ID_OR_PATH?pooling=cls|mean",
                 requires="modalign[hf] (transformers)")
