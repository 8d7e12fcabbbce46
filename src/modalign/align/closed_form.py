"""Training-free baselines on the same cached features, saved as ordinary linear-projector models.

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
from dataclasses import replace

import torch

from modalign.align.features import FeatureSet
from modalign.align.map_utils import cca_from_moments
from modalign.align.projectors import ProjectorConfig
from modalign.align.trainer import evaluate_features
from modalign.errors import ConfigError

logger = logging.getLogger(__name__)


def _paired(train: FeatureSet, a: str, b: str) -> tuple[torch.Tensor, torch.Tensor]:
    ia, ib = train.all_pairs(a, b)
    if len(ia) < 2:
        raise ConfigError("need at least 2 positive pairs to fit a closed-form baseline")
    return train.features[a][ia].double(), train.features[b][ib].double()  # (P, da), (P, db)


def _set_linear(model, modality: str, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """weight: (out, in), bias: (out,) -> the tower's LinearProjector."""
    lin = model.projectors[modality].linear
    with torch.no_grad():
        lin.weight.copy_(weight.float())
        lin.bias.copy_(bias.float())


def _linear_towers(towers: dict, out_dim: int) -> dict:
    cfg = ProjectorConfig(type="linear", out_dim=out_dim, standardize=False)  # centring is in the bias
    return {m: replace(t, projector=cfg) for m, t in towers.items()}


def fit_ridge(towers: dict, train: FeatureSet, val: FeatureSet | None,
              alphas: Sequence[float] = (1e-3, 1e-2, 1e-1, 1.0, 10.0), image: str = "image", text: str = "text"):
    """Returns (AlignedModel, info). `alphas` are relative to the mean feature variance."""
    from modalign.model import AlignedModel

    x, y = _paired(train, image, text)
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    gram = xc.t() @ xc  # (dx, dx)
    xty = xc.t() @ yc  # (dx, dy)
    scale = gram.diagonal().mean()
    dy = y.shape[1]
    model = AlignedModel(_linear_towers(towers, dy), metadata={"method": "ridge"})
    _set_linear(model, text, torch.eye(dy, dtype=torch.float64), torch.zeros(dy, dtype=torch.float64))
    best = (-1.0, None)
    for alpha in alphas:
        w = torch.linalg.solve(gram + alpha * scale * torch.eye(len(gram), dtype=gram.dtype), xty)  # (dx, dy)
        _set_linear(model, image, w.t(), my - mx @ w)
        score = evaluate_features(model, val)["mean_recall@1"] if val is not None and len(alphas) > 1 else 0.0
        if score > best[0]:
            best = (score, alpha)
    alpha = best[1]
    w = torch.linalg.solve(gram + alpha * scale * torch.eye(len(gram), dtype=gram.dtype), xty)
    _set_linear(model, image, w.t(), my - mx @ w)
    model.metadata["ridge_alpha"] = alpha
    logger.info("ridge: alpha=%g (val mean_recall@1 %.4f)", alpha, best[0])
    return model, {"alpha": alpha}


def _pca(xc: torch.Tensor, k: int) -> torch.Tensor:
    """(d, k) top-k principal directions of centred data xc (n, d)."""
    _, _, vh = torch.linalg.svd(xc, full_matrices=False)
    return vh[:k].t()


def fit_procrustes(towers: dict, train: FeatureSet, val: FeatureSet | None = None, dim: int | None = None,
                   image: str = "image", text: str = "text"):
    """Returns (AlignedModel, info). `dim` defaults to min(d_image, d_text, n_pairs - 1)."""
    from modalign.model import AlignedModel

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
    model = AlignedModel(_linear_towers(towers, k), metadata={"method": "procrustes", "procrustes_dim": k})
    _set_linear(model, image, wx.t(), -mx @ wx)
    _set_linear(model, text, wy.t(), -my @ wy)
    return model, {"dim": k}


def cca_directions(x: torch.Tensor, y: torch.Tensor, reg: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Regularised CCA of paired rows x (P, dx), y (P, dy), already centred.

    Returns (wx (dx, m), wy (dy, m), corr (m,)) with m = min(dx, dy): x @ wx[:, i] and y @ wy[:, i] are the
    i-th pair of canonical variates, corr[i] their (regularised) correlation, in decreasing order.
    `reg` is relative to each side's mean feature variance.
    """
    n = len(x) - 1
    return cca_from_moments(x.t() @ x / n, y.t() @ y / n, x.t() @ y / n, reg)


def fit_cca(towers: dict, train: FeatureSet, val: FeatureSet | None = None,
            regs: Sequence[float] = (0.3, 1.0, 3.0), dims: Sequence[int | None] = (64, 128, 256, None),
            corr_power: float = 1.0, image: str = "image", text: str = "text"):
    """Returns (AlignedModel, info). Without `val`, the first reg and the last dim are used.

    `dims` None means every direction (min(d_image, d_text, n_pairs - 1)); a dim larger than that is
    clipped. Each direction is scaled by corr**corr_power, so weakly correlated ones weigh less.
    """
    from modalign.model import AlignedModel

    x, y = _paired(train, image, text)
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    k_max = min(x.shape[1], y.shape[1], x.shape[0] - 1)
    ks = sorted({min(k or k_max, k_max) for k in dims})

    cache: dict[float, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def build(reg: float, k: int):
        if reg not in cache:
            cache[reg] = cca_directions(xc, yc, reg)
        wx, wy, corr = cache[reg]
        scale = corr[:k].clamp_min(0) ** corr_power  # (k,)
        ax, ay = wx[:, :k] * scale, wy[:, :k] * scale  # (dx, k), (dy, k)
        model = AlignedModel(_linear_towers(towers, k), metadata={"method": "cca", "cca_dim": k, "cca_reg": reg})
        _set_linear(model, image, ax.t(), -mx @ ax)
        _set_linear(model, text, ay.t(), -my @ ay)
        return model, corr

    if val is None or (len(regs) == 1 and len(ks) == 1):
        model, corr = build(regs[0], ks[-1])
        return model, {"reg": regs[0], "dim": ks[-1], "top_corr": float(corr[0])}
    best: tuple[float, float, int] = (-1.0, regs[0], ks[-1])
    for reg in regs:
        for k in ks:
            score = evaluate_features(build(reg, k)[0], val)["mean_recall@1"]
            if score > best[0]:
                best = (score, reg, k)
    _, reg, k = best
    model, corr = build(reg, k)
    logger.info("cca: reg=%g dim=%d (val mean_recall@1 %.4f)", reg, k, best[0])
    return model, {"reg": reg, "dim": k, "top_corr": float(corr[0])}
