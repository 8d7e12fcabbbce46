"""The embedding store: encode once, reuse always (keys, shards, manifests, memory-mapped reads)."""

from modalign.store.embeddings import StoredEmbeddings
from modalign.store.key import CacheKey
from modalign.store.report import EncodeReport
from modalign.store.store import EmbeddingStore

__all__ = ["CacheKey", "EmbeddingStore", "EncodeReport", "StoredEmbeddings"]
