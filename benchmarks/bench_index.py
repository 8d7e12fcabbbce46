"""Search benchmarks, three parts (each writes benchmarks/results/index_<part>.json):

  ann     query latency, recall@10 against exact search, build time and memory for each index kind, on
          vectors drawn to match real stored embeddings (mean + covariance of Tux Paint projected image
          embeddings of --model; Gaussian sampling, then L2-normalised)
  invgc   InvGC / LocalAdj effect on Tux Paint held-out retrieval (references: train split; r tuned on val)
  compat  upgrade without re-indexing: recall on held-out pairs with (a) old entries, (b) 50/50 old and
          compat-new entries, (c) all compat-new, (d) 50/50 old and naive new-model entries

  python benchmarks/bench_index.py ann --model runs/tux --n 200000
  python benchmarks/bench_index.py ann --model runs/tux --n 1000000 --cache /tmp/idx1m --build-only  # then
  python benchmarks/bench_index.py ann --model runs/tux --n 1000000 --cache /tmp/idx1m   # times the saved ones
  python benchmarks/bench_index.py invgc --model runs/tux
  python benchmarks/bench_index.py compat --model runs/tux --new-model runs/tux-lite2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, machine_info  # noqa: E402


def _tux(model_dir: Path):
    from modalign.data.tuxpaint import load_tuxpaint
    from modalign.store import EmbeddingStore
    from modalign.utils.paths import default_store

    data = load_tuxpaint()
    names = json.loads((model_dir / "split.json").read_text())
    index = {n: i for i, n in enumerate(data.group_names)}
    split = {k: np.array(sorted(index[n] for n in v if n in index), dtype=np.int64) for k, v in names.items()}
    return data, split, EmbeddingStore(default_store())


def _embed(model, data, store, modality: str, groups: np.ndarray, encoder=None, layer=None):
    """(n, d) projected embeddings of the split's `modality` items and their groups."""
    from modalign.search.build import project_in_batches
    from modalign.workflows.upgrade import stored_features

    col = data.column(modality)
    rows = data.rows_of_groups(modality, groups)
    enc = encoder or model.encoder(modality)
    feats, rows = stored_features(store, col, enc, layer or model.towers[modality].layer, rows)
    return project_in_batches(model, modality, feats), col.groups[rows]


def _recall(img, ig, txt, tg) -> dict[str, float]:
    from modalign.evaluate.retrieval import retrieval_metrics

    m = retrieval_metrics(img, txt, ig, tg)
    return {k: round(m[k], 4) for k in ("image_retrieval_recall@1", "image_retrieval_recall@5",
                                        "image_retrieval_recall@10", "text_retrieval_recall@1",
                                        "text_retrieval_recall@5")}


def part_invgc(args) -> dict:
    from modalign.model import AlignedModel
    from modalign.search.invgc import InvGCConfig, invgc, tune

    model = AlignedModel.from_pretrained(args.model)
    data, split, store = _tux(args.model)
    emb = {s: {m: _embed(model, data, store, m, split[s]) for m in ("image", "text")} for s in ("train", "val", "test")}
    ref_g, ref_q = emb["train"]["image"][0], emb["train"]["text"][0]

    def score(split_name: str, cfg: InvGCConfig) -> dict[str, float]:
        (img, ig), (txt, tg) = emb[split_name]["image"], emb[split_name]["text"]
        return _recall(invgc(img, ref_g, ref_q, cfg), ig, txt, tg)

    out = {"none": score("test", InvGCConfig(0.0, 0.0, 0))}
    grids = {"invgc": ((0.0, 0.5, 1.0, 2.0, 5.0), (0,)), "invgc_localadj": ((0.0, 0.1, 0.2, 0.5, 1.0), (5, 10, 25, 50))}
    for name, (rs, ks) in grids.items():
        cfg, val = tune(lambda c: score("val", c)["image_retrieval_recall@1"]
                        + score("val", c)["text_retrieval_recall@1"], r_values=rs, local_ks=ks)
        out[name] = {**score("test", cfg), "config": cfg.to_dict(), "val_mean_recall@1": round(val / 2, 4)}
    return out


def part_compat(args) -> dict:
    from modalign.encoders.registry import create_encoder
    from modalign.model import AlignedModel
    from modalign.workflows.upgrade import CompatConfig, train_compat

    old = AlignedModel.from_pretrained(args.model)
    data, split, store = _tux(args.model)
    new_enc = create_encoder(args.new_encoder)
    t0 = time.perf_counter()
    bundle = train_compat(old, args.model, new_enc, data, store, split["train"], CompatConfig(epochs=args.epochs))
    t_train = time.perf_counter() - t0
    if args.save_bundle:
        bundle.save_pretrained(args.save_bundle)
    test = split["test"]
    txt, tg = _embed(old, data, store, "text", test)
    img_old, ig = _embed(old, data, store, "image", test)
    img_new, ig2 = _embed(bundle, data, store, "image", test)
    if not np.array_equal(ig, ig2):
        raise SystemExit("old and new encoders read different test images; cannot compare")
    half = np.random.default_rng(0).permutation(len(ig)) < len(ig) // 2  # which entries are upgraded
    mixed = np.where(half[:, None], img_new, img_old)
    out = {"a_all_old": _recall(img_old, ig, txt, tg), "b_mixed_50_50": _recall(mixed, ig, txt, tg),
           "c_full_reindex_compat": _recall(img_new, ig, txt, tg)}
    if args.new_model:
        naive = AlignedModel.from_pretrained(args.new_model)
        img_naive, ig3 = _embed(naive, data, store, "image", test)
        txt_naive, _ = _embed(naive, data, store, "text", test)
        out["d_naive_mix_50_50"] = _recall(np.where(half[:, None], img_naive, img_old), ig, txt, tg)
        out["new_model_own_space"] = _recall(img_naive, ig3, txt_naive, tg)
    out["compat_train_seconds"] = round(t_train, 1)
    return out


def _synthetic(args) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
    """(base (n, d), validation queries, test queries) drawn like real projected Tux image embeddings."""
    from modalign.model import AlignedModel

    model = AlignedModel.from_pretrained(args.model)
    data, _, store = _tux(args.model)
    real, _ = _embed(model, data, store, "image", np.arange(data.n_groups))
    mean, cov = real.mean(0), np.cov(real, rowvar=False)
    rng = np.random.default_rng(0)
    chol = np.linalg.cholesky(cov + 1e-6 * np.eye(len(cov))).T.astype(np.float32)

    def draw(n: int) -> np.ndarray:
        out = np.empty((n, len(mean)), dtype=np.float32)
        for s in range(0, n, 50_000):
            x = mean + rng.standard_normal((min(50_000, n - s), len(mean))).astype(np.float32) @ chol
            out[s:s + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out

    base, val, test = draw(args.n), draw(args.queries), draw(args.queries)
    stats = {"mean_pairwise_cos_real": float((real @ real.T).mean()),
             "mean_pairwise_cos_synthetic": float((base[:2000] @ base[:2000].T).mean())}
    return base, val, test, stats


def _measure(search, queries: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """One query at a time (a service's case): p50 / p99 latency; recall@10 against exact search."""
    search(queries[:10])
    lat, found = [], []
    for q in queries:
        t0 = time.perf_counter()
        ids = search(q[None])
        lat.append(time.perf_counter() - t0)
        found.append(ids[0])
    recall = float(np.mean([len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(found, truth, strict=True)]))
    return {"latency_p50_ms": round(1000 * float(np.median(lat)), 3),
            "latency_p99_ms": round(1000 * float(np.percentile(lat, 99)), 3), "recall@10_vs_exact": round(recall, 4)}


def _ours(kind: str, base: np.ndarray, args, saved: Path | None):
    from modalign.search.backends import IndexParams, VectorIndex, default_params, faiss_module

    params = IndexParams(nprobe=args.nprobe or 0, ef_search=args.ef_search or 0)
    params.ef_construction = args.ef_construction or params.ef_construction
    if saved is not None and saved.exists():
        meta = json.loads(saved.with_suffix(".json").read_text())
        built = IndexParams(**meta["params"])  # search settings: today's library defaults, not the saved ones
        now = default_params(kind, len(base), IndexParams(nlist=built.nlist, nprobe=args.nprobe or 0,
                                                          ef_search=args.ef_search or 0))
        built.nprobe, built.ef_search = now.nprobe, now.ef_search
        vi = VectorIndex.load(saved, kind, base.shape[1], built)
    else:  # as the library builds it (SearchIndex.create): trained on every vector (FAISS samples 256 per cell)
        vi = VectorIndex.create(kind, base.shape[1], params, base if kind.startswith("ivf") else None)
        for s in range(0, len(base), 100_000):
            vi.add(base[s:s + 100_000], np.arange(s, min(s + 100_000, len(base))))
        if saved is not None:
            faiss_module().write_index(vi.index, str(saved))

    def setting(value: int) -> None:
        if kind == "hnsw":
            vi.params.ef_search = value
        else:
            vi.params.nprobe = value
        vi.apply_search_params()

    default = vi.params.ef_search if kind == "hnsw" else vi.params.nprobe
    return (lambda q: vi.search(q, 10)[1]), setting, default, _index_bytes(vi) / 2**20, vi.params.to_dict()


def _hnswlib(base: np.ndarray, args, ef_default: int, saved: Path | None):
    """The peer: hnswlib, by default at the same M / efConstruction / efSearch as our HNSW default."""
    import hnswlib

    from modalign.search.backends import IndexParams

    p = IndexParams()
    m, efc = args.peer_m or p.hnsw_m, args.peer_ef_construction or args.ef_construction or p.ef_construction
    index = hnswlib.Index(space="ip", dim=base.shape[1])
    if saved is not None and saved.exists():
        index.load_index(str(saved), max_elements=len(base))
    else:
        index.init_index(max_elements=len(base), M=m, ef_construction=efc)
        index.add_items(base, np.arange(len(base)), num_threads=args.build_threads)
        if saved is not None:
            index.save_index(str(saved))
    index.set_num_threads(1)
    index.set_ef(ef_default)
    mb = len(base) * (base.shape[1] * 4 + m * 2 * 4 + 16) / 2**20  # vectors + level-0 links (estimate)
    return (lambda q: index.knn_query(q, k=10)[0]), index.set_ef, ef_default, mb, {"M": m, "efConstruction": efc,
                                                                                    "ef": ef_default}


def _exact(base: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """(n_q, 10) ids of the exact top 10 by inner product, without a second copy of the base."""
    from modalign.search.backends import faiss_module

    faiss = faiss_module()
    return faiss.knn(queries, base, 10, metric=faiss.METRIC_INNER_PRODUCT)[1]


def _build(kind: str, base: np.ndarray, args) -> tuple[tuple, dict]:
    """The index of `kind` (built, or loaded from --cache when saved there) and its build facts."""
    from modalign.search.backends import EF_SEARCH

    saved = None
    if args.cache:
        args.cache.mkdir(parents=True, exist_ok=True)
        peer = f"_M{args.peer_m}" * bool(args.peer_m) + f"_efc{args.peer_ef_construction}" * bool(args.peer_ef_construction)
        saved = args.cache / f"{kind}{peer if kind == 'hnswlib' else ''}_{args.n}.index"
    built_before = saved is not None and saved.exists()
    rss0, t0 = _rss_mb(), time.perf_counter()
    built = (_hnswlib(base, args, args.ef_search or EF_SEARCH, saved) if kind == "hnswlib"
             else _ours(kind, base, args, saved))
    head = {"kind": kind, "n": args.n, "dim": int(base.shape[1]), "build_s": round(time.perf_counter() - t0, 1),
            "index_mb": round(built[3], 1), "rss_growth_mb": round(_rss_mb() - rss0, 1),
            "build_load_avg_1m": round(os.getloadavg()[0], 2)}
    if built_before:  # the build facts of the run that built it (build_only, at the lock's priority or not)
        head.update({k: v for k, v in json.loads(saved.with_suffix(".json").read_text()).items() if k in head})
    elif saved is not None:
        saved.with_suffix(".json").write_text(json.dumps({**head, "params": built[4]}))
    return built, head


def part_ann(args) -> dict:
    from modalign.search.backends import IndexParams, auto_kind, default_params, faiss_module

    faiss = faiss_module()
    base, val, test, stats = _synthetic(args)
    faiss.omp_set_num_threads(args.build_threads)
    truth = {"val": _exact(base, val), "test": _exact(base, test)}
    rows: list[dict] = []
    sweeps = {"hnsw": args.sweep_ef, "hnswlib": args.sweep_ef, "flat": ""}
    for kind in args.kinds.split(","):
        faiss.omp_set_num_threads(args.build_threads)
        built, head = _build(kind, base, args)
        print(json.dumps(head), flush=True)
        if args.build_only:
            continue
        search, setting, default, _, params = built
        faiss.omp_set_num_threads(args.threads)
        for value in sorted({int(v) for v in sweeps.get(kind, args.sweep_nprobe).split(",") if v} - {default}):
            setting(value)  # the sweep: on validation queries, to choose defaults without the test queries
            rows.append({**head, "queries": "val", "setting": value, **_measure(search, val, truth["val"])})
            print(json.dumps(rows[-1]), flush=True)
        setting(default)
        rows.append({**head, "queries": "test", "setting": default, "default": True, "params": params,
                     **_measure(search, test, truth["test"])})
        print(json.dumps(rows[-1]), flush=True)
        del built, search, setting
    kind = auto_kind(args.n)
    return {"rows": rows, "threads": args.threads, "build_threads": args.build_threads, "auto_kind": kind,
            "auto_params": default_params(kind, args.n, IndexParams()).to_dict(), **stats}


def _index_bytes(vi) -> int:
    faiss = __import__("faiss")
    return len(faiss.serialize_index(vi.index))


def _rss_mb() -> float:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["ann", "invgc", "compat"])
    p.add_argument("--model", type=Path, required=True, help="a Tux Paint run folder (with split.json)")
    p.add_argument("--new-model", type=Path, help="compat: a run trained on the new encoder (for the naive mix)")
    p.add_argument("--new-encoder", default="effnet-lite2")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--save-bundle", type=Path)
    p.add_argument("--n", type=int, default=200_000, help="ann: vectors in the index")
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--kinds", default="flat,hnsw,hnswlib,ivf-int8,ivf-pq",
                   help="ann: our kinds, and the peer 'hnswlib' (same M / efConstruction / efSearch as ours)")
    p.add_argument("--threads", type=int, default=1, help="ann: search threads (queries go one at a time)")
    p.add_argument("--build-threads", type=int, default=2)
    p.add_argument("--nprobe", type=int, default=None, help="ann: IVF cells visited (default: the library's)")
    p.add_argument("--ef-search", type=int, default=None, help="ann: HNSW beam width (default: the library's)")
    p.add_argument("--ef-construction", type=int, default=None, help="ann: HNSW build beam (default: the library's)")
    p.add_argument("--peer-m", type=int, default=None, help="ann: hnswlib M (default: ours)")
    p.add_argument("--peer-ef-construction", type=int, default=None, help="ann: hnswlib efConstruction (default: ours)")
    p.add_argument("--cache", type=Path, help="ann: save each built index here, and load it on the next run")
    p.add_argument("--build-only", action="store_true", help="ann: build (and save to --cache), time no query")
    p.add_argument("--sweep-nprobe", default="32,64,256", help="ann: other nprobe values, on validation queries")
    p.add_argument("--sweep-ef", default="64,256", help="ann: other efSearch values, on validation queries")
    p.add_argument("--tag", default="", help="suffix of the results file (index_<part>_<tag>.json)")
    args = p.parse_args()
    t0 = time.perf_counter()
    out = {"part": args.part, "args": {k: str(v) for k, v in vars(args).items()},
           **{"ann": part_ann, "invgc": part_invgc, "compat": part_compat}[args.part](args)}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["machine"] = machine_info()
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"index_{args.part}{'_' + args.tag if args.tag else ''}.json"
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
