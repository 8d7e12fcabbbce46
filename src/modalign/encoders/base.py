"""The Encoder interface every backend implements.

An encoder turns raw items of one modality into vectors, at any of its declared layers:

    raw item --load()--> decoded input --collate()--> model batch --forward(batch, layers)--> {layer: (B, D)}

`load` runs per item (in worker threads) and raises InvalidItem for an unusable item (corrupt image,
empty caption); the store skips it with the reason. `collate` turns a list of decoded inputs into one
model batch (resize + normalise + stack, or tokenise). `forward` runs the frozen model under no_grad
and returns one pooled (B, D) float tensor per requested layer, from a single pass.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from modalign.encoders.label_head import LabelHead

FINAL_LAYER = "final"


@dataclass(frozen=True)
class LayerInfo:
    name: str  # e.g. "blocks.3", "hidden.6", "final"
    dim: int  # width of the pooled vector at this layer
    pooling: str  # how tokens / positions are reduced to one vector: "mean", "cls", "model"


@dataclass
class EncoderInfo:
    """What `modalign encoders` prints and what a saved model records about its encoder."""

    spec: str  # the spec string it was created from, e.g. "effnet-lite0", "st:/path/to/model"
    modality: str  # "image" | "text" | "audio"
    dim: int  # output width at the final layer
    layers: list[LayerInfo]
    preprocessing: dict[str, Any]  # everything that changes the model input (size, mean/std, max tokens ...)
    fingerprint: str  # hash of the weights
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Encoder(abc.ABC):
    """A frozen unimodal encoder. Subclasses set `spec` and `modality` and implement the four methods."""

    spec: str
    modality: str
    device: torch.device = torch.device("cpu")
    # Inputs that vary in length (tokens, audio samples) and are padded to the longest of each batch:
    # encoders that set this are fed batches of similar `input_length` (the store sorts each shard's
    # items, `encode` sorts all), then the vectors go back to row order. False on an instance: row order.
    length_bucketing: bool = False

    # ---- description -------------------------------------------------------------------------
    @abc.abstractmethod
    def layers(self) -> list[LayerInfo]:
        """All layers this encoder can return, shallow to deep; the last one is `final`."""

    @abc.abstractmethod
    def preprocessing(self) -> dict[str, Any]:
        """JSON-able description of the input pipeline; part of the cache key."""

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """Hash of the weights; part of the cache key and checked when a saved model is loaded."""

    def label_head(self) -> LabelHead | None:
        """The encoder's own classifier over its pooled `final` features (e.g. ImageNet logits), or None.

        Supervised classifiers override this; the label bridge (modalign.align.label_bridge) uses it.
        """
        return None

    # ---- the pipeline ------------------------------------------------------------------------
    @abc.abstractmethod
    def load(self, item: Any) -> Any:
        """Decodes/validates one raw item; raises InvalidItem with a reason when it cannot be used."""

    @abc.abstractmethod
    def collate(self, loaded: Sequence[Any]) -> Any:
        """Turns decoded items into one model batch (a tensor or a dict of tensors)."""

    @abc.abstractmethod
    def forward(self, batch: Any, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """One forward pass; returns {layer: (B, D) float32 tensor} for each requested layer."""

    def process_loader(self) -> Callable[[Any], Any] | None:
        """A picklable, torch-free function like `load` (`collate` takes its outputs as it takes load's; they
        may be cheaper, e.g. uint8 pixels that `forward` normalises). The store's encode loop loads with it,
        in worker processes for files (decoders that hold the GIL, e.g. SVG rendering, would stall the
        forward pass in threads); None: `load`, in threads."""
        return None

    def input_length(self, loaded: Any) -> int:
        """Length of one decoded input, for length-sorted batching (characters, samples ...)."""
        return 0

    # ---- derived helpers ---------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.layer_info(FINAL_LAYER).dim

    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers()]

    def layer_info(self, name: str) -> LayerInfo:
        for layer in self.layers():
            if layer.name == name:
                return layer
        raise ValueError(
            f"encoder {self.spec!r} has no layer {name!r}; its layers are: {', '.join(self.layer_names())}"
        )

    def resolve_layers(self, layers: Sequence[str] | str | None) -> list[str]:
        """Checks layer names; accepts negative indices like "-2" (second to last)."""
        if layers is None:
            return [FINAL_LAYER]
        if isinstance(layers, str):
            layers = [layers]
        names = self.layer_names()
        out = []
        for layer in layers:
            if layer.lstrip("-").isdigit():
                idx = int(layer)
                if not -len(names) <= idx < len(names):
                    raise ValueError(f"layer index {idx} out of range for {self.spec!r} ({len(names)} layers)")
                layer = names[idx]
            self.layer_info(layer)  # raises with the list of valid names
            out.append(layer)
        return out

    def info(self) -> EncoderInfo:
        return EncoderInfo(
            spec=self.spec,
            modality=self.modality,
            dim=self.dim,
            layers=self.layers(),
            preprocessing=self.preprocessing(),
            fingerprint=self.fingerprint(),
            description=(self.__doc__ or "").strip().splitlines()[0] if self.__doc__ else "",
        )

    def to(self, device: str | torch.device) -> Encoder:
        """Moves the model; subclasses with a torch module override `_move`."""
        self.device = torch.device(device)
        self._move(self.device)
        return self

    def _move(self, device: torch.device) -> None:  # noqa: B027 - optional hook
        pass

    @torch.no_grad()
    def encode(
        self, items: Sequence[Any], layer: str = FINAL_LAYER, batch_size: int = 32
    ) -> np.ndarray:
        """Encodes raw items straight to a (N, D) float32 array (no store, no skipping: bad items raise).

        With `length_bucketing`, all items are decoded first and batched longest first; rows keep the
        order of `items`.
        """
        (layer,) = self.resolve_layers(layer)
        out = np.zeros((len(items), self.layer_info(layer).dim), dtype=np.float32)  # (N, D)
        if self.length_bucketing:
            loaded = [self.load(x) for x in items]
            lengths = np.fromiter((self.input_length(x) for x in loaded), dtype=np.int64, count=len(loaded))
            order = np.argsort(-lengths, kind="stable")  # longest first
            for start in range(0, len(order), batch_size):
                pick = order[start : start + batch_size]
                batch = self.collate([loaded[i] for i in pick])
                out[pick] = self.forward(batch, [layer])[layer].float().cpu().numpy()
            return out
        for start in range(0, len(items), batch_size):
            loaded = [self.load(x) for x in items[start : start + batch_size]]
            out[start : start + len(loaded)] = self.forward(self.collate(loaded), [layer])[layer].float().cpu().numpy()
        return out
