"""InvGC: inverse graph convolution on the gallery, against hubness in cross-modal retrieval.

After "InvGC: Robust Cross-Modal Retrieval by Inverse Graph Convolution" (Wang et al., EMNLP Findings 2023).
A few gallery items ("hubs") end up near many queries. InvGC pushes every gallery embedding away from
its neighbours in two reference sets, a reference gallery G (e.g. the indexed items) and reference
queries Q (e.g. captions, for a text->image index):

    x' = x - r_g * mean_j A(x, g_j) g_j - r_q * mean_j A(x, q_j) q_j      (x, g, q unit vectors)

A is the adjacency. Plain InvGC: A(x, y) = cos(x, y) for every reference. LocalAdj: only the top
`local_k` references of x keep their similarity, the others count 0 (the paper's local adjacency, which
keeps far-away references from dragging every point alike). We use means instead of the paper's sums:
the same up to rescaling r, but r then does not depend on the reference set size. r_g and r_q are
chosen on held-out pairs (see `tune`). x' is NOT re-normalised (scores are q . x'): a hub, similar to
many references, loses norm and so score; re-normalising would undo exactly that.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from modalign.model import AlignedModel


@dataclass
class InvGCConfig:
    r_gallery: float = 0.3  # strength of the push away from reference gallery items
    r_query: float = 0.3  # strength of the push away from reference queries
    local_k: int = 0  # LocalAdj: keep only each item's top-k reference neighbours (0: plain InvGC, all)

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _convolve(x: np.ndarray, ref: np.ndarray, local_k: int, block: int = 2048) -> np.ndarray:
    """(n, d) mean_j A(x_i, ref_j) ref_j for each row of x."""
    out = np.zeros_like(x)
    if len(ref) == 0:
        return out
    k = min(local_k, len(ref)) if local_k > 0 else 0
    for s in range(0, len(x), block):
        sim = x[s:s + block] @ ref.T  # (b, m)
        if k:
            thresh = np.partition(sim, -k, axis=1)[:, -k][:, None]  # each row's k-th largest similarity
            sim = np.where(sim >= thresh, sim, 0.0)
            out[s:s + block] = sim @ ref / k
        else:
            out[s:s + block] = sim @ ref / len(ref)
    return out


def invgc(gallery: np.ndarray, ref_gallery: np.ndarray, ref_queries: np.ndarray,
          config: InvGCConfig) -> np.ndarray:
    """(n, d) gallery embeddings -> (n, d) adjusted embeddings (unit inputs, not re-normalised)."""
    x = _normalize(gallery)
    g, q = _normalize(ref_gallery), _normalize(ref_queries)
    y = x - config.r_gallery * _convolve(x, g, config.local_k) - config.r_query * _convolve(x, q, config.local_k)
    return y


def tune(score: Callable[[InvGCConfig], float], r_values: Sequence[float] = (0.0, 0.1, 0.2, 0.4, 0.6, 0.8),
         local_ks: Sequence[int] = (0,)) -> tuple[InvGCConfig, float]:
    """Grid search over (r_gallery, r_query, local_k), maximising score(config) (e.g. validation recall@1)."""
    best, best_score = InvGCConfig(0.0, 0.0, 0), -np.inf
    for rg, rq, lk in itertools.product(r_values, r_values, local_ks):
        cfg = InvGCConfig(rg, rq, lk)
        val = score(cfg)
        if val > best_score + 1e-9:
            best, best_score = cfg, val
    return best, float(best_score)


class InvGCReranker:
    """Re-scores an index's candidates with InvGC-adjusted gallery vectors (a `SearchIndex.search` rerank).

    The references are saved beside the index (invgc.npz) so every query uses the same ones.
    """

    FILE = "invgc.npz"

    def __init__(self, ref_gallery: np.ndarray, ref_queries: np.ndarray, config: InvGCConfig):
        self.ref_gallery, self.ref_queries, self.config = _normalize(ref_gallery), _normalize(ref_queries), config

    def __call__(self, queries: np.ndarray, scores: np.ndarray, vids: np.ndarray,
                 index: Any) -> tuple[np.ndarray, np.ndarray]:
        out_s = np.full(scores.shape, -np.inf, dtype=np.float32)
        out_v = np.full(vids.shape, -1, dtype=np.int64)
        for r in range(len(vids)):
            ok = vids[r] >= 0
            cand = vids[r][ok]
            if len(cand) == 0:
                continue
            adjusted = invgc(index.item_vectors(cand), self.ref_gallery, self.ref_queries, self.config)  # (c, d)
            s = adjusted @ queries[r]  # (c,)
            order = np.argsort(-s)
            out_s[r, :len(cand)], out_v[r, :len(cand)] = s[order], cand[order]
        return out_s, out_v

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / self.FILE
        np.savez(path, ref_gallery=self.ref_gallery, ref_queries=self.ref_queries,
                 config=np.array([self.config.r_gallery, self.config.r_query, self.config.local_k]))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> InvGCReranker | None:
        path = Path(folder) / cls.FILE
        if not path.is_file():
            return None
        with np.load(path) as z:
            rg, rq, lk = z["config"].tolist()
            return cls(z["ref_gallery"], z["ref_queries"], InvGCConfig(float(rg), float(rq), int(lk)))

    @classmethod
    def for_index(cls, index: Any, model: AlignedModel, config: InvGCConfig, max_refs: int = 4096,
                  seed: int = 0) -> InvGCReranker:
        """References from the index itself: a sample of its vectors, and its captions embedded as queries
        (an image index with captions); saved beside the index."""
        vids = np.asarray(index.items.all_vids(), dtype=np.int64)
        rng = np.random.default_rng(seed)
        if len(vids) > max_refs:
            vids = np.sort(rng.choice(vids, max_refs, replace=False))
        ref_gallery = index.item_vectors(vids)
        items = index.items.get(vids.tolist())
        captions = [it.caption for it in items.values() if it.caption]
        query_modality = "text" if index.info.modality == "image" else "image"
        if captions and query_modality == "text" and "text" in model.towers:
            ref_queries = model.encode_text(captions).cpu().numpy()
        else:
            ref_queries = np.zeros((0, ref_gallery.shape[1]), dtype=np.float32)
        out = cls(ref_gallery, ref_queries, config)
        out.save(index.folder)
        return out
