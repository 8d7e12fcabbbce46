"""A fast CPU forward for torch encoders: the pooled forward exported once to ONNX, run by ONNX Runtime.

    encoder.forward(batch, layers)    # ONNX Runtime when the graph exports and agrees with eager torch

On this project's 2-core build box ONNX Runtime runs EfficientNet-Lite0 4-5x faster than eager torch and
MiniLM-L6 faster than sentence-transformers (BENCHMARKS.md). Image graphs take normalised pixels
(B, 3, S, S), or uint8 pixels (B, S, S, 3) that the graph itself normalises (the store's batches: no
per-item float work beside the forward); text graphs the tokenizer's tensors (B, T) with dynamic batch
and length. For each (weights fingerprint, requested layers, input size) the encoder's eager pooled
forward is exported once (torch.onnx, batch axis dynamic) and cached under the cache home:

    <cache home>/graphs/<fingerprint[:20]>/<key>.onnx    the graph (key: layers, input size and kind, torch, format)
                                          /<key>.json    what it was checked against, and the result

Its outputs are compared with the eager model's on a fixed probe batch when it is exported and again
when a process first loads it; a graph that does not agree within tolerance, fails to export or to load
is not used: the encoder runs eager torch, with one log line saying why. The execution path is not part
of the store's cache key, since both give the same vectors (within float32 tolerance).

Choose the path with $MODALIGN_RUNTIME or `encoder.runtime`: "auto" (default: ONNX Runtime on CPU when
available, else eager), "eager" (never export), "onnx" (a failure is an error instead of a fallback).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from modalign.encoders.image_transforms import normalise_pixels
from modalign.errors import ConfigError
from modalign.utils.hashing import hash_json
from modalign.utils.io import atomic_write, atomic_write_json, read_json
from modalign.utils.paths import cache_dir

logger = logging.getLogger(__name__)

Runtime = Literal["auto", "eager", "onnx"]
RUNTIMES: tuple[str, ...] = ("auto", "eager", "onnx")
RUNTIME_ENV = "MODALIGN_RUNTIME"
EXPORT_FORMAT = 1  # bump when the export recipe changes: graphs are exported afresh
OPSET = 17
PROBE_BATCH = 2
# |onnx - eager| <= ATOL + RTOL * max|eager| per output; float32 kernels differ by ~1e-6 relative,
# a wrong graph by O(1)
CHECK_RTOL = 1e-4
CHECK_ATOL = 1e-5

# (B, 3, S, S) pixels, or {input name: (B, T)} tokens -> {layer: (B, D)}
PooledForward = Callable[[Any, list[str]], dict[str, torch.Tensor]]
PixelNorm = tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std) per channel, for uint8 pixel inputs


def default_runtime() -> str:
    """$MODALIGN_RUNTIME, checked; "auto" when unset."""
    return check_runtime(os.environ.get(RUNTIME_ENV, "auto") or "auto")


def check_runtime(value: str) -> str:
    text = str(value).strip().lower()
    if text not in RUNTIMES:
        raise ConfigError(f"unknown runtime {value!r} (from ${RUNTIME_ENV} or encoder.runtime); "
                          f"use one of: {', '.join(RUNTIMES)}")
    return text


class _Pooled(torch.nn.Module):
    """What gets exported: the inputs (pixels (B, 3, S, S), or token ids and masks (B, T)) -> one (B, D)
    tensor per layer, in layer order."""

    def __init__(self, model: torch.nn.Module, pooled: PooledForward, layers: list[str], names: list[str],
                 norm: PixelNorm | None = None):
        super().__init__()
        self.model = model  # registered, so its weights become the graph's initializers
        self.pooled = pooled
        self.layers = layers
        self.names = names
        self.norm = norm  # set: the input is uint8 (B, S, S, 3), normalised in the graph

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.names == ["pixels"]:
            inputs: Any = xs[0] if self.norm is None else normalise_pixels(xs[0], *self.norm)
        else:
            inputs = dict(zip(self.names, xs, strict=True))
        out = self.pooled(inputs, self.layers)
        return tuple(out[name].float() for name in self.layers)


@dataclass
class _Graph:
    session: Any  # onnxruntime.InferenceSession
    inputs: list[str]  # graph input names
    outputs: list[str]  # graph output names, in layer order


def _array(x: torch.Tensor) -> np.ndarray:
    """float inputs as float32, uint8 pixels as they are, other integers (token ids, masks) as int64, C-contiguous."""
    arr = x.detach().cpu().numpy()
    dtype = np.float32 if arr.dtype.kind == "f" else np.uint8 if arr.dtype == np.uint8 else np.int64
    return np.ascontiguousarray(arr, dtype=dtype)


def _is_raw(inputs: Any) -> bool:
    """uint8 pixels (B, S, S, 3), normalised by the graph (or by normalise_pixels when eager)."""
    return isinstance(inputs, torch.Tensor) and inputs.dtype == torch.uint8


def session_options(threads: int | None = None) -> Any:
    """ONNX Runtime options that share a small machine well: torch's thread count, no busy-waiting threads."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or torch.get_num_threads()
    so.inter_op_num_threads = 1
    # spinning worker threads keep cores busy between ops, starving the decode threads beside them
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


class OnnxFastPath:
    """Exports, checks, caches and runs one encoder's pooled forward per requested layer set."""

    def __init__(self, name: str, model: torch.nn.Module, pooled: PooledForward, fingerprint: Callable[[], str],
                 input_size: int, probe: Callable[[], dict[str, torch.Tensor]] | None = None,
                 norm: PixelNorm | None = None):
        self.name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60] or "encoder"
        self.model = model
        self.pooled = pooled
        self.fingerprint = fingerprint
        self.input_size = input_size  # image side; 0 for token inputs
        self.probe = probe or self._pixel_probe  # named inputs to export with and check on
        self.norm = norm  # (mean, std) of the image encoder's transform: it can take uint8 pixels
        self._graphs: dict[tuple[tuple[str, ...], bool], _Graph | None] = {}  # None: failed, run eager

    def graph_path(self, layers: Sequence[str], raw: bool = False) -> Path:
        """The graph of `layers`; `raw`: the one taking uint8 (B, S, S, 3) pixels (its normalisation in the key)."""
        names = list(self.probe()) if self.input_size == 0 else ["pixels"]
        extra: dict[str, Any] = {"inputs": names} if self.input_size == 0 else {}
        if raw:
            extra = {"pixels": "uint8 BHWC", "norm": self._norm()}
        key = hash_json({"format": EXPORT_FORMAT, "opset": OPSET, "layers": list(layers), "size": self.input_size,
                         "torch": torch.__version__.split("+")[0], **extra}, length=12)
        return cache_dir("graphs", self.fingerprint()[:20]) / f"{key}.onnx"  # the weights' folder, one graph a key

    def run(self, inputs: torch.Tensor | dict[str, torch.Tensor], layers: list[str],
            strict: bool) -> dict[str, torch.Tensor] | None:
        """{layer: (B, D)} from ONNX Runtime, or None when this layer set runs eager (failure logged once).

        `inputs`: pixels (B, 3, S, S) float or (B, S, S, 3) uint8, or the tokenizer's tensors by name (B, T)."""
        key = (tuple(layers), _is_raw(inputs))
        if key not in self._graphs:
            try:
                self._graphs[key] = self._open(layers, key[1])
            except Exception as e:  # export and ORT raise many types; every one means "run eager"
                if strict:
                    raise ConfigError(f"runtime 'onnx' was asked for, but the ONNX fast path failed for "
                                      f"{self.name}: {type(e).__name__}: {e}") from e
                log = logger.info if isinstance(e, ImportError) else logger.warning
                log("%s: no ONNX fast path (%s: %s); running eager torch", self.name, type(e).__name__, e)
                self._graphs[key] = None
        graph = self._graphs[key]
        if graph is None:
            return None
        feeds = {"pixels": inputs} if isinstance(inputs, torch.Tensor) else inputs
        arrays = graph.session.run(graph.outputs, {name: _array(feeds[name]) for name in graph.inputs})
        return {name: torch.from_numpy(a) for name, a in zip(layers, arrays, strict=True)}

    def _norm(self) -> PixelNorm:
        if self.norm is None:
            raise TypeError(f"{self.name} takes normalised pixels, not uint8 ones")
        return self.norm

    def _open(self, layers: list[str], raw: bool) -> _Graph:
        import onnxruntime as ort

        path = self.graph_path(layers, raw)
        if not path.is_file():
            self._export(layers, path, raw)
        session = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
        graph = _Graph(session, [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
        if len(graph.outputs) != len(layers):
            raise ValueError(f"{path.name} has {len(graph.outputs)} outputs for {len(layers)} layers")
        worst = self._check(graph, layers, raw)
        if worst is not None:
            path.unlink(missing_ok=True)  # never reused; the next process exports afresh
            raise ValueError(f"exported graph disagrees with eager torch ({worst})")
        logger.info("%s: ONNX Runtime fast path for layers %s (%s)", self.name, ",".join(layers), path)
        return graph

    def _pixel_probe(self) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        # normalised pixels span about [-2, 2.6] (ImageNet mean/std) or [-1, 1]
        return {"pixels": torch.rand(PROBE_BATCH, 3, self.input_size, self.input_size, generator=g) * 4 - 2}

    def _probe(self, raw: bool) -> dict[str, torch.Tensor]:
        if not raw:
            return self.probe()
        g = torch.Generator().manual_seed(0)
        s = self.input_size
        return {"pixels": torch.randint(0, 256, (PROBE_BATCH, s, s, 3), generator=g, dtype=torch.uint8)}

    def _eager(self, probe: dict[str, torch.Tensor], layers: list[str], raw: bool) -> dict[str, torch.Tensor]:
        if raw:
            return self.pooled(normalise_pixels(probe["pixels"], *self._norm()), layers)
        return self.pooled(probe["pixels"] if list(probe) == ["pixels"] else probe, layers)

    def _export(self, layers: list[str], path: Path, raw: bool) -> None:
        probe = self._probe(raw)
        wrapper = _Pooled(self.model, self.pooled, layers, list(probe), self._norm() if raw else None).eval()
        names = [f"out{i}" for i in range(len(layers))]
        # batch axis dynamic everywhere; token inputs (B, T) have a dynamic length too
        axes = {k: {0: "batch"} if k == "pixels" else {0: "batch", 1: "tokens"} for k in probe}
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter warns about constant folding, tracing ...
            torch.onnx.export(wrapper, tuple(probe.values()), buf, dynamo=False,  # type: ignore[arg-type]
                              input_names=list(probe), output_names=names,
                              dynamic_axes={**axes, **{n: {0: "batch"} for n in names}},
                              opset_version=OPSET, do_constant_folding=True)
        atomic_write(path, lambda f: f.write(buf.getvalue()))
        logger.info("%s: exported layers %s to %s (%.1f MB)", self.name, ",".join(layers), path, len(buf.getvalue()) / 2**20)

    def _check(self, graph: _Graph, layers: list[str], raw: bool) -> str | None:
        """None when the graph's outputs match eager torch on the probe batch; else what differs."""
        probe = self._probe(raw)
        with torch.no_grad():
            ref = self._eager(probe, layers, raw)
        got = graph.session.run(graph.outputs, {name: _array(probe[name]) for name in graph.inputs})
        record: dict[str, Any] = {"layers": layers, "size": self.input_size, "rtol": CHECK_RTOL, "atol": CHECK_ATOL,
                                  "torch": torch.__version__, "outputs": {}}
        worst = None
        for name, arr in zip(layers, got, strict=True):
            expected = ref[name].float().numpy()
            diff = float(np.abs(arr - expected).max()) if arr.shape == expected.shape else float("inf")
            scale = float(np.abs(expected).max())
            record["outputs"][name] = {"max_abs_diff": diff, "max_abs": scale}
            if not diff <= CHECK_ATOL + CHECK_RTOL * scale:
                worst = f"layer {name}: max |diff| {diff:.3g} at output scale {scale:.3g}"
        sidecar = self.graph_path(layers, raw).with_suffix(".json")
        try:
            if not sidecar.is_file() or read_json(sidecar).get("outputs") != record["outputs"]:
                atomic_write_json(sidecar, {**record, "ok": worst is None})
        except (OSError, json.JSONDecodeError):
            logger.debug("could not write %s", sidecar)
        return worst


class FastForward:
    """Encoder mix-in: `forward` runs the ONNX fast path when it can, else the eager `_pooled`.

    The encoder implements `_pooled(inputs, layers)` (eager; pixels (B, 3, S, S), or a dict of token
    tensors (B, T), on its device) and `_torch_model()`, and passes its inputs to `_fast_or_eager`
    (token inputs also pass `probe`: named example inputs to export with and check against).
    """

    device: torch.device
    spec: str
    _fast: OnnxFastPath | None = None
    _runtime: str | None = None

    @property
    def runtime(self) -> str:
        """"auto" | "eager" | "onnx" for this encoder; defaults to $MODALIGN_RUNTIME."""
        if self._runtime is None:
            self._runtime = default_runtime()
        return self._runtime

    @runtime.setter
    def runtime(self, value: str) -> None:
        self._runtime = check_runtime(value)

    def _pooled(self, inputs: Any, layers: list[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _torch_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def _pixel_norm(self) -> PixelNorm | None:
        """(mean, std) for uint8 pixel batches: image encoders with a `pixel_norm()` (TransformedImages)."""
        norm = getattr(self, "pixel_norm", None)
        return norm() if callable(norm) else None

    def _fast_or_eager(self, inputs: torch.Tensor | dict[str, torch.Tensor], layers: list[str], size: int,
                       probe: Callable[[], dict[str, torch.Tensor]] | None = None) -> dict[str, torch.Tensor]:
        """{layer: (B, D) float32} for unique, checked layer names."""
        runtime = self.runtime
        if runtime != "eager" and self.device.type == "cpu":
            if self._fast is None:
                self._fast = OnnxFastPath(self.spec, self._torch_model(), self._pooled, self.fingerprint,  # type: ignore[attr-defined]
                                          size, probe, norm=self._pixel_norm())
            out = self._fast.run(inputs, layers, strict=runtime == "onnx")
            if out is not None:
                return out
        if _is_raw(inputs):  # uint8 (B, S, S, 3) -> normalised (B, 3, S, S), as the graph does
            norm = self._pixel_norm()
            if norm is None:
                raise TypeError(f"{self.spec} takes normalised float pixels, not uint8 ones")
            inputs = normalise_pixels(inputs, *norm)  # type: ignore[arg-type]
        moved = inputs.to(self.device) if isinstance(inputs, torch.Tensor) else \
            {k: v.to(self.device) for k, v in inputs.items()}
        with torch.no_grad():
            pooled = self._pooled(moved, layers)
        return {name: pooled[name].float() for name in layers}


FastImageForward = FastForward  # the name image encoders import
