"""A saved AlignedModel as a CLIP_benchmark model type ("modalign"), so its own datasets, metrics and
flat JSON results apply unchanged (pip install "modalign[clip-benchmark]").

    from modalign.integrations.clip_benchmark import register
    register()            # adds "modalign" to clip_benchmark.models.TYPE2FUNC / MODEL_TYPES
    # then, in Python: clip_benchmark.cli.main() with sys.argv, or the metrics functions directly, e.g.
    #   --model_type modalign --model modalign --pretrained runs/tux --dataset wds/mydata --dataset_root DIR

CLIP_benchmark calls `tokenizer(texts).to(device)` and `model.encode_text(that)`; text encoders here return a
dict of tensors, so the tokenizer wraps its batch in `Tokens` (which has `.to`) and the model unwraps it.
The `clip_benchmark` console script parses `--model_type` before any user code runs, so register() only
helps when the CLI is started from Python after it (see `main`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from modalign.integrations.openclip import OpenCLIPStyleModel, Preprocess, Tokenizer, _load
from modalign.model import AlignedModel

logger = logging.getLogger(__name__)

MODEL_TYPE = "modalign"


class Tokens:
    """A text encoder's token batch (tensor or dict of tensors) with the `.to(device)` CLIP_benchmark calls."""

    def __init__(self, batch: Any):
        self.batch = batch

    def to(self, device: str | torch.device) -> Tokens:
        if isinstance(self.batch, torch.Tensor):
            return Tokens(self.batch.to(device))
        if isinstance(self.batch, dict):
            return Tokens({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.batch.items()})
        return self  # lists/tuples of arrays: the encoder moves them itself


class BenchmarkTokenizer(Tokenizer):
    def __call__(self, texts: str | Sequence[str]) -> Tokens:
        return Tokens(super().__call__(texts))


class BenchmarkModel(OpenCLIPStyleModel):
    """encode_image(pixels) / encode_text(Tokens) -> (N, D) L2-normalised embeddings, fp32 under autocast."""

    def _device_type(self) -> str:
        return next(self.aligned.parameters()).device.type

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        with torch.autocast(self._device_type(), enabled=False):  # frozen encoders run in their own dtype
            return super().encode_image(images.float(), normalize)  # (B, D)

    def encode_text(self, tokens: Any, normalize: bool = True) -> torch.Tensor:
        batch = tokens.batch if isinstance(tokens, Tokens) else tokens
        with torch.autocast(self._device_type(), enabled=False):
            return super().encode_text(batch, normalize)  # (B, D)


def load_modalign(model_name: str, pretrained: str | Path | AlignedModel, cache_dir: str | None = None,
                  device: str | torch.device = "cpu") -> tuple[BenchmarkModel, Preprocess, BenchmarkTokenizer]:
    """CLIP_benchmark loader: (model, transform, tokenizer) of a saved model folder or "hf-hub:org/name".

    `pretrained` names the model (as in CLIP_benchmark's --pretrained); `model_name` is only a label and
    `cache_dir` is unused (hub downloads go to the Hugging Face cache).
    """
    if not isinstance(pretrained, AlignedModel) and not str(pretrained).startswith("hf-hub:") \
            and not (Path(pretrained) / "config.json").is_file():
        raise FileNotFoundError(f"--pretrained {pretrained!r} is not a saved modalign model folder (no "
                                "config.json); pass the folder written by `modalign fit` or save_pretrained, "
                                "or hf-hub:org/name")
    aligned = _load(pretrained, str(device))
    model = BenchmarkModel(aligned).eval()
    logger.info("loaded %s (%s) for CLIP_benchmark on %s", pretrained, model_name, device)
    return model, Preprocess(aligned.encoder("image")), BenchmarkTokenizer(aligned.encoder("text"))


def _accuracy(output: torch.Tensor, target: torch.Tensor, topk: Sequence[int] = (1,)) -> list[float]:
    """CLIP_benchmark's top-k accuracy without float() of a 1-element array (a TypeError since NumPy 2.4)."""
    pred = output.topk(max(topk), 1, True, True)[1].t()  # (k, N) class ids, best first
    correct = pred.eq(target.view(1, -1).expand_as(pred))  # (k, N)
    return [correct[:k].any(0).float().mean().item() for k in topk]


def _patch_numpy2(zeroshot_classification: Any) -> None:
    """clip-benchmark 1.6.2 computes accuracy with float(np.array([x])), which NumPy >= 2.4 refuses."""
    import numpy as np

    try:
        float(np.zeros(1))
    except TypeError:
        zeroshot_classification.accuracy = _accuracy


def register() -> None:
    """Adds "modalign" to CLIP_benchmark's model types (idempotent)."""
    try:
        from clip_benchmark import models
        from clip_benchmark.metrics import zeroshot_classification
    except ImportError as e:
        raise ImportError('CLIP_benchmark is not installed: pip install "modalign[clip-benchmark]"') from e
    _patch_numpy2(zeroshot_classification)
    models.TYPE2FUNC[MODEL_TYPE] = load_modalign
    if MODEL_TYPE not in models.MODEL_TYPES:
        models.MODEL_TYPES.append(MODEL_TYPE)  # the same list object the CLI uses for --model_type choices


def main(argv: Sequence[str] | None = None) -> None:
    """CLIP_benchmark's CLI with "modalign" registered: python -m modalign.integrations.clip_benchmark eval --model_type modalign ..."""
    import sys

    register()
    from clip_benchmark import cli

    saved = sys.argv
    if argv is not None:
        sys.argv = ["clip_benchmark", *argv]  # cli.main() parses sys.argv itself
    try:
        cli.main()
    finally:
        sys.argv = saved


if __name__ == "__main__":
    main()
