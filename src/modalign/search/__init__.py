"""Search: a persistent cross-modal index over an aligned model's embeddings, and a service around it.

    index = build_index(model_dir, dataset, "indexes/tux", store=EmbeddingStore(...))   # modalign.search.build
    index = SearchIndex.open("indexes/tux")
    hits = index.search(model.encode_text(["a red bird"]).numpy(), k=5)

Modules, one job each:
  backends.py  vector indexes (FAISS flat / HNSW / IVF / IVF-int8 / IVF-PQ) behind one small interface
  metadata.py  the SQLite table of items (id, path, caption, added time, vector id, tower)
  storage.py   the folder on disk: generation-numbered vector files, the commit order, repair of leftovers
  index.py     SearchIndex: a self-describing folder (index.json + vectors + metadata), add / delete / search
               as transactions (a kill -9 or a full disk never loses an item)
  build.py     a data set + a saved model -> index entries, through the EmbeddingStore (atomic build)
  invgc.py     InvGC / LocalAdj retrieval post-processing (hubness reduction)
  service/     the FastAPI app (imported only by `modalign serve`): guard, micro-batching, routes, web page
Nothing here is imported by `import modalign`; faiss and fastapi are imported lazily.
"""
