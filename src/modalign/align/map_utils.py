"""Small numerical pieces shared by the closed-form maps (kernel CCA, relative representations, CCA)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def centred_unit(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """(N, d) -> (N, d): centred on the training mean, then scaled to unit length (cosine geometry)."""
    return F.normalize(x - mean.to(x.dtype), dim=-1)


def inv_sqrt_psd(c: torch.Tensor, reg: float = 0.0, rel_floor: float = 0.0) -> torch.Tensor:
    """(C + reg I)^-1/2 of a symmetric PSD (d, d) matrix, as a (d, r) factor W with W W^T = (C + reg I)^-1.

    Eigen-directions with eigenvalue <= rel_floor * largest are dropped (r <= d): they carry only
    rounding noise when C is a rank-deficient kernel matrix. With rel_floor = 0 every direction stays
    and W = V diag((evals + reg)^-1/2) V^T is the symmetric square root.
    """
    evals, evecs = torch.linalg.eigh(c)
    evals = evals.clamp_min(0)
    if rel_floor > 0:
        keep = evals > rel_floor * evals.max()
        return evecs[:, keep] * (evals[keep] + reg).rsqrt()  # (d, r)
    return (evecs * (evals + reg).rsqrt()) @ evecs.t()


def cca_from_moments(cxx: torch.Tensor, cyy: torch.Tensor, cxy: torch.Tensor,
                     reg: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Regularised CCA from covariances cxx (dx, dx), cyy (dy, dy), cxy (dx, dy) of centred paired data.

    Returns (wx (dx, m), wy (dy, m), corr (m,)), m = min(dx, dy), in decreasing correlation; `reg` is
    relative to each side's mean feature variance.
    """
    ix = inv_sqrt_psd(cxx, reg * float(cxx.diagonal().mean()))
    iy = inv_sqrt_psd(cyy, reg * float(cyy.diagonal().mean()))
    u, corr, vh = torch.linalg.svd(ix @ cxy @ iy, full_matrices=False)  # (dx, m), (m,), (m, dy)
    return ix @ u, iy @ vh.t(), corr


def paired_moments(fx: Callable[[torch.Tensor], torch.Tensor], fy: Callable[[torch.Tensor], torch.Tensor],
                   x: torch.Tensor, y: torch.Tensor, chunk: int = 8192) -> tuple[torch.Tensor, ...]:
    """Means and covariances of fx(x) (P, a) and fy(y) (P, b) over paired rows, a chunk of rows at a time.

    Returns (mean_x (a,), mean_y (b,), cxx (a, a), cyy (b, b), cxy (a, b)), covariances with 1/(P-1).
    The feature maps never exist whole: memory is chunk * (a + b), whatever P is.
    """
    n = len(x)
    if n < 2 or len(y) != n:
        raise ValueError(f"need at least 2 paired rows (got {len(x)} and {len(y)})")

    def moments(lo: int) -> list[torch.Tensor]:
        a, b = fx(x[lo:lo + chunk]), fy(y[lo:lo + chunk])  # (c, a), (c, b)
        return [a.sum(0), b.sum(0), a.t() @ a, b.t() @ b, a.t() @ b]

    acc = moments(0)
    for lo in range(chunk, n, chunk):
        acc = [u + v for u, v in zip(acc, moments(lo), strict=True)]
    sx, sy, sxx, syy, sxy = acc
    mx, my = sx / n, sy / n
    d = max(n - 1, 1)
    return (mx, my, (sxx - n * torch.outer(mx, mx)) / d, (syy - n * torch.outer(my, my)) / d,
            (sxy - n * torch.outer(mx, my)) / d)
