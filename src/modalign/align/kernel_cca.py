"""Polynomial kernel CCA with a Nystrom (landmark) feature map: a nonlinear closed-form alignment.

    image_map, text_map, corr = fit_kernel_cca(x, y, KernelCCAConfig(degree=3, reg=1.0))
    image_map.project(x_new)                     # (N, dx) -> (N, k); matched pairs get close coordinates

Each side is centred on its training mean and scaled to unit length (z), then compared with m
landmarks L (training rows) through the polynomial kernel k(z, l) = (z . l + coef0) ** degree.
Nystrom: phi(z) = k(z, L) K_LL^-1/2 (K_LL = k(L, L)) is an explicit feature map whose inner products
approximate the kernel; with every training row a landmark (m = P) they reproduce it exactly, so the
fit is exact kernel CCA (up to the form of the ridge). Regularised linear CCA (map_utils) on phi(x),
phi(y) then gives paired directions; both are folded into one (m, k) matrix per side:

    embedding(x) = k(z(x), L) @ weight + bias              # (N, m) @ (m, k)

Cost: O(P m^2) to fit (chunked: memory O(chunk * m)), O(m d) per item to embed; the saved projector
holds the m landmarks. `n_landmarks` caps m: below it the fit is exact, above it landmarks are a seeded
random subset of the training pairs (the approximation BENCHMARKS.md measures at 10k-50k pairs).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from modalign.align.map_utils import cca_from_moments, centred_unit, inv_sqrt_psd, paired_moments
from modalign.align.projectors import ProjectorConfig, register_projector
from modalign.errors import ConfigError
from modalign.utils.config import load_config

logger = logging.getLogger(__name__)


@dataclass
class KernelCCAConfig:
    degree: int = 3  # polynomial kernel degree (measured: 2 and 3 alike on Tux Paint, 3 kept)
    coef0: float = 1.0  # the kernel's constant: (z . l + coef0) ** degree keeps the lower-order terms
    reg: float = 1.0  # CCA ridge relative to the mean variance of the Nystrom features
    n_landmarks: int = 2048  # m: at most this many landmarks (all training pairs when there are fewer)
    dim: int | None = None  # keep the top `dim` canonical pairs (None: all)
    corr_power: float = 1.0  # each direction scaled by corr ** corr_power (weak ones weigh less)
    seed: int = 0  # which training pairs become landmarks when there are more than n_landmarks
    chunk: int = 4096  # rows per step when accumulating the covariances (bounds memory)


@dataclass
class KernelOptions:
    """What a saved kernel projector needs to rebuild its buffers (ProjectorConfig.options)."""

    n_landmarks: int = 0  # rows of `landmarks` / `weight` (required: > 0)
    degree: int = 3
    coef0: float = 1.0

    @classmethod
    def from_dict(cls, d: dict) -> KernelOptions:
        return load_config(cls, d, what="kernel projector")


def poly_kernel(z: torch.Tensor, landmarks: torch.Tensor, degree: int, coef0: float) -> torch.Tensor:
    """(N, d), (m, d) -> (N, m) polynomial kernel values."""
    return (z @ landmarks.t() + coef0) ** degree


@dataclass
class KernelMap:
    """One side of a fitted kernel CCA: embedding(x) = k(centred_unit(x, mean), landmarks) @ weight + bias."""

    mean: torch.Tensor  # (d,) training mean of the raw features
    landmarks: torch.Tensor  # (m, d) centred unit-length landmark rows
    weight: torch.Tensor  # (m, k)
    bias: torch.Tensor  # (k,)
    degree: int
    coef0: float

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """(N, d) raw features -> (N, k), in the map's dtype."""
        z = centred_unit(x.to(self.mean.dtype), self.mean)
        return poly_kernel(z, self.landmarks, self.degree, self.coef0) @ self.weight + self.bias

    def projector_config(self) -> ProjectorConfig:
        """The config that rebuilds this map as a KernelProjector (then `load_map`)."""
        return ProjectorConfig(type="kernel", out_dim=int(self.weight.shape[1]), standardize=False,
                               options=asdict(KernelOptions(len(self.landmarks), self.degree, self.coef0)))


def _landmark_rows(n: int, cfg: KernelCCAConfig) -> torch.Tensor:
    if n <= cfg.n_landmarks:
        return torch.arange(n)
    logger.info("kernel CCA: %d pairs > %d landmarks: Nystrom approximation on a random subset", n, cfg.n_landmarks)
    return torch.from_numpy(np.sort(np.random.default_rng(cfg.seed).choice(n, cfg.n_landmarks, replace=False)))


def fit_kernel_cca(x: torch.Tensor, y: torch.Tensor,
                   cfg: KernelCCAConfig | None = None) -> tuple[KernelMap, KernelMap, torch.Tensor]:
    """Kernel CCA of paired rows x (P, dx), y (P, dy). Returns (image-side map, text-side map, corr (k,))."""
    cfg = cfg or KernelCCAConfig()
    if cfg.degree < 1 or cfg.n_landmarks < 2 or cfg.reg < 0:
        raise ConfigError(f"kernel CCA needs degree >= 1, n_landmarks >= 2 and reg >= 0 (got {cfg})")
    if len(x) != len(y) or len(x) < 3:
        raise ConfigError(f"kernel CCA needs >= 3 paired rows (got {len(x)} and {len(y)})")
    x, y = x.double(), y.double()
    mx, my = x.mean(0), y.mean(0)
    rows = _landmark_rows(len(x), cfg)
    lx, ly = centred_unit(x[rows], mx), centred_unit(y[rows], my)  # (m, dx), (m, dy)
    # Nystrom whitening of each side's landmark kernel: (m, r) with r <= m (rank-deficient directions dropped)
    tx = inv_sqrt_psd(poly_kernel(lx, lx, cfg.degree, cfg.coef0), rel_floor=1e-10)
    ty = inv_sqrt_psd(poly_kernel(ly, ly, cfg.degree, cfg.coef0), rel_floor=1e-10)

    def phi_x(a: torch.Tensor) -> torch.Tensor:  # (c, dx) -> (c, rx)
        return poly_kernel(centred_unit(a, mx), lx, cfg.degree, cfg.coef0) @ tx

    def phi_y(b: torch.Tensor) -> torch.Tensor:  # (c, dy) -> (c, ry)
        return poly_kernel(centred_unit(b, my), ly, cfg.degree, cfg.coef0) @ ty

    fmx, fmy, cxx, cyy, cxy = paired_moments(phi_x, phi_y, x, y, cfg.chunk)
    wx, wy, corr = cca_from_moments(cxx, cyy, cxy, cfg.reg)  # (rx, q), (ry, q), (q,)
    k = min(wx.shape[1], len(x) - 1, cfg.dim or wx.shape[1])
    scale = corr[:k].clamp_min(0) ** cfg.corr_power  # (k,)
    ax, ay = wx[:, :k] * scale, wy[:, :k] * scale
    image_map = KernelMap(mx, lx, tx @ ax, -fmx @ ax, cfg.degree, cfg.coef0)
    text_map = KernelMap(my, ly, ty @ ay, -fmy @ ay, cfg.degree, cfg.coef0)
    logger.info("kernel CCA: %d pairs, %d landmarks, degree %d, reg %g -> %d dims (top corr %.3f)",
                len(x), len(rows), cfg.degree, cfg.reg, k, float(corr[0]))
    return image_map, text_map, corr[:k]


class KernelProjector(nn.Module):
    """A fitted KernelMap as a saved module: buffers mean, landmarks, weight, bias (float32)."""
    mean: torch.Tensor  # buffer
    landmarks: torch.Tensor  # buffer
    weight: torch.Tensor  # buffer
    bias: torch.Tensor  # buffer

    def __init__(self, in_dim: int, cfg: ProjectorConfig):
        super().__init__()
        opts = KernelOptions.from_dict(cfg.options)
        if opts.n_landmarks < 1 or opts.degree < 1:
            raise ConfigError(f"a kernel projector needs options n_landmarks >= 1 and degree >= 1 (got {cfg.options})")
        self.degree, self.coef0 = opts.degree, opts.coef0
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("landmarks", torch.zeros(opts.n_landmarks, in_dim))
        self.register_buffer("weight", torch.zeros(opts.n_landmarks, cfg.out_dim))
        self.register_buffer("bias", torch.zeros(cfg.out_dim))

    @torch.no_grad()
    def load_map(self, m: KernelMap) -> KernelProjector:
        for name in ("mean", "landmarks", "weight", "bias"):
            getattr(self, name).copy_(getattr(m, name).float())
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in_dim) -> (B, out_dim)
        z = centred_unit(x, self.mean)
        return poly_kernel(z, self.landmarks, self.degree, self.coef0) @ self.weight + self.bias  # (B, m) @ (m, k)


@register_projector("kernel")
def _kernel(in_dim: int, cfg: ProjectorConfig) -> nn.Module:
    return KernelProjector(in_dim, cfg)

