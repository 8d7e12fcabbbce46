"""Training-free baselines on the same cached features: each returns one affine map per modality.

The maps are plain tensors (x -> x W^T + b); modalign.workflows.methods turns them into ordinary
linear-projector AlignedModels.

ridge       image features -> text feature space by ridge regression (text tower = identity map);
            the penalty is picked on the validation split.
procrustes  both modalities centred, scaled, reduced by PCA to k dims, then the image side rotated onto
            the text side by the orthogonal Procrustes solution R = U V^T of svd(X^T Y).
cca         regularised canonical correlation analysis: each side centred and whitened with
            (C + r I)^-1/2, then the SVD of the whitened cross-covariance gives paired directions;
            both sides are projected onto the top-k of them (scaled by corr^power), so matched items
            get the same coordinates. r (relative to the mean feature variance) and k are picked on the
            validation split.
All are fitted on every positive (image, caption) pair of the training split.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from modalign.align.features import FeatureSet
from modalign.align.trainer import evaluate_features
from modalign.errors import ConfigError

logger = logging.getLogger(__name__)


def _paired(train: FeatureSet, a: str, b: str) -> tuple[torch.Tensor, torch.Tensor]:
    ia, ib = train.all_pairs(a, b)
    if len(ia) < 2:
        raise ConfigError("need at least 2 positive pairs to fit a closed-form baseline")
    return train.features[a][ia].double(), train.features[b][ib].double()  # (P, da), (P, db)


@dataclass
class LinearMap:
    """x (n, in) -> x @ weight.T + bias (n, out)."""

    weight: torch.Tensor  # (out, in)
    bias: torch.Tensor  # (out,)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.weight.dtype) @ self.weight.t() + self.bias

    @property
    def out_dim(self) -> int:
        return int(self.weight.shape[0])


@dataclass
class ClosedFormFit:
    """One affine map per modality into a shared space, and what was chosen (dims, penalties)."""

    maps: dict[str, LinearMap]
    info: dict[str, float | int] = field(default_factory=dict)

    def project(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """(n, in) -> (n, out) unit vectors: what evaluate_features reads from a model."""
        return F.normalize(self.maps[modality](x).float(), dim=-1)


def fit_ridge(train: FeatureSet, val: FeatureSet | None,
              alphas: Sequence[float] = (1e-3, 1e-2, 1e-1, 1.0, 10.0), image: str = "image",
              text: str = "text") -> ClosedFormFit:
    """Image -> text space by ridge regression (text map = identity). `alphas` are relative to the mean
    feature variance; the one with the best validation mean R@1 is kept."""
    x, y = _paired(train, image, text)
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    gram = xc.t() @ xc  # (dx, dx)
    xty = xc.t() @ yc  # (dx, dy)
    scale = gram.diagonal().mean()
    dy = y.shape[1]
    identity = LinearMap(torch.eye(dy, dtype=torch.float64), torch.zeros(dy, dtype=torch.float64))

    def build(alpha: float) -> ClosedFormFit:
        w = torch.linalg.solve(gram + alpha * scale * torch.eye(len(gram), dtype=gram.dtype), xty)  # (dx, dy)
        return ClosedFormFit({image: LinearMap(w.t(), my - mx @ w), text: identity}, {"ridge_alpha": alpha})

    best: tuple[float, float] = (-1.0, alphas[0])
    for alpha in alphas if val is not None and len(alphas) > 1 else alphas[:1]:
        score = evaluate_features(build(alpha), val)["mean_recall@1"] if val is not None and len(alphas) > 1 else 0.0
        if score > best[0]:
            best = (score, alpha)
    logger.info("ridge: alpha=%g (val mean_recall@1 %.4f)", best[1], best[0])
    return build(best[1])


def _pca(xc: torch.Tensor, k: int) -> torch.Tensor:
    """(d, k) top-k principal directions of centred data xc (n, d)."""
    _, _, vh = torch.linalg.svd(xc, full_matrices=False)
    return vh[:k].t()


def fit_procrustes(train: FeatureSet, val: FeatureSet | None = None, dim: int | None = None,
                   image: str = "image", text: str = "text") -> ClosedFormFit:
    """`dim` defaults to min(d_image, d_text, n_pairs - 1); `val` is not needed."""
    x, y = _paired(train, image, text)
    k = dim or min(x.shape[1], y.shape[1], x.shape[0] - 1)
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    sx, sy = xc.norm() / len(xc) ** 0.5, yc.norm() / len(yc) ** 0.5  # overall scale of each modality
    px, py = _pca(xc / sx, k), _pca(yc / sy, k)  # (dx, k), (dy, k)
    xk, yk = (xc / sx) @ px, (yc / sy) @ py  # (P, k)
    u, _, vh = torch.linalg.svd(xk.t() @ yk)
    r = u @ vh  # (k, k) orthogonal
    wx = px @ r / sx  # (dx, k): x -> (x - mx) wx
    wy = py / sy  # (dy, k)
    return ClosedFormFit({image: LinearMap(wx.t(), -mx @ wx), text: LinearMap(wy.t(), -my @ wy)},
                         {"procrustes_dim": k})


def _inv_sqrt(c: torch.Tensor, reg: float) -> torch.Tensor:
    """(C + reg I)^-1/2 for a symmetric PSD (d, d) matrix."""
    evals, evecs = torch.linalg.eigh(c)
    return (evecs * (evals.clamp_min(0) + reg).rsqrt()) @ evecs.t()


def cca_directions(x: torch.Tensor, y: torch.Tensor, reg: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Regularised CCA of paired rows x (P, dx), y (P, dy), already centred.

    Returns (wx (dx, m), wy (dy, m), corr (m,)) with m = min(dx, dy): x @ wx[:, i] and y @ wy[:, i] are the
    i-th pair of canonical variates, corr[i] their (regularised) correlation, in decreasing order.
    `reg` is relative to each side's mean feature variance.
    """
    n = len(x) - 1
    cx, cy, cxy = x.t() @ x / n, y.t() @ y / n, x.t() @ y / n  # (dx, dx), (dy, dy), (dx, dy)
    ix = _inv_sqrt(cx, reg * float(cx.diagonal().mean()))
    iy = _inv_sqrt(cy, reg * float(cy.diagonal().mean()))
    u, corr, vh = torch.linalg.svd(ix @ cxy @ iy, full_matrices=False)  # (dx, m), (m,), (m, dy)
    return ix @ u, iy @ vh.t(), corr


def fit_cca(train: FeatureSet, val: FeatureSet | None = None,
            regs: Sequence[float] = (0.3, 1.0, 3.0), dims: Sequence[int | None] = (64, 128, 256, None),
            corr_power: float = 1.0, image: str = "image", text: str = "text") -> ClosedFormFit:
    """Regularised CCA; reg and dim picked on `val` (without it, the first reg and the last dim).

    `dims` None means every direction (min(d_image, d_text, n_pairs - 1)); a dim larger than that is
    clipped. Each direction is scaled by corr**corr_power, so weakly correlated ones weigh less.
    """
    x, y = _paired(train, image, text)
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    k_max = min(x.shape[1], y.shape[1], x.shape[0] - 1)
    ks = sorted({min(k or k_max, k_max) for k in dims})

    cache: dict[float, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def build(reg: float, k: int) -> ClosedFormFit:
        if reg not in cache:
            cache[reg] = cca_directions(xc, yc, reg)
        wx, wy, corr = cache[reg]
        scale = corr[:k].clamp_min(0) ** corr_power  # (k,)
        ax, ay = wx[:, :k] * scale, wy[:, :k] * scale  # (dx, k), (dy, k)
        return ClosedFormFit({image: LinearMap(ax.t(), -mx @ ax), text: LinearMap(ay.t(), -my @ ay)},
                             {"cca_dim": k, "cca_reg": reg, "cca_top_corr": float(corr[0])})

    if val is None or (len(regs) == 1 and len(ks) == 1):
        return build(regs[0], ks[-1])
    best: tuple[float, float, int] = (-1.0, regs[0], ks[-1])
    for reg in regs:
        for k in ks:
            score = evaluate_features(build(reg, k), val)["mean_recall@1"]
            if score > best[0]:
                best = (score, reg, k)
    logger.info("cca: reg=%g dim=%d (val mean_recall@1 %.4f)", best[1], best[2], best[0])
    return build(best[1], best[2])
