"""Few-shot classification heads on aligned image embeddings, and the data they are fitted on.

A head maps (N, D) L2-normalised image embeddings to (N, C) class logits. It is fitted on a few
labelled embeddings per class (the shots), with its hyper-parameters chosen on a separate validation
set, and it is a small module of tensors that saves and reloads itself (head.json + head.safetensors)
with no fitting code. Registered heads (HEADS; each in its own module):

  zeroshot   nearest class-prompt embedding (no shots): the baseline every head is measured against
  probe      multinomial logistic regression, L2 strength chosen on validation (probe.py)
  cache      Tip-Adapter's training-free key-value cache blended with zero-shot logits (cache.py)
  prototype  class embeddings initialised from the prompts and refined on the shots (prototypes.py)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from modalign.errors import ConfigError, MismatchError, NotFoundError
from modalign.utils.registry import Registry

logger = logging.getLogger(__name__)

HEAD_CONFIG = "head.json"
HEAD_WEIGHTS = "head.safetensors"
FORMAT = "modalign.fewshot_head"


@dataclass
class FewShotData:
    """What a head is fitted on: embeddings of the shots and of a validation set, and the class prompts."""

    train_x: torch.Tensor  # (N_train, D) normalised image embeddings of the shots
    train_y: torch.Tensor  # (N_train,) int64 class index
    val_x: torch.Tensor  # (N_val, D) normalised embeddings of validation items (hyper-parameter choice)
    val_y: torch.Tensor  # (N_val,) int64
    class_emb: torch.Tensor  # (C, D) normalised zero-shot class embeddings (prompt ensemble)
    scale: float  # the model's logit scale exp(t): zero-shot logits = scale * cosine

    def __post_init__(self) -> None:
        self.train_x = F.normalize(self.train_x.float(), dim=-1)
        self.val_x = F.normalize(self.val_x.float(), dim=-1)
        self.class_emb = F.normalize(self.class_emb.float(), dim=-1)
        self.train_y, self.val_y = self.train_y.long(), self.val_y.long()
        n_classes, dim = self.class_emb.shape
        for name, x, y in (("train", self.train_x, self.train_y), ("val", self.val_x, self.val_y)):
            if x.ndim != 2 or x.shape[1] != dim or len(x) != len(y):
                raise MismatchError(f"{name} embeddings {tuple(x.shape)} with {len(y)} labels do not match "
                                    f"{n_classes} class embeddings of width {dim}")
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= n_classes):
                raise ConfigError(f"{name} labels must lie in [0, {n_classes}); got {int(y.min())}..{int(y.max())}")
        if len(self.train_y) == 0:
            raise ConfigError("no training shots: a few-shot head needs at least one labelled item")

    @property
    def n_classes(self) -> int:
        return int(self.class_emb.shape[0])

    def validation(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The validation set, or the shots themselves when there is none (then selection can overfit)."""
        if len(self.val_y):
            return self.val_x, self.val_y
        logger.warning("no validation items: hyper-parameters are chosen on the training shots")
        return self.train_x, self.train_y


class FewShotHead(nn.Module):
    """Base class: subclasses hold tensors, implement logits(), and list their scalar settings in `hyper`."""

    kind: ClassVar[str] = ""

    def __init__(self, **hyper: float) -> None:
        super().__init__()
        self.hyper: dict[str, float] = {k: float(v) for k, v in hyper.items()}  # chosen on validation

    def logits(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """(N, D) embeddings -> (N, C) logits."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(F.normalize(x.float(), dim=-1))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) class index of (N, D) embeddings."""
        return self(x).argmax(dim=1)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C) class probabilities (softmax of the logits)."""
        return self(x).softmax(dim=1)

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], **hyper: float) -> FewShotHead:  # pragma: no cover
        """The head from its saved tensors and hyper-parameters."""
        raise NotImplementedError

    @classmethod
    def fit(cls, data: FewShotData) -> FewShotHead:  # pragma: no cover
        """Fitted on data's shots, hyper-parameters chosen on data's validation set."""
        raise NotImplementedError

    @classmethod
    def fit_fixed(cls, data: FewShotData, **hyper: float) -> FewShotHead:  # pragma: no cover
        """Fitted on data's shots with the given hyper-parameters (no search; data's validation unused)."""
        raise NotImplementedError


HeadFit = Callable[[FewShotData], FewShotHead]
HEADS: Registry[type[FewShotHead]] = Registry(
    "few-shot head", plugins=["modalign.adapt.probe", "modalign.adapt.cache", "modalign.adapt.prototypes"])


def register_head(cls: type[FewShotHead]) -> type[FewShotHead]:
    """Class decorator: registers a head under its `kind`."""
    return HEADS.register(cls.kind)(cls)


def fit_head(kind: str, data: FewShotData) -> FewShotHead:
    """Fits the registered head `kind` on data's shots, hyper-parameters chosen on data's validation set."""
    return HEADS.get(kind).fit(data)


def refit_head(head: FewShotHead, data: FewShotData) -> FewShotHead:
    """The same kind of head with the same (already chosen) hyper-parameters, fitted on other shots: e.g. on
    shots and validation items together once the validation set has done its job (CLIP_benchmark's refit)."""
    return type(head).fit_fixed(data, **head.hyper)


@register_head
class ZeroShotHead(FewShotHead):
    """nearest class-prompt embedding (no shots used)"""
    kind = "zeroshot"
    class_emb: torch.Tensor  # buffer (C, D)

    def __init__(self, class_emb: torch.Tensor, scale: float):
        super().__init__(scale=scale)
        self.register_buffer("class_emb", F.normalize(class_emb.float(), dim=-1))  # (C, D)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.hyper["scale"] * x @ self.class_emb.t()

    @classmethod
    def fit(cls, data: FewShotData) -> ZeroShotHead:
        return cls(data.class_emb, data.scale)

    @classmethod
    def fit_fixed(cls, data: FewShotData, **hyper: float) -> ZeroShotHead:
        return cls(data.class_emb, hyper.get("scale", data.scale))

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], **hyper: float) -> ZeroShotHead:
        return cls(state["class_emb"], hyper["scale"])


def save_head(head: FewShotHead, folder: str | Path) -> Path:
    """Writes head.json (kind, hyper-parameters) and head.safetensors (its tensors) into `folder`."""
    from safetensors.torch import save

    from modalign.utils.io import atomic_write, atomic_write_json

    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    atomic_write(folder / HEAD_WEIGHTS, lambda f: f.write(save(state, metadata={"format": "pt"})))
    atomic_write_json(folder / HEAD_CONFIG, {"format": FORMAT, "kind": head.kind, "hyper": head.hyper})
    return folder


def load_head(folder: str | Path) -> FewShotHead:
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg_path = folder / HEAD_CONFIG
    if not cfg_path.is_file() or not (folder / HEAD_WEIGHTS).is_file():
        raise NotFoundError(f"{folder} holds no saved few-shot head ({HEAD_CONFIG} + {HEAD_WEIGHTS})")
    cfg: dict[str, Any] = json.loads(cfg_path.read_text())
    if cfg.get("format") != FORMAT:
        raise MismatchError(f"{cfg_path} is not a few-shot head config (format={cfg.get('format')!r})")
    head = HEADS.get(cfg["kind"]).from_state(load_file(str(folder / HEAD_WEIGHTS)), **cfg.get("hyper", {}))
    return head.eval()
