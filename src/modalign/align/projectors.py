"""Projector heads that map a frozen encoder's features into the shared space, behind a registry.

    create_projector(in_dim=1280, config=ProjectorConfig(type="mlp", out_dim=512))

A projector's `config` (a ProjectorConfig) plus its state_dict is all a saved model needs to rebuild it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from modalign.errors import ConfigError
from modalign.utils.config import load_config
from modalign.utils.registry import Registry

logger = logging.getLogger(__name__)

MAX_WIDTH = 1 << 20  # any projector width (out_dim, hidden_dim, rank, an input dim): checked before allocating
MAX_DEPTH = 64  # MLP layers


@dataclass
class ProjectorConfig:
    type: str = "mlp"  # a registered projector: "linear", "mlp", "lowrank", "star", "identity"
    out_dim: int = 512  # width of the shared embedding space
    hidden_dim: int = 1024  # MLP / star: width of the hidden layer(s)
    depth: int = 2  # MLP: number of Linear layers (>= 2)
    dropout: float = 0.1  # MLP / lowrank / star: dropout after each hidden activation
    residual: bool = True  # MLP / star: add a linear shortcut from input to output
    input_norm: bool = True  # MLP / lowrank / star: LayerNorm on the frozen features first (scales differ per encoder)
    rank: int = 64  # lowrank: width of the nonlinear low-rank residual on top of the linear map
    input_dropout: float = 0.0  # dropout on the frozen features themselves: a cheap augmentation on small data
    standardize: bool = True  # subtract the training-set feature mean and divide by its std (stored as buffers)
    options: dict[str, Any] = field(default_factory=dict)  # type-specific settings of the closed-form heads
    #                         ("kernel", "relative", "label-bridge", "ensemble"): what their weights' shapes need

    def __post_init__(self) -> None:
        self.options = dict(self.options)  # a copy: configs are shared between towers by `replace`

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProjectorConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"a projector config is a table of options, got {type(d).__name__}")
        cfg = load_config(cls, d, what="projector")
        cfg.check()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self) -> None:
        """Types and sizes, before anything is allocated (a hand-edited `depth: 1000000` or a width of
        10**12 is refused here, not after gigabytes of weights)."""
        for name, low, high in (("out_dim", 1, MAX_WIDTH), ("hidden_dim", 1, MAX_WIDTH), ("rank", 1, MAX_WIDTH),
                                ("depth", 1, MAX_DEPTH)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"projector {name} must be an integer in [{low}, {high}], got {value!r}")
        for name in ("dropout", "input_dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
                raise ConfigError(f"projector {name} must be a number in [0, 1), got {value!r}")
        for name in ("residual", "input_norm", "standardize"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"projector {name} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.type, str):
            raise ConfigError(f"projector type must be a name, got {self.type!r}")


ProjectorFactory = Callable[[int, ProjectorConfig], nn.Module]
# the closed-form heads (kernel, relative, label-bridge, centre, ensemble) register in their own modules
PROJECTORS: Registry[ProjectorFactory] = Registry("projector type", plugins=[
    "modalign.align.kernel_cca", "modalign.align.relative", "modalign.align.label_bridge", "modalign.align.ensemble"])


def register_projector(name: str, description: str = "") -> Callable[[ProjectorFactory], ProjectorFactory]:
    return PROJECTORS.register(name, description=description)


def list_projectors(pattern: str | None = None) -> list[str]:
    return PROJECTORS.list(pattern)


def create_projector(in_dim: int, config: ProjectorConfig) -> nn.Module:
    config.check()
    if isinstance(in_dim, bool) or not isinstance(in_dim, int) or in_dim > MAX_WIDTH:
        raise ConfigError(f"projector input width must be an integer up to {MAX_WIDTH}, got {in_dim!r}")
    factory = PROJECTORS.get(config.type)
    if in_dim <= 0 or config.out_dim <= 0:
        raise ConfigError(f"projector dims must be positive (in_dim={in_dim}, out_dim={config.out_dim})")
    return factory(in_dim, config)


class Standardize(nn.Module):
    """(x - mean) / std with the training set's per-feature statistics, saved with the model.

    Frozen features are anisotropic (e.g. post-ReLU image features share a large mean direction), which
    makes every cosine similarity alike; centring them first speeds up and stabilises contrastive training.
    """

    mean: torch.Tensor  # (dim,) buffers, saved with the model
    std: torch.Tensor

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:  # x: (N, dim) training features
        self.mean.copy_(x.mean(dim=0))
        self.std.copy_(x.std(dim=0).clamp_min(1e-6) if len(x) > 1 else torch.ones_like(self.std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, dim)
        scale = self.std.reciprocal()  # (dim,)
        # (x - mean) / std as one fused pass and one (B, dim) buffer instead of two
        return torch.addcmul(-self.mean * scale, x, scale)


def fit_input_statistics(projector: nn.Module, features: torch.Tensor) -> None:
    """Sets a projector's Standardize statistics (if it has one) from its training features."""
    for module in projector.modules():
        if isinstance(module, Standardize):
            module.fit(features)


class LinearProjector(nn.Module):
    """y = W x + b. Also the form the closed-form baselines (ridge, Procrustes) are saved in."""

    def __init__(self, in_dim: int, out_dim: int, input_dropout: float = 0.0, standardize: bool = False):
        super().__init__()
        self.standardize = Standardize(in_dim) if standardize else nn.Identity()
        self.input_dropout = nn.Dropout(input_dropout) if input_dropout > 0 else nn.Identity()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in_dim) -> (B, out_dim)
        return self.linear(self.input_dropout(self.standardize(x)))


class MLPProjector(nn.Module):
    """LayerNorm -> [Linear -> GELU -> Dropout] x (depth-1) -> Linear, plus an optional linear shortcut."""

    def __init__(self, in_dim: int, cfg: ProjectorConfig):
        super().__init__()
        if cfg.depth < 2:
            raise ConfigError(f"an MLP projector needs depth >= 2 (got {cfg.depth}); use type='linear' for one layer")
        self.standardize = Standardize(in_dim) if cfg.standardize else nn.Identity()
        self.norm = nn.LayerNorm(in_dim) if cfg.input_norm else nn.Identity()
        self.input_dropout = nn.Dropout(cfg.input_dropout) if cfg.input_dropout > 0 else nn.Identity()
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(cfg.depth - 1):
            layers += [nn.Linear(width, cfg.hidden_dim), nn.GELU(), nn.Dropout(cfg.dropout)]
            width = cfg.hidden_dim
        layers.append(nn.Linear(width, cfg.out_dim))
        self.mlp = nn.Sequential(*layers)
        self.shortcut = nn.Linear(in_dim, cfg.out_dim, bias=False) if cfg.residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in_dim) -> (B, out_dim)
        x = self.input_dropout(self.norm(self.standardize(x)))
        y = self.mlp(x)
        return y + self.shortcut(x) if self.shortcut is not None else y


class LowRankProjector(nn.Module):
    """y = A x + U gelu(V x): a full linear map plus a rank-r nonlinear residual (U starts at zero).

    Starts as a linear projector and can bend it where a linear map is not enough, at r * (in + out)
    extra weights instead of an MLP's hidden * (in + out).
    """

    def __init__(self, in_dim: int, cfg: ProjectorConfig):
        super().__init__()
        if cfg.rank < 1:
            raise ConfigError(f"a lowrank projector needs rank >= 1 (got {cfg.rank})")
        self.standardize = Standardize(in_dim) if cfg.standardize else nn.Identity()
        self.norm = nn.LayerNorm(in_dim) if cfg.input_norm else nn.Identity()
        self.input_dropout = nn.Dropout(cfg.input_dropout) if cfg.input_dropout > 0 else nn.Identity()
        self.linear = nn.Linear(in_dim, cfg.out_dim)  # A (and the bias)
        self.down = nn.Linear(in_dim, cfg.rank)  # V
        self.act = nn.GELU()
        self.dropout = nn.Dropout(cfg.dropout)
        self.up = nn.Linear(cfg.rank, cfg.out_dim, bias=False)  # U
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in_dim) -> (B, out_dim)
        x = self.input_dropout(self.norm(self.standardize(x)))
        return self.linear(x) + self.up(self.dropout(self.act(self.down(x))))  # (B, out) + (B, r) -> (B, out)


class StarProjector(nn.Module):
    """SAIL's "star" MLP: a gated hidden layer, the element-wise product of two branches.

    LayerNorm -> h = relu6(W1 x) * (W2 x) (hidden_dim wide, GLU-like) -> Dropout -> W3 h, plus an optional
    linear shortcut. The product makes the layer quadratic in x (Zhang et al. 2024/2025, after StarNet).
    """

    def __init__(self, in_dim: int, cfg: ProjectorConfig):
        super().__init__()
        self.standardize = Standardize(in_dim) if cfg.standardize else nn.Identity()
        self.norm = nn.LayerNorm(in_dim) if cfg.input_norm else nn.Identity()
        self.input_dropout = nn.Dropout(cfg.input_dropout) if cfg.input_dropout > 0 else nn.Identity()
        self.gate = nn.Linear(in_dim, cfg.hidden_dim)  # W1
        self.value = nn.Linear(in_dim, cfg.hidden_dim)  # W2
        self.act = nn.ReLU6()
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.hidden_dim, cfg.out_dim)  # W3
        self.shortcut = nn.Linear(in_dim, cfg.out_dim, bias=False) if cfg.residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in_dim) -> (B, out_dim)
        x = self.input_dropout(self.norm(self.standardize(x)))
        h = self.act(self.gate(x)) * self.value(x)  # (B, hidden)
        y = self.out(self.dropout(h))
        return y + self.shortcut(x) if self.shortcut is not None else y


@register_projector("identity")
def _identity(in_dim: int, cfg: ProjectorConfig) -> nn.Module:
    if in_dim != cfg.out_dim:
        raise ConfigError(f"an identity projector needs in_dim == out_dim (got {in_dim} and {cfg.out_dim})")
    return nn.Identity()


@register_projector("linear")
def _linear(in_dim: int, cfg: ProjectorConfig) -> nn.Module:
    return LinearProjector(in_dim, cfg.out_dim, cfg.input_dropout, cfg.standardize)


@register_projector("mlp")
def _mlp(in_dim: int, cfg: ProjectorConfig) -> nn.Module:
    return MLPProjector(in_dim, cfg)


@register_projector("lowrank")
def _lowrank(in_dim: int, cfg: ProjectorConfig) -> nn.Module:
    return LowRankProjector(in_dim, cfg)


@register_projector("star")
def _star(in_dim: int, cfg: ProjectorConfig) -> nn.Module:
    return StarProjector(in_dim, cfg)
