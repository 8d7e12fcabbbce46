"""An adapted classifier: an aligned model + a few-shot head, saved next to the model, usable from Python.

    clf = AdaptedClassifier.load("runs/mine/adapters/tux-cache")     # the model in runs/mine is loaded too
    clf.predict(["cat.png", "car.png"])                              # ['animals', 'vehicles']
    clf.predict_proba(images)                                        # (N, C) tensor

Saved layout: RUN/adapters/NAME/ holds adapter.json (format, class names, the model's weights hash,
the head kind, free-form metadata such as the data set and validation accuracy) and the head's own
head.json + head.safetensors (modalign.adapt). Loading refuses a model whose weights differ from the
ones the head was fitted on: the head reads that model's embedding space only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from modalign.adapt.heads import FewShotHead, load_head, save_head
from modalign.errors import ConfigError, MismatchError, NotFoundError
from modalign.model import AlignedModel
from modalign.utils.hashing import hash_state_dict
from modalign.utils.io import atomic_write_json
from modalign.utils.paths import user_path

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter.json"
FORMAT = "modalign.adapted_classifier"
ADAPTERS_DIR = "adapters"


def model_weights_hash(model: AlignedModel) -> str:
    """Hash of the model's projector weights and temperature: the embedding space a head was fitted in."""
    return hash_state_dict(model.state_dict(), length=16)


class AdaptedClassifier:
    def __init__(self, model: AlignedModel, head: FewShotHead, classnames: Sequence[str],
                 metadata: dict[str, Any] | None = None, modality: str = "image"):
        n_classes = head(torch.zeros(1, model.embed_dim)).shape[1]
        if n_classes != len(classnames):
            raise MismatchError(f"the head scores {n_classes} classes but {len(classnames)} class names were given")
        self.model, self.head, self.classnames = model, head.eval(), list(classnames)
        self.modality = modality
        self.metadata: dict[str, Any] = dict(metadata or {})

    @torch.no_grad()
    def logits(self, items: Sequence[Any], batch_size: int = 32) -> torch.Tensor:
        """(N, C) class logits of raw items (image paths or arrays)."""
        emb = self.model.encode(self.modality, list(items), batch_size=batch_size)  # (N, D), normalised
        return self.head(emb.cpu())

    def predict_proba(self, items: Sequence[Any], batch_size: int = 32) -> torch.Tensor:
        return self.logits(items, batch_size).softmax(dim=1)

    def predict(self, items: Sequence[Any], batch_size: int = 32) -> list[str]:
        """The predicted class name of each item."""
        return [self.classnames[i] for i in self.logits(items, batch_size).argmax(dim=1).tolist()]

    def predict_embeddings(self, emb: torch.Tensor) -> torch.Tensor:
        """(N,) class index of (N, D) embeddings already in the model's space (e.g. from an index)."""
        return self.head.predict(emb.float().cpu())

    # ---- save / load ----------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        folder = user_path(folder)
        save_head(self.head, folder)
        atomic_write_json(folder / ADAPTER_CONFIG, {
            "format": FORMAT, "kind": self.head.kind, "classnames": self.classnames, "modality": self.modality,
            "model_hash": model_weights_hash(self.model), "metadata": self.metadata})
        logger.info("saved the %s classifier (%d classes) to %s", self.head.kind, len(self.classnames), folder)
        return folder

    @classmethod
    def load(cls, folder: str | Path, model: AlignedModel | None = None, device: str = "cpu") -> AdaptedClassifier:
        """Loads RUN/adapters/NAME; the model defaults to RUN (two folders up), and must be the one fitted on."""
        folder = user_path(folder)
        cfg_path = folder / ADAPTER_CONFIG
        if not cfg_path.is_file():
            raise NotFoundError(f"{folder} is not a saved adapted classifier (no {ADAPTER_CONFIG}); save one with "
                                f"`modalign adapt RUN --images TREE --save NAME`")
        cfg = json.loads(cfg_path.read_text())
        if cfg.get("format") != FORMAT:
            raise MismatchError(f"{cfg_path} is not an adapted classifier config (format={cfg.get('format')!r})")
        if model is None:
            run = folder.parent.parent if folder.parent.name == ADAPTERS_DIR else None
            if run is None:
                raise NotFoundError(f"{folder} is not inside RUN/{ADAPTERS_DIR}/: pass the model it was fitted on")
            model = AlignedModel.from_pretrained(run, device=device)
        if model_weights_hash(model) != cfg["model_hash"]:
            raise MismatchError(f"the classifier in {folder} was fitted on another model's embeddings (weights hash "
                                f"{cfg['model_hash']}, this model's {model_weights_hash(model)}); refit it with "
                                f"`modalign adapt`")
        return cls(model, load_head(folder), cfg["classnames"], cfg.get("metadata"), cfg.get("modality", "image"))


def adapter_dir(run_dir: str | Path, name: str) -> Path:
    """Where `modalign adapt RUN --save NAME` writes: RUN/adapters/NAME."""
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"bad adapter name {name!r}: use a plain folder name such as 'tux-cache'")
    return user_path(run_dir) / ADAPTERS_DIR / name
