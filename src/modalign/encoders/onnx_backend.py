"""ONNX image encoders run with onnxruntime on the CPU:
`onnx:PATH?size=224&mean=0.485,0.456,0.406&std=0.229,0.224,0.225&resize=crop|pad|squash&output=NAME`.

The model takes one float32 (B, 3, size, size) input, normalised with mean/std (ImageNet by default).
`size` defaults to the input's static height when the graph has one, else 224.

Layers: `final` = the graph output named by `?output=` (default: the first output), then every other
graph output under its own name. Outputs are pooled to (B, D): (B, C, H, W) averaged over H, W,
(B, T, D) averaged over T. Models exported with a fixed batch size of 1 are run one item at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modalign.encoders.base import FINAL_LAYER, Encoder, LayerInfo
from modalign.encoders.common import opt_choice, opt_float, opt_floats, opt_int, pool_features
from modalign.encoders.fast_path import session_options
from modalign.encoders.image_transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageDecoder,
    ImageTransform,
    image_decoder,
)
from modalign.encoders.registry import register_backend
from modalign.errors import ConfigError
from modalign.utils.hashing import hash_file

logger = logging.getLogger(__name__)

RESIZE_MODES = ("crop", "pad", "squash")


class OnnxImageEncoder(Encoder):
    """ONNX image encoder (onnxruntime, CPU): pooled graph outputs."""

    modality = "image"

    def __init__(self, path: str, size: int | str | None = None, mean: Any = None, std: Any = None,
                 resize: str = "crop", crop_pct: float | str | None = None, output: str | None = None):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError("pip install 'modalign[onnx]' (onnxruntime)") from e
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise ConfigError(f"ONNX model file not found: {self.path}")
        try:
            self.session = ort.InferenceSession(str(self.path), session_options(), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for unreadable graphs
            raise ConfigError(f"onnxruntime cannot load {self.path}: {e}") from e
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        shape = list(graph_input.shape)  # e.g. ['batch', 3, 224, 224]
        if len(shape) != 4:
            raise ConfigError(f"{self.path.name}: input {self.input_name!r} has shape {shape}; expected (B, 3, H, W)")
        static_size = shape[2] if isinstance(shape[2], int) else None
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.output = output or self.outputs[0]
        if self.output not in self.outputs:
            raise ConfigError(f"{self.path.name} has no output {self.output!r}; its outputs: {', '.join(self.outputs)}")
        self.transform = ImageTransform(
            size=opt_int(size, "size") or static_size or 224,
            resize=opt_choice(resize, "resize", RESIZE_MODES),  # type: ignore[arg-type]
            crop_pct=opt_float(crop_pct, "crop_pct") or 0.875,
            mean=opt_floats(mean, "mean") or IMAGENET_MEAN,  # type: ignore[arg-type]
            std=opt_floats(std, "std") or IMAGENET_STD,  # type: ignore[arg-type]
        )
        if static_size is not None and static_size != self.transform.size:
            raise ConfigError(f"{self.path.name} takes {static_size} px inputs; drop ?size= or set size={static_size}")
        # layer name -> graph output name
        self._graph_name = {FINAL_LAYER: self.output, **{o: o for o in self.outputs if o != self.output}}
        self._layers: list[LayerInfo] | None = None

    # ---- description -------------------------------------------------------------------------
    def layers(self) -> list[LayerInfo]:
        if self._layers is None:  # one run on a blank image reads every output's width
            size = self.transform.size
            res = self._run(np.zeros((1, 3, size, size), np.float32), list(self._graph_name.values()))
            dims = {name: pool_features(torch.from_numpy(a)).shape[-1] for name, a in res.items()}
            others = [LayerInfo(n, dims[g], "mean") for n, g in self._graph_name.items() if n != FINAL_LAYER]
            self._layers = [*others, LayerInfo(FINAL_LAYER, dims[self.output], "mean")]
        return self._layers

    def preprocessing(self) -> dict[str, Any]:
        return {"output": self.output, **self.transform.describe()}

    def fingerprint(self) -> str:
        return hash_file(self.path)

    def _move(self, device: torch.device) -> None:
        if device.type != "cpu":
            logger.warning("the onnx: backend runs on the CPU (onnxruntime CPUExecutionProvider); ignoring %s", device)
        self.device = torch.device("cpu")

    # ---- the pipeline ------------------------------------------------------------------------
    def load(self, item: Any) -> np.ndarray:
        return image_decoder(self.transform)(item)

    def process_loader(self) -> ImageDecoder:
        return image_decoder(self.transform)  # picklable, torch-free: the store may decode in processes

    def collate(self, loaded: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack(loaded, axis=0).astype(np.float32, copy=False)  # (B, 3, S, S)

    def _run(self, batch: np.ndarray, graph_names: list[str]) -> dict[str, np.ndarray]:
        if self.fixed_batch == 1 and len(batch) > 1:  # graph exported for one item at a time
            runs = [self.session.run(graph_names, {self.input_name: batch[i : i + 1]}) for i in range(len(batch))]
            arrays = [np.concatenate(parts, axis=0) for parts in zip(*runs, strict=True)]
        else:
            arrays = self.session.run(graph_names, {self.input_name: batch})
        return dict(zip(graph_names, arrays, strict=True))

    def forward(self, batch: Any, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        for name in layers:
            self.layer_info(name)  # raises with the valid names
        if isinstance(batch, torch.Tensor):
            batch = batch.cpu().numpy()
        graph_names = sorted({self._graph_name[n] for n in layers})
        res = self._run(np.ascontiguousarray(batch, dtype=np.float32), graph_names)  # one run, every output
        return {n: pool_features(torch.from_numpy(res[self._graph_name[n]])).float() for n in layers}


def _onnx_backend(target: str, size: str | None = None, mean: str | None = None, std: str | None = None,
                  resize: str = "crop", crop_pct: str | None = None, output: str | None = None) -> Encoder:
    return OnnxImageEncoder(target, size=size, mean=mean, std=std, resize=resize, crop_pct=crop_pct, output=output)


register_backend("onnx", _onnx_backend, modality="image",
                 description="ONNX image model on CPU: onnx:PATH?size=224&mean=..&std=..&resize=crop|pad&output=NAME",
                 requires="modalign[onnx] (onnxruntime)")
