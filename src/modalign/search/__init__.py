"""Search: a persistent cross-modal index over an aligned model's embeddings, and a service around it.

    index = build_index(model_dir, dataset, "indexes/tux", store=EmbeddingStore(...))   # modalign.search.build
    index = SearchIndex.open("indexes/tux")
    hits = index.search(model.encode_text(["a red bird"]).numpy(), k=5)

Modules, one job each:
  backends.py  vector indexes (FAISS flat / HNSW / IVF / IVF-int8 / IVF-PQ) behind one small interface
  metadata.py  the SQLite table of items (id, path, caption, added time, vector id, tower)
  index.py     SearchIndex: a self-describing folder (index.json + vectors + metadata), add / delete / search
  build.py     a data set + a saved model -> index entries, through the EmbeddingStore
  invgc.py     InvGC / LocalAdj retrieval post-processing (hubness reduction)
  compat.py    backward-compatible upgrades: a new image encoder mapped into an old aligned space
  service.py   the FastAPI app (imported only by `modalign serve`)
Nothing here is imported by `import modalign`; faiss and fastapi are imported lazily.
"""
