"""AlignedModel: frozen encoders + trained projectors, one tower per modality, saved as a folder.

    model = AlignedModel.from_pretrained("runs/tux")       # config.json + model.safetensors
    img = model.encode_image(["cat.png"])                  # (N, embed_dim), L2-normalised
    txt = model.encode_text(["a cat", "a car"])
    model.similarity(img, txt)                             # (N, M) cosine similarities

The folder holds no training code: config.json names each tower's encoder spec, layer, input dim and
weights fingerprint, and its projector config; model.safetensors holds the projector weights and the
learned temperature. Encoders are created lazily, on first use, and checked against what was saved.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modalign import __version__
from modalign.align.layer_mix import create_tower_module
from modalign.align.projectors import PROJECTORS, ProjectorConfig
from modalign.encoders.base import Encoder
from modalign.encoders.layers import encode_layers, layer_dims
from modalign.errors import ConfigError, MismatchError, NotFoundError
from modalign.utils.layer_spec import as_layer_list, normalize_layer_spec
from modalign.utils.paths import user_path

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "modalign.aligned_model"


@dataclass
class TowerConfig:
    modality: str  # "image" | "text" | "audio" ...
    encoder: str  # encoder spec string, e.g. "effnet-lite0", "st:sentence-transformers/all-MiniLM-L6-v2"
    layer: str | list[str]  # encoder layer the projector reads, or several (see modalign.align.layer_mix)
    input_dim: int  # width of that layer's pooled features (several layers: the sum of their widths)
    encoder_fingerprint: str  # hash of the encoder weights the projector was trained on
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    layer_mix: str = "concat"  # several layers: "concat" them, or a learned softmax-weighted "mean"

    def __post_init__(self) -> None:
        self.layer = normalize_layer_spec(self.layer)  # ["final"] -> "final"

    @property
    def layers(self) -> list[str]:
        return as_layer_list(self.layer)

    def to_dict(self) -> dict[str, Any]:
        d = {**asdict(self), "projector": self.projector.to_dict()}
        if isinstance(self.layer, str):
            del d["layer_mix"]  # a single layer has no mix: its config.json reads as before layer lists
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TowerConfig:
        return cls(**{**d, "projector": ProjectorConfig.from_dict(d["projector"])})


class AlignedModel(nn.Module):
    def __init__(self, towers: dict[str, TowerConfig], logit_scale: float = float(np.log(1 / 0.07)),
                 metadata: dict[str, Any] | None = None):
        super().__init__()
        dims = {t.projector.out_dim for t in towers.values()}
        if len(dims) != 1:
            raise ConfigError(f"all towers must project to the same width; got {dims}")
        self.towers = dict(towers)
        self.embed_dim = dims.pop()
        self.projectors = nn.ModuleDict({m: create_tower_module(t.layer, t.input_dim, t.layer_mix, t.projector)
                                         for m, t in towers.items()})
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)))
        self.metadata: dict[str, Any] = dict(metadata or {})  # training data, metrics, method ... (free form)
        self._encoders: dict[str, Encoder] = {}
        self.eval()

    # ---- features -> shared space -------------------------------------------------------------
    @property
    def modalities(self) -> list[str]:
        return list(self.towers)

    def project(self, modality: str, features: np.ndarray | torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """(N, input_dim) frozen-encoder features -> (N, embed_dim) shared-space embeddings."""
        tower = self._tower(modality)
        x = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features)
        x = x.float().to(self.logit_scale.device)
        if x.ndim != 2 or x.shape[1] != tower.input_dim:
            raise MismatchError(
                f"{modality} features have shape {tuple(x.shape)}; the {modality} projector expects "
                f"(N, {tower.input_dim}) from {tower.encoder} layer {tower.layer!r}"
            )
        y = self.projectors[modality](x)
        return F.normalize(y, dim=-1) if normalize else y

    # ---- raw inputs -> shared space -----------------------------------------------------------
    def encoder(self, modality: str) -> Encoder:
        """The tower's frozen encoder, created on first use and checked against the saved config."""
        if modality not in self._encoders:
            from modalign.encoders.registry import create_encoder

            tower = self._tower(modality)
            self.set_encoder(modality, create_encoder(tower.encoder, device=str(self.logit_scale.device)))
        return self._encoders[modality]

    def set_encoder(self, modality: str, encoder: Encoder, check_fingerprint: bool = True) -> None:
        """Attaches an encoder object (e.g. the same model from a local path); refuses a mismatching one."""
        tower = self._tower(modality)
        problems = []
        if encoder.modality != tower.modality:
            problems.append(f"modality is {encoder.modality!r}, expected {tower.modality!r}")
        try:
            dim = sum(layer_dims(encoder, tower.layer))
            if dim != tower.input_dim:
                what = f"layer {tower.layer!r} gives" if isinstance(tower.layer, str) else f"layers {tower.layer} give"
                problems.append(f"{what} {dim}-d features, the projector expects {tower.input_dim}")
        except ValueError as e:
            problems.append(str(e))
        if check_fingerprint and not problems and encoder.fingerprint() != tower.encoder_fingerprint:
            problems.append(
                f"weights fingerprint {encoder.fingerprint()} differs from the one trained on "
                f"({tower.encoder_fingerprint}): a different checkpoint of the model"
            )
        if problems:
            raise MismatchError(
                f"encoder {encoder.spec!r} does not match the {modality} tower of this model "
                f"(trained with {tower.encoder!r}): " + "; ".join(problems)
                + ". Pass the encoder it was trained with (from_pretrained(..., encoders={...}))"
                + (", or check_fingerprint=False to accept other weights of the same architecture" if
                   all("fingerprint" in p for p in problems) else "")
            )
        self._encoders[modality] = encoder

    @torch.no_grad()
    def encode(self, modality: str, items: Sequence[Any], batch_size: int = 32) -> torch.Tensor:
        """Raw items (image paths/arrays, strings ...) -> (N, embed_dim) normalised embeddings."""
        enc = self.encoder(modality)
        feats = encode_layers(enc, list(items), self._tower(modality).layer, batch_size=batch_size)
        return self.project(modality, feats)

    def encode_image(self, images: Sequence[Any], batch_size: int = 32) -> torch.Tensor:
        return self.encode("image", images, batch_size)

    def encode_text(self, texts: Sequence[str] | str, batch_size: int = 64) -> torch.Tensor:
        return self.encode("text", [texts] if isinstance(texts, str) else texts, batch_size)

    def similarity(self, a: torch.Tensor, b: torch.Tensor, scaled: bool = False) -> torch.Tensor:
        """(N, M) cosine similarities; times exp(logit_scale) (CLIP's logits) when scaled."""
        sim = F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).t()
        return sim * self.logit_scale.exp() if scaled else sim

    # ---- save / load --------------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "modalign_version": __version__,
            "embed_dim": self.embed_dim,
            "towers": {m: t.to_dict() for m, t in self.towers.items()},
            # which module registers each projector type, so a reload can import it (or say which to import)
            "projector_modules": {t.projector.type: PROJECTORS.get(t.projector.type).__module__
                                  for t in self.towers.values()},
            "metadata": self.metadata,
        }

    def save_pretrained(self, directory: str | Path) -> Path:
        from modalign.utils.io import atomic_write, atomic_write_json

        directory = user_path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write(directory / WEIGHTS_NAME, lambda f: f.write(_safetensors_bytes(state)))
        atomic_write_json(directory / CONFIG_NAME, self.config_dict())
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, encoders: dict[str, str | Encoder] | None = None,
                        device: str = "cpu", check_fingerprint: bool = True) -> AlignedModel:
        """Loads a saved folder; `encoders` replaces a tower's encoder (spec or object), checked for a match."""
        from safetensors.torch import load_file

        if str(directory).startswith("hf-hub:"):  # a Hugging Face Hub repo: download (or find in cache) first
            from modalign.utils.hub import resolve

            directory = resolve(str(directory))
        directory = user_path(directory)
        cfg_path = directory / CONFIG_NAME
        if not cfg_path.is_file():
            raise NotFoundError(f"{directory} is not a saved modalign model: no {CONFIG_NAME} in it")
        cfg = json.loads(cfg_path.read_text())
        if cfg.get("format") != FORMAT:
            raise MismatchError(f"{cfg_path} is not a modalign model config (format={cfg.get('format')!r})")
        _import_projector_modules(cfg.get("projector_modules", {}))
        towers = {m: TowerConfig.from_dict(t) for m, t in cfg["towers"].items()}
        model = cls(towers, metadata=cfg.get("metadata"))
        state = load_file(str(directory / WEIGHTS_NAME))
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
        if missing or unexpected or wrong:
            raise MismatchError(
                f"{directory / WEIGHTS_NAME} does not match {CONFIG_NAME}: "
                + "; ".join(filter(None, [
                    f"missing tensors {missing[:5]}" if missing else "",
                    f"unexpected tensors {unexpected[:5]}" if unexpected else "",
                    "shape mismatch " + ", ".join(f"{k}: saved {tuple(state[k].shape)} vs config "
                                                  f"{tuple(expected[k].shape)}" for k in wrong[:5]) if wrong else "",
                ]))
            )
        model.load_state_dict(state)
        model.to(device)
        for modality, enc in (encoders or {}).items():
            if isinstance(enc, str):
                from modalign.encoders.registry import create_encoder

                enc = create_encoder(enc, device=device)
            model.set_encoder(modality, enc, check_fingerprint=check_fingerprint)
        return model

    def _tower(self, modality: str) -> TowerConfig:
        if modality not in self.towers:
            raise KeyError(f"this model has no {modality!r} tower; it has: {', '.join(self.towers)}")
        return self.towers[modality]


def _import_projector_modules(modules: dict[str, str]) -> None:
    """Registers the saved projector types: modalign's own modules are imported; any other module must
    be imported by the caller first (a config file never makes us import code it names)."""
    for ptype, module in modules.items():
        if ptype in PROJECTORS:
            continue
        if module == "modalign" or module.startswith("modalign."):
            importlib.import_module(module)
        else:
            raise ConfigError(f"projector type {ptype!r} is registered by module {module!r}; import it "
                              f"(`import {module}`) before loading this model")


def _safetensors_bytes(state: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save(state, metadata={"format": "pt"})
