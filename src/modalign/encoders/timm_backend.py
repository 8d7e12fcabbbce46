"""timm image encoders: `timm:NAME?weights=PATH&pretrained=true|false&seed=0&resize=crop|pad|squash`.

`timm:NAME` downloads the pretrained weights (users online); `?weights=/path/file.safetensors|.pth`
loads local weights instead; `?pretrained=false` gives a random init from `seed` (a baseline that is
the same on every run). Preprocessing follows the model's own data config (input size, crop_pct,
interpolation, mean/std), done with our ImageTransform (no torchvision).

Layers: the model's feature levels from `forward_intermediates()`, named by timm's feature_info
modules (e.g. `act1`, `layer1` ... `layer4` for ResNets; `blocks.0` ... for ViTs; `stages.0` ... for
ConvNeXts), each mean-pooled over positions (ViT: over patch tokens), then `final` =
forward_features + forward_head(pre_logits=True) (the model's own pooling, no classifier).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from modalign.encoders.base import FINAL_LAYER, Encoder, LayerInfo
from modalign.encoders.common import opt_bool, opt_choice, opt_int, pool_features
from modalign.encoders.fast_path import FastImageForward
from modalign.encoders.image_transforms import ImageTransform, TransformedImages
from modalign.encoders.label_head import IMAGENET_CLASSES, LabelHead, imagenet_classnames
from modalign.encoders.registry import register_backend
from modalign.errors import ConfigError
from modalign.utils.hashing import hash_file, hash_state_dict

logger = logging.getLogger(__name__)

RESIZE_MODES = ("crop", "pad", "squash")


def transform_from_timm(data_config: dict[str, Any], resize: str | None = None) -> ImageTransform:
    """timm's resolve_data_config() output -> our ImageTransform."""
    _, height, width = data_config["input_size"]
    if height != width:
        logger.warning("timm input size %sx%s is not square; using %s x %s", height, width, height, height)
    crop_mode = data_config.get("crop_mode", "center")
    mode = resize or ("squash" if crop_mode == "squash" else "crop")
    return ImageTransform(
        size=int(height), resize=mode,  # type: ignore[arg-type]
        crop_pct=float(data_config.get("crop_pct") or 0.875),
        mean=tuple(float(v) for v in data_config["mean"]),  # type: ignore[arg-type]
        std=tuple(float(v) for v in data_config["std"]),  # type: ignore[arg-type]
        interpolation="bicubic" if data_config.get("interpolation") == "bicubic" else "bilinear",
    )


class TimmEncoder(FastImageForward, TransformedImages, Encoder):
    """timm image encoder: pooled features of any feature level, or the model's pre-logits embedding."""

    modality = "image"

    def __init__(self, name: str, weights: str | None = None, pretrained: bool | str = True,
                 seed: int | str = 0, resize: str | None = None):
        try:
            import timm
        except ImportError as e:
            raise ImportError("pip install 'modalign[timm]' (timm)") from e
        if ":" not in name and not timm.is_model(name):  # hf-hub:ORG/NAME and local-dir:PATH pass through
            close = difflib.get_close_matches(name, timm.list_models(), n=8, cutoff=0.6)
            raise ConfigError(f"unknown timm model {name!r}" + (f"; close names: {', '.join(close)}" if close else ""))
        self.name = name
        self.weights_path = Path(weights).expanduser() if weights else None
        self.pretrained = opt_bool(pretrained, "pretrained") or self.weights_path is not None
        self.seed = opt_int(seed, "seed") or 0
        if self.weights_path is not None:
            if not self.weights_path.is_file():
                raise ConfigError(f"weights file not found: {self.weights_path}")
            # timm's own local-file path: drops the classifier weights, adapts input convs where needed
            overlay = {"file": str(self.weights_path), "source": ""}  # "" : not the hub, even for hf-hub: names
            kwargs: dict[str, Any] = {"pretrained": True, "pretrained_cfg_overlay": overlay}
        else:
            kwargs = {"pretrained": self.pretrained}
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)  # random init (and any non-loaded parameter) is reproducible
                self.model: Any = timm.create_model(name, num_classes=0, **kwargs).eval()
        except (OSError, ValueError, RuntimeError) as e:
            hint = ("; offline, pass ?weights=/path/to/weights.safetensors or ?pretrained=false"
                    if self.weights_path is None and self.pretrained else "")
            raise ConfigError(f"could not create timm model {name!r}: {e}{hint}") from e
        self.model.requires_grad_(False)
        resize_mode = opt_choice(resize, "resize", RESIZE_MODES) if resize else None
        self.data_config = timm.data.resolve_data_config({}, model=self.model)
        self.transform = transform_from_timm(self.data_config, resize_mode)
        self._layers: list[LayerInfo] | None = None
        self._index: dict[str, int] = {}  # layer name -> forward_intermediates index
        self._fingerprint: str | None = None
        self._head: LabelHead | bool | None = None  # label_head(): not read yet (None) / none there (False)

    # ---- description -------------------------------------------------------------------------
    def layers(self) -> list[LayerInfo]:
        if self._layers is None:
            self._layers = self._probe_layers()
        return self._layers

    def _probe_layers(self) -> list[LayerInfo]:
        """One pass on a blank image reads the feature levels and their widths."""
        size = self.transform.size
        x = torch.zeros(1, 3, size, size, device=self.device)
        layers = []
        with torch.no_grad():
            try:
                final, inter = self.model.forward_intermediates(x, intermediates_only=False)
            except (AttributeError, NotImplementedError):
                logger.info("timm model %s has no forward_intermediates(); only layer 'final'", self.name)
                final, inter = self.model.forward_features(x), []
            names = [info["module"] for info in getattr(self.model, "feature_info", [])]
            if len(names) != len(inter) or FINAL_LAYER in names or len(set(names)) != len(names):
                names = [f"stage.{i}" for i in range(len(inter))]
            for i, (name, t) in enumerate(zip(names, inter, strict=True)):
                self._index[name] = i
                layers.append(LayerInfo(name, pool_features(t).shape[-1], "mean"))
            dim = self.model.forward_head(final, pre_logits=True).shape[-1]
        layers.append(LayerInfo(FINAL_LAYER, dim, "model"))
        return layers

    def preprocessing(self) -> dict[str, Any]:
        return {"model": self.name, **self.transform.describe()}

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = (hash_file(self.weights_path) if self.weights_path is not None
                                 else hash_state_dict(self.model.state_dict()))
        return self._fingerprint

    def _move(self, device: torch.device) -> None:
        self.model.to(device)

    def label_head(self) -> LabelHead | None:
        """The model's ImageNet-1k classifier over the pre-logits `final` features, or None.

        The encoder itself runs without the classifier (num_classes=0), so the head is read on demand:
        from the local weights file, or from the pretrained weights (timm's cache). A random init, a
        label set other than ImageNet-1k or a head of several classifiers (distilled ViTs) gives None.
        """
        if self._head is None:
            self._head = self._read_head() or False
        return self._head if isinstance(self._head, LabelHead) else None

    def _read_head(self) -> LabelHead | None:
        name = self.model.pretrained_cfg.get("classifier")
        if not isinstance(name, str) or self.model.pretrained_cfg.get("num_classes", 0) != IMAGENET_CLASSES:
            return None
        if self.weights_path is not None:
            state = _read_weights(self.weights_path)
            weight, bias = state.get(f"{name}.weight"), state.get(f"{name}.bias")
        elif self.pretrained:
            import timm

            full: Any = timm.create_model(self.name, pretrained=True)  # the same weights, with the classifier
            classifier = full.get_classifier()
            weight, bias = getattr(classifier, "weight", None), getattr(classifier, "bias", None)
        else:
            return None
        if weight is None or weight.ndim != 2 or tuple(weight.shape) != (IMAGENET_CLASSES, self.dim):
            logger.info("timm model %s: no ImageNet-1k classifier %r over its %d-d features", self.name, name, self.dim)
            return None
        bias = torch.zeros(IMAGENET_CLASSES) if bias is None else bias
        return LabelHead(weight.detach().float().cpu().clone(), bias.detach().float().cpu().clone(),
                         imagenet_classnames())


    def _torch_model(self) -> torch.nn.Module:
        return self.model

    def forward(self, batch: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        names = list(dict.fromkeys(layers))
        for name in names:
            self.layer_info(name)  # raises with the valid names (and probes the levels once)
        return self._fast_or_eager(batch, names, self.transform.size)

    def _pooled(self, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        """Eager torch: (B, 3, S, S) -> {layer: (B, D)}; intermediate levels from one forward_intermediates."""
        levels = sorted({self._index[n] for n in layers if n != FINAL_LAYER})
        want_final = FINAL_LAYER in layers
        out: dict[str, torch.Tensor] = {}
        final = None
        if levels:
            # timm returns the requested levels in network order
            res = self.model.forward_intermediates(x, indices=levels, intermediates_only=not want_final,
                                                   stop_early=not want_final)
            final, inter = res if want_final else (None, res)
            by_index = dict(zip(levels, inter, strict=True))
            for name in layers:
                if name != FINAL_LAYER:
                    out[name] = pool_features(by_index[self._index[name]])  # (B, C_i)
        if want_final:
            feats = self.model.forward_features(x) if final is None else final
            out[FINAL_LAYER] = self.model.forward_head(feats, pre_logits=True)  # (B, D)
        return out


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A .safetensors or torch (.pth/.bin) state dict, on the CPU."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else {}


def _timm_backend(target: str, weights: str | None = None, pretrained: str = "true", seed: str = "0",
                  resize: str | None = None) -> Encoder:
    return TimmEncoder(target, weights=weights, pretrained=pretrained, seed=seed, resize=resize)


register_backend("timm", _timm_backend, modality="image",
                 description="timm image model: timm:NAME (pretrained), ?weights=PATH (local), ?pretrained=false",
                 requires="modalign[timm] (timm)")
