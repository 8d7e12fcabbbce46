"""Vector indexes behind one small interface, built on FAISS (`pip install faiss-cpu`, extra `search`).

Kinds (a registry: `register_kind`, `list_kinds`, `create_vector_index`), all inner product on
L2-normalised vectors (= cosine):
  flat      exact brute force; the right choice up to ~50k vectors
  hnsw      graph index (HNSW, M=32): fast approximate search, no training; deletes are tombstones
  ivf       inverted lists over k-means cells (nlist ~ 4 sqrt(n)), flat vectors; needs training vectors
  ivf-int8  ivf with 8-bit scalar-quantised vectors (4x smaller)
  ivf-pq    ivf with product quantisation (dim/8 bytes per vector), candidates re-ranked (refined) with
            8-bit codes of the full vectors: PQ alone never passed recall@10 0.48 (BENCHMARKS.md)
`auto_kind(n)` and `default_params(kind, n)` pick the kind and its settings by index size, so that the
defaults reach recall@10 >= 0.95 against exact search (measured in benchmarks/bench_index.py).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from modalign.errors import ConfigError
from modalign.utils.registry import Registry

logger = logging.getLogger(__name__)

FLAT_LIMIT = 50_000  # auto: exact search below this many vectors
# auto: HNSW below this, IVF-int8 from here. HNSW at efSearch 128 reached recall@10 0.957 at 200k; at 1M an
# HNSW graph needed efSearch 512 for 0.95 (hnswlib M16) and a build of 10+ min, while IVF-int8 at nprobe 256
# reached 0.965 at p99 7.5 ms (BENCHMARKS.md, "Search defaults at 1M"); below 1M the same nprobe scans a
# larger share of the cells, so recall only rises and latency only falls
HNSW_LIMIT = 200_000
NPROBE_MIN = 256  # IVF: cells visited per query at least (at 1M, nlist 4000: 64 -> 0.82, 128 -> 0.93, 256 -> 0.965)
NPROBE_SHARE = 16  # IVF: and at least nlist / 16 (the share that reached 0.95 at 1M) for larger indexes
EF_SEARCH = 128  # HNSW: query beam width (64 gave recall@10 0.76 at 1M)
REFINE_FACTOR = 8  # ivf-pq: candidates re-ranked per result (k_factor)


def faiss_module() -> Any:
    try:
        import faiss
    except ImportError as e:
        raise ImportError("the search index needs FAISS: pip install 'modalign[search]' (or faiss-cpu)") from e
    return faiss


@dataclass
class IndexParams:
    """Index settings; 0 means "the default for this kind and size" (see `default_params`)."""

    hnsw_m: int = 32  # HNSW: neighbours per node
    ef_construction: int = 200  # HNSW: build-time beam width (80 built a graph that capped recall at 1M)
    ef_search: int = 0  # HNSW: query-time beam width (0: EF_SEARCH)
    nlist: int = 0  # IVF: number of cells (0: 4 * sqrt(n_train), at least 16)
    nprobe: int = 0  # IVF: cells visited per query (0: max(NPROBE_MIN, nlist / NPROBE_SHARE), at most nlist)
    pq_m: int = 0  # IVF-PQ: sub-quantisers (0: dim // 8)
    refine_factor: int = 0  # IVF-PQ: re-rank refine_factor * k PQ candidates with 8-bit codes (0: REFINE_FACTOR)

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def default_params(kind: str, n: int, params: IndexParams | None = None) -> IndexParams:
    """`params` with every 0 ("auto") replaced by the default for `kind` at `n` training / expected vectors."""
    p = IndexParams(**(params or IndexParams()).to_dict())
    if kind == "hnsw":
        p.ef_search = p.ef_search or EF_SEARCH
    if kind.startswith("ivf"):
        p.nlist = _nlist(p, n)
        p.nprobe = p.nprobe or min(p.nlist, max(NPROBE_MIN, p.nlist // NPROBE_SHARE))
    if kind == "ivf-pq":
        p.refine_factor = p.refine_factor or REFINE_FACTOR
    return p


Factory = Callable[[int, IndexParams, int], Any]  # (dim, params, n_train) -> faiss index
KINDS: Registry[tuple[Factory, bool]] = Registry("index kind")  # kind -> (factory, needs training)


def register_kind(name: str, needs_training: bool = False, description: str = "") -> Callable[[Factory], Factory]:
    def wrap(factory: Factory) -> Factory:
        KINDS.register(name, (factory, needs_training), description=description or (factory.__doc__ or ""))
        return factory
    return wrap


def list_kinds(pattern: str | None = None) -> list[str]:
    return KINDS.list(pattern)


def auto_kind(n: int) -> str:
    return "flat" if n < FLAT_LIMIT else "hnsw" if n < HNSW_LIMIT else "ivf-int8"


def _nlist(params: IndexParams, n_train: int) -> int:
    return params.nlist or max(16, min(int(4 * math.sqrt(max(n_train, 1))), max(16, n_train // 39)))


@register_kind("flat")
def _flat(dim: int, params: IndexParams, n_train: int) -> Any:
    faiss = faiss_module()
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


@register_kind("hnsw")
def _hnsw(dim: int, params: IndexParams, n_train: int) -> Any:
    faiss = faiss_module()
    inner = faiss.IndexHNSWFlat(dim, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    inner.hnsw.efConstruction = params.ef_construction
    return faiss.IndexIDMap2(inner)


def _ivf(dim: int, params: IndexParams, n_train: int, code: str) -> Any:
    faiss = faiss_module()
    nlist = _nlist(params, n_train)
    quantizer = faiss.IndexFlatIP(dim)
    if code == "flat":
        return faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    if code == "int8":
        return faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                             faiss.METRIC_INNER_PRODUCT)
    m = params.pq_m or max(1, dim // 8)
    if dim % m:
        raise ConfigError(f"ivf-pq needs the dimension ({dim}) to be a multiple of pq_m ({m})")
    pq = faiss.IndexIVFPQ(quantizer, dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
    # re-rank: PQ distances pick refine_factor * k candidates, 8-bit codes of the full vectors order them
    refine = faiss.IndexRefine(pq, faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit,
                                                               faiss.METRIC_INNER_PRODUCT))
    return faiss.IndexIDMap2(refine)  # ids live in the map: IndexRefine numbers its vectors 0..n-1


register_kind("ivf", needs_training=True)(lambda d, p, n: _ivf(d, p, n, "flat"))
register_kind("ivf-int8", needs_training=True)(lambda d, p, n: _ivf(d, p, n, "int8"))
register_kind("ivf-pq", needs_training=True)(lambda d, p, n: _ivf(d, p, n, "pq"))


class VectorIndex:
    """A FAISS index with int64 ids: add, remove (or tombstone), search, save, load."""

    def __init__(self, index: Any, kind: str, dim: int, params: IndexParams):
        self.index, self.kind, self.dim, self.params = index, kind, dim, params

    @classmethod
    def create(cls, kind: str, dim: int, params: IndexParams | None = None,
               train_vectors: np.ndarray | None = None) -> VectorIndex:
        factory, needs_training = KINDS.get(kind)  # unknown kinds raise with the known ones
        n_train = 0 if train_vectors is None else len(train_vectors)
        params = default_params(kind, n_train, params)
        index = factory(dim, params, n_train)
        if needs_training:
            if train_vectors is None or n_train < params.nlist:
                raise ConfigError(f"index kind {kind!r} needs training vectors (at least {params.nlist}, better "
                                  f"{39 * params.nlist}); got {n_train}. Use --kind flat or hnsw for small "
                                  f"collections")
            _quiet_kmeans(index, n_train)
            index.train(_as_f32(train_vectors))
            ivf = _find(index, "nprobe")
            if ivf is not None and not isinstance(index, faiss_module().IndexIDMap):
                # reconstruct() by id that survives remove_ids()
                ivf.set_direct_map_type(faiss_module().DirectMap.Hashtable)
        out = cls(index, kind, dim, params)
        out.apply_search_params()
        return out

    @classmethod
    def load(cls, path: str | Path, kind: str, dim: int, params: IndexParams) -> VectorIndex:
        faiss = faiss_module()
        out = cls(faiss.read_index(str(path)), kind, dim, params)
        out.apply_search_params()
        return out

    def write(self, f: BinaryIO) -> None:
        """Serialises into an open binary file, in chunks (no second copy of a multi-GB index in memory)."""
        faiss = faiss_module()
        writer = faiss.PyCallbackIOWriter(f.write, 1 << 20)
        try:
            faiss.write_index(self.index, writer)
        finally:
            del writer

    def apply_search_params(self) -> None:
        hnsw = _find(self.index, "hnsw")
        if hnsw is not None:
            hnsw.hnsw.efSearch = self.params.ef_search or EF_SEARCH
        ivf = _find(self.index, "nprobe")
        if ivf is not None:
            ivf.nprobe = self.params.nprobe or default_params(self.kind, 0, self.params).nprobe
        refine = _find(self.index, "k_factor")
        if refine is not None:
            refine.k_factor = float(self.params.refine_factor or REFINE_FACTOR)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        """(ntotal,) int64: every id in the index (tombstoned HNSW vectors included)."""
        faiss = faiss_module()
        if isinstance(self.index, faiss.IndexIDMap):
            return faiss.vector_to_array(self.index.id_map).astype(np.int64)
        ivf = faiss.extract_index_ivf(self.index)
        lists = ivf.invlists
        parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                 for i in range(lists.nlist) if lists.list_size(i)]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:  # vectors: (n, dim); ids: (n,) int64
        vectors = _as_f32(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ConfigError(f"vectors of shape {vectors.shape} do not fit a {self.dim}-d index")
        self.index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> bool:
        """Removes the ids; False when this kind cannot (HNSW, refined PQ): the caller keeps tombstones."""
        try:
            self.index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))
            return True
        except RuntimeError:
            return False

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(n_q, dim) -> scores (n_q, k), ids (n_q, k); id -1 where fewer than k vectors exist."""
        k = max(1, min(int(k), max(self.ntotal, 1)))
        scores, ids = self.index.search(_as_f32(queries), k)
        return scores, ids

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """(n, dim) stored vectors (approximate for quantised kinds); flat and hnsw keep them exactly."""
        if not len(ids):
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self.index.reconstruct(int(i)) for i in ids])


def _find(index: Any, attr: str) -> Any:
    """The first index inside `index` (through id maps and refine wrappers) with attribute `attr`, or None."""
    faiss = faiss_module()
    seen = 0
    while index is not None and seen < 8:
        index = faiss.downcast_index(index)
        if hasattr(index, attr):
            return index
        index = getattr(index, "index", None) or getattr(index, "base_index", None)
        seen += 1
    return None


def _as_f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def _quiet_kmeans(index: Any, n_train: int) -> None:
    """FAISS prints a warning to stderr for each k-means it runs on few points (64 of them for ivf-pq's codes),
    past logging and -q: say it once in the log instead. min_points_per_centroid only gates that warning."""
    quantizers = [(name, cp) for name, cp in (("cells", getattr(index, "cp", None)),
                                              ("codes", getattr(getattr(index, "pq", None), "cp", None))) if cp]
    for name, cp in quantizers:
        k = index.nlist if name == "cells" else 1 << index.pq.nbits
        if n_train < k * cp.min_points_per_centroid:
            logger.info("training %s on %d vectors for %d %s; %d or more would place them better", type(index).__name__,
                        n_train, k, "cells" if name == "cells" else "PQ centroids", k * cp.min_points_per_centroid)
        cp.min_points_per_centroid = 1

