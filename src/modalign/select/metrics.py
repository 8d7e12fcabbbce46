"""Representation similarity between two encoders on the same n items, behind a registry.

Each metric compares X (n, d1) and Y (n, d2), row i of both being the same item (an image and its caption):

  linear_cka     Kornblith et al. 2019: HSIC(XX^T, YY^T) / sqrt(HSIC(XX^T, XX^T) HSIC(YY^T, YY^T)) with the
                 biased HSIC on column-centred features, computed in feature space:
                 ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F). Memory O(d1^2 + d2^2 + d1 d2), never n x n.
  unbiased_cka   the same ratio with the unbiased HSIC estimator of Song et al. 2012 (as in Kornblith's
                 `feature_space_linear_cka(debiased=True)`). For linear kernels every term of the estimator
                 reduces to feature-space Grams, row norms and row sums, so it is exact on any n (no subsample):
                   tr(K~L~)     = ||X^T Y||_F^2 - sum_i |x_i|^2 |y_i|^2
                   1^T K~ 1     = |sum_i x_i|^2 - sum_i |x_i|^2
                   1^T K~ L~ 1  = sum_j (x_j . sum_i x_i - |x_j|^2) (y_j . sum_i y_i - |y_j|^2)
                 (K~ = XX^T with a zeroed diagonal). Needs n >= 4. Unlike the biased estimator it stays near 0
                 for independent features even when d is not small next to n.
  mutual_knn     Huh et al. 2024 ("The Platonic Representation Hypothesis"): for each item, its k nearest
                 neighbours (cosine, the item itself excluded) in X and in Y; the score is the mean over
                 items of |kNN_X(i) & kNN_Y(i)| / k. 1 = identical neighbourhoods; independent features
                 give about k / (n - 1).
  cknna          Huh et al.'s CKNNA: CKA restricted to mutual neighbours. With M_ij = 1 when j is among the
                 k nearest neighbours of i in both X and Y, K = cosine Gram of X, L of Y:
                 HSIC_u(M o K, M o L) / sqrt(HSIC_u(M_X o K, M_X o K) HSIC_u(M_Y o L, M_Y o L)), HSIC_u the
                 unbiased estimator above. M has at most n k non-zeros, so it is computed from the kNN
                 lists in O(n k) memory: exact on any n, no subsample.

The kNN search works on normalised rows in blocks of rows (`block` x n similarities at a time), so no
n x n matrix is ever held; at n = 100k it is O(n^2 d) time but only O(block n + n k) memory besides one
normalised float32 copy of the features. CKA accumulates its Grams over blocks of rows in float64.
Measured on this 2-core machine (one thread): n = 100k, d = 512 / 384: linear and unbiased CKA 2.4 s each;
mutual k-NN / CKNNA at n = 20k, k = 10: 9 s / 13 s.

Input handling, so that a score is never silently wrong:
  * NaN / inf anywhere -> ValueError naming how many entries.
  * Rows must match (same n); n too small for the metric (k + 1 for the kNN metrics, 4 for unbiased
    CKA, 2 for linear CKA) -> ValueError saying what is needed.
  * Constant features (zero variance over the items) carry no information: every metric centres columns
    first, so they contribute exactly nothing. If ALL features of one side are constant the similarity is
    undefined -> ValueError.
  * Duplicate items (exact repeats, e.g. two stamps with the same caption) are kept: a duplicate is its
    twin's nearest neighbour at similarity 1, which is what the encoder says. Only a tie at the k-th place
    (more tied items than places left) needs a rule, since torch.topk picks among ties arbitrarily: the
    places go to the lowest-index items, in X and in Y alike, so the score is deterministic and identical
    inputs give 1. How many items had such a tie is logged (INFO). CKA needs no rule: it uses every row.

    register_metric("my_metric", fn, "description", uses_k=False)
    list_metrics()                      # ["cknna", "linear_cka", ...]; METRICS.descriptions() with text
    compute_metric("mutual_knn", X, Y, k=10)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from modalign.utils.registry import Registry

logger = logging.getLogger(__name__)

ROW_BLOCK = 8192  # rows per block when accumulating Grams
KNN_BLOCK_ELEMENTS = 2**24  # similarities held at once in the kNN search (block rows x n), 64 MB float32


# ---- checked inputs ----------------------------------------------------------------------------------------
class Features:
    """One (n, d) feature matrix, checked once, with what metrics derive from it cached.

    Pass the same Features object to several metric calls (e.g. one image layer against many text
    layers) and its centred Gram and kNN lists are computed once.
    """

    def __init__(self, x: np.ndarray | torch.Tensor | Features, name: str = "X"):
        source: np.ndarray | torch.Tensor = x.x if isinstance(x, Features) else x
        arr = source.detach().cpu().numpy() if isinstance(source, torch.Tensor) else np.asarray(source)
        if arr.ndim != 2:
            raise ValueError(f"{name} must be a 2-d (items, features) matrix, got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"{name} must hold numbers, got dtype {arr.dtype}")
        bad = _count_nonfinite(arr)
        if bad:
            raise ValueError(f"{name} holds {bad} NaN/inf value(s) (of {arr.size}); clean or drop those items first")
        self.x: np.ndarray = arr  # (n, d), any float dtype; converted block by block
        self.name = name
        self._mean: np.ndarray | None = None
        self._gram: np.ndarray | None = None
        self._unbiased: tuple[np.ndarray, np.ndarray] | None = None
        self._knn: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def dim(self) -> int:
        return self.x.shape[1]

    def blocks(self, block: int = ROW_BLOCK) -> Any:
        """Yields (start, (b, d) float64 centred rows)."""
        mean = self.mean()
        for start in range(0, self.n, block):
            yield start, np.asarray(self.x[start : start + block], dtype=np.float64) - mean

    def mean(self) -> np.ndarray:
        if self._mean is None:
            total = np.zeros(self.dim, dtype=np.float64)
            for start in range(0, self.n, ROW_BLOCK):
                total += np.asarray(self.x[start : start + ROW_BLOCK], dtype=np.float64).sum(axis=0)
            self._mean = total / max(self.n, 1)
        return self._mean

    def gram(self) -> np.ndarray:
        """(d, d) X_c^T X_c of the centred features."""
        if self._gram is None:
            g = np.zeros((self.dim, self.dim), dtype=np.float64)
            for _, xb in self.blocks():
                g += xb.T @ xb
            self._gram = g
        return self._gram

    def check_variance(self) -> None:
        if not np.any(np.diag(self.gram()) > 0):
            raise ValueError(f"every feature of {self.name} is constant over the {self.n} items: the similarity "
                             f"is undefined; check the encoder output (or the items: are they all the same?)")

    def unbiased_terms(self) -> tuple[np.ndarray, np.ndarray]:
        """(n,) squared row norms |x_i|^2 and (n,) row sums of K~ (x_j . sum_i x_i - |x_j|^2), centred rows."""
        if self._unbiased is not None:
            return self._unbiased
        sq = np.empty(self.n, dtype=np.float64)
        for start, xb in self.blocks():
            sq[start : start + len(xb)] = np.einsum("ij,ij->i", xb, xb)
        # centred: sum_i x_i = 0 up to rounding; kept in the formula so that it stays exact as written
        total = np.zeros(self.dim, dtype=np.float64)
        for _, xb in self.blocks():
            total += xb.sum(axis=0)
        rowsum = np.empty(self.n, dtype=np.float64)
        for start, xb in self.blocks():
            rowsum[start : start + len(xb)] = xb @ total - sq[start : start + len(xb)]
        self._unbiased = (sq, rowsum)
        return self._unbiased

    def unit_rows(self) -> torch.Tensor:
        """(n, d) float32 centred, L2-normalised rows."""
        out = torch.empty(self.x.shape, dtype=torch.float32)
        for start, xb in self.blocks():
            out[start : start + len(xb)] = torch.from_numpy(xb).float()
        return torch.nn.functional.normalize(out, dim=1)

    def knn(self, k: int, block: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Each item's k nearest other items by cosine: (indices (n, k) int64, similarities (n, k) float32),
        best first; a tie at the k-th place goes to the lower index. Cached per k."""
        if k not in self._knn:
            self._knn[k] = knn_search(self.unit_rows(), k, block)
        return self._knn[k]


def _count_nonfinite(arr: np.ndarray) -> int:
    if not np.issubdtype(arr.dtype, np.floating):
        return 0
    return int(sum(np.count_nonzero(~np.isfinite(arr[s : s + ROW_BLOCK])) for s in range(0, len(arr), ROW_BLOCK)))


def _pair(x: Any, y: Any) -> tuple[Features, Features]:
    fx = x if isinstance(x, Features) else Features(x, "X")
    fy = y if isinstance(y, Features) else Features(y, "Y")
    if fx.n != fy.n:
        raise ValueError(f"X and Y must describe the same items row by row; got {fx.n} and {fy.n} rows")
    return fx, fy


def _need(n: int, at_least: int, metric: str, why: str) -> None:
    if n < at_least:
        raise ValueError(f"{metric} needs at least {at_least} items ({why}); got {n}")


def _cross_gram(fx: Features, fy: Features) -> np.ndarray:
    """(d2, d1) Y_c^T X_c, accumulated over row blocks."""
    out = np.zeros((fy.dim, fx.dim), dtype=np.float64)
    for (_, xb), (_, yb) in zip(fx.blocks(), fy.blocks(), strict=True):
        out += yb.T @ xb
    return out


# ---- CKA -----------------------------------------------------------------------------------------------------
def linear_cka(x: Any, y: Any) -> float:
    """Linear CKA (biased HSIC) in feature space: ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), centred columns."""
    fx, fy = _pair(x, y)
    _need(fx.n, 2, "linear_cka", "one item has no variance")
    fx.check_variance()
    fy.check_variance()
    cross = np.sum(_cross_gram(fx, fy) ** 2)
    return float(cross / (np.linalg.norm(fx.gram()) * np.linalg.norm(fy.gram())))


def _hsic_unbiased_linear(fx: Features, fy: Features, cross_sq: float) -> float:
    """Unbiased HSIC (Song et al. 2012) of the linear kernels of fx and fy, times n(n-3) (cancels in CKA)."""
    n = fx.n
    sqx, rx = fx.unbiased_terms()
    sqy, ry = fy.unbiased_terms()
    trace = cross_sq - float(np.dot(sqx, sqy))  # tr(K~ L~)
    sum_k, sum_l = float(rx.sum()), float(ry.sum())  # 1^T K~ 1, 1^T L~ 1
    return trace + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 * float(np.dot(rx, ry)) / (n - 2)


def unbiased_cka(x: Any, y: Any) -> float:
    """Linear CKA with the unbiased HSIC estimator; exact on any n via feature-space terms (module doc)."""
    fx, fy = _pair(x, y)
    _need(fx.n, 4, "unbiased_cka", "the unbiased HSIC estimator divides by n - 3")
    fx.check_variance()
    fy.check_variance()
    xy = _hsic_unbiased_linear(fx, fy, float(np.sum(_cross_gram(fx, fy) ** 2)))
    xx = _hsic_unbiased_linear(fx, fx, float(np.sum(fx.gram() ** 2)))
    yy = _hsic_unbiased_linear(fy, fy, float(np.sum(fy.gram() ** 2)))
    if xx <= 0 or yy <= 0:
        raise ValueError(f"unbiased_cka is undefined here: the unbiased self-HSIC is not positive (X: {xx:.3g}, "
                         f"Y: {yy:.3g}), which happens with very few or nearly constant items; use more items")
    return float(xy / np.sqrt(xx * yy))


# ---- kNN metrics ---------------------------------------------------------------------------------------------
def knn_search(unit: torch.Tensor, k: int, block: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(n, k) indices and similarities of each row's k most similar other rows (rows already normalised).

    Blocks of `block` query rows at a time (default: as many as fit KNN_BLOCK_ELEMENTS similarities):
    memory O(block * n), never n x n.
    """
    n = unit.shape[0]
    if not 1 <= k <= n - 1:
        raise ValueError(f"k must be between 1 and n - 1 = {n - 1} (k nearest neighbours among the other items); "
                         f"got k={k}: use a smaller --k or more items")
    block = block or max(1, KNN_BLOCK_ELEMENTS // max(n, 1))
    idx = np.empty((n, k), dtype=np.int64)
    sims = np.empty((n, k), dtype=np.float32)
    n_tied = 0
    with torch.no_grad():
        for start in range(0, n, block):
            q = unit[start : start + block]  # (b, d)
            s = q @ unit.t()  # (b, n)
            rows = torch.arange(len(q))
            s[rows, rows + start] = float("-inf")  # never one's own neighbour
            i, v, tied = _topk_ties_to_lower_index(s, k)
            idx[start : start + len(q)] = i.numpy()
            sims[start : start + len(q)] = v.numpy()
            n_tied += tied
    if n_tied:
        logger.info("%d of %d items have neighbours tied at the k-th place (k=%d; exact duplicate items do "
                    "this); the ties went to the lower-index items", n_tied, n, k)
    return idx, sims


def _topk_ties_to_lower_index(s: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Row-wise top-k of (b, n) scores, best first, where a tie at the k-th place goes to the lowest indices
    (torch.topk picks among ties arbitrarily). Returns (indices (b, k), values (b, k), rows with such a tie)."""
    top = s.topk(k + 1 if k < s.shape[1] else k, dim=1)  # (b, k[+1]) sorted
    kth = top.values[:, k - 1 : k]  # (b, 1)
    straddle = top.values[:, k] == top.values[:, k - 1] if top.values.shape[1] > k else torch.zeros(len(s), dtype=torch.bool)
    if not bool(straddle.any()):
        return top.indices[:, :k], top.values[:, :k], 0
    rows = straddle.nonzero().view(-1)
    sub = s[rows]  # (r, n): only the rows with a tie at the boundary
    strict = sub > kth[rows]
    tie = sub == kth[rows]
    need = k - strict.sum(dim=1, keepdim=True)  # how many tied items fill the list
    chosen = strict | (tie & (tie.cumsum(dim=1) <= need))  # exactly k per row, ties by lowest index
    cols = chosen.nonzero()[:, 1].view(len(rows), k)  # (r, k) ascending index
    vals = sub.gather(1, cols)
    order = vals.argsort(dim=1, descending=True, stable=True)
    idx, values = top.indices[:, :k].clone(), top.values[:, :k].clone()
    idx[rows], values[rows] = cols.gather(1, order), vals.gather(1, order)
    return idx, values, len(rows)


def _knn_pair(x: Any, y: Any, k: int, metric: str) -> tuple[Features, Features]:
    fx, fy = _pair(x, y)
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"{metric}: k must be a positive integer, got {k!r}")
    _need(fx.n, k + 1, metric, f"k={k} neighbours per item plus the item itself")
    fx.check_variance()
    fy.check_variance()
    return fx, fy


def mutual_knn(x: Any, y: Any, k: int = 10, block: int | None = None) -> float:
    """Mean over items of |kNN_X(i) & kNN_Y(i)| / k (Huh et al. 2024); cosine on centred rows."""
    fx, fy = _knn_pair(x, y, k, "mutual_knn")
    ix, _ = fx.knn(k, block)
    iy, _ = fy.knn(k, block)
    return float(_overlap_counts(ix, iy).mean() / k)


def _overlap_counts(ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
    """(n,) |ix[i] & iy[i]| (each row of indices holds distinct values)."""
    both = np.sort(np.concatenate([ix, iy], axis=1), axis=1)  # (n, 2k)
    return (both[:, 1:] == both[:, :-1]).sum(axis=1)


def _hsic_unbiased_sparse(n: int, rows: np.ndarray, cols: np.ndarray, kv: np.ndarray, lv: np.ndarray) -> float:
    """Unbiased HSIC of two n x n matrices with the same sparsity (entries (rows, cols), values kv and lv),
    zero diagonal; times n(n-3) (cancels in the CKNNA ratio). O(nnz) memory."""
    if len(rows) == 0:
        return 0.0
    key = rows * n + cols
    order = np.argsort(key)
    key_sorted = key[order]
    # tr(K L^T)... the estimator uses sum(K~ * L~^T) = sum_ij K_ij L_ji: find each (i, j)'s reverse entry (j, i)
    rev = cols * n + rows
    pos = np.searchsorted(key_sorted, rev)
    pos = np.minimum(pos, len(key_sorted) - 1)
    has_rev = key_sorted[pos] == rev
    trace = float(np.sum(kv[has_rev] * lv[order[pos[has_rev]]]))
    sum_k, sum_l = float(kv.sum()), float(lv.sum())
    col_k = np.bincount(cols, weights=kv, minlength=n)  # 1^T K~  (column sums)
    row_l = np.bincount(rows, weights=lv, minlength=n)  # L~ 1    (row sums)
    return trace + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 * float(np.dot(col_k, row_l)) / (n - 2)


def cknna(x: Any, y: Any, k: int = 10, block: int | None = None) -> float:
    """CKNNA (Huh et al. 2024): unbiased CKA restricted to mutual k-nearest-neighbour pairs; O(n k) memory."""
    fx, fy = _knn_pair(x, y, k, "cknna")
    n = fx.n
    _need(n, 4, "cknna", "the unbiased HSIC estimator divides by n - 3")
    ix, sx = fx.knn(k, block)
    iy, sy = fy.knn(k, block)
    r = np.repeat(np.arange(n), k)
    ex, ey = r * n + ix.reshape(-1), r * n + iy.reshape(-1)  # edge keys i * n + j
    vx, vy = sx.reshape(-1).astype(np.float64), sy.reshape(-1).astype(np.float64)
    common, ax, ay = np.intersect1d(ex, ey, assume_unique=True, return_indices=True)
    kl = _hsic_unbiased_sparse(n, common // n, common % n, vx[ax], vy[ay])
    kk = _hsic_unbiased_sparse(n, ex // n, ex % n, vx, vx)
    ll = _hsic_unbiased_sparse(n, ey // n, ey % n, vy, vy)
    if kk <= 0 or ll <= 0:
        raise ValueError(f"cknna is undefined here: a self-similarity term is not positive (X: {kk:.3g}, Y: {ll:.3g}); "
                         f"this happens with very few items or a very small k; use more items or a larger k")
    return float(kl / np.sqrt(kk * ll))


# ---- registry ------------------------------------------------------------------------------------------------
MetricFn = Callable[..., float]


@dataclass(frozen=True)
class MetricEntry:
    name: str
    fn: MetricFn  # fn(x, y) or fn(x, y, k=...) -> float
    description: str
    uses_k: bool  # takes the neighbourhood size k


METRICS: Registry[MetricEntry] = Registry("similarity metric")


def register_metric(name: str, fn: MetricFn, description: str, uses_k: bool = False) -> None:
    """Adds a similarity metric; `fn(X, Y[, k=...])` takes two (n, d) matrices (or Features) of the same items."""
    METRICS.register(name, MetricEntry(name, fn, description, uses_k), description=description)


def list_metrics(pattern: str | None = None) -> list[str]:
    return METRICS.list(pattern)


def get_metric(name: str) -> MetricEntry:
    return METRICS.get(name)


def compute_metric(name: str, x: Any, y: Any, k: int = 10) -> float:
    """The metric `name` between X and Y; `k` goes to the metrics that use neighbourhoods."""
    entry = get_metric(name)
    return float(entry.fn(x, y, k=k) if entry.uses_k else entry.fn(x, y))


register_metric("linear_cka", linear_cka, "linear CKA, biased HSIC (Kornblith et al. 2019)")
register_metric("unbiased_cka", unbiased_cka, "linear CKA, unbiased HSIC (Song et al. 2012)")
register_metric("mutual_knn", mutual_knn, "mean overlap of the k-nearest-neighbour sets (Huh et al. 2024)", uses_k=True)
register_metric("cknna", cknna, "CKA on mutual k-nearest neighbours (Huh et al. 2024)", uses_k=True)
