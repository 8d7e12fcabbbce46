"""The quickstart's Markdown report: setup, a results table beside chance, plots, a text->image grid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from modalign.utils.io import atomic_write

COLUMNS = ["method", "mean R@1", "t2i R@1", "t2i R@5", "i2t R@1", "i2t R@5", "Tux zs", "FMNIST zs"]
COLUMN_HELP = {
    "mean R@1": "(t2i R@1 + i2t R@1) / 2, the figure the default is chosen on",
    "t2i R@k": "text→image recall@k on the held-out stamps (CLIP_benchmark: image_retrieval_recall@k)",
    "i2t R@k": "image→text recall@k on the held-out stamps (CLIP_benchmark: text_retrieval_recall@k)",
    "Tux zs": "zero-shot top-1 accuracy over the 15 Tux Paint categories (held-out stamps)",
    "FMNIST zs": "zero-shot top-1 accuracy on a class-balanced Fashion-MNIST test subset (10 classes)",
}


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def held_out_sentence(held_out: dict[str, int] | None) -> str:
    """'; 138 held-out stamps scored (2 left out: no usable image or caption)': the count every figure is over."""
    if not held_out:
        return ""
    left = f" ({held_out['left out']} left out: no usable image or caption)" if held_out["left out"] else ""
    return f"; {held_out['scored']} held-out stamps scored{left}"


def retrieval_grid(out: Path, tux, run, model, store, n_queries: int = 6, k: int = 5) -> Path:
    """Top-k test images for a few test captions (fixed pick), scored by the trained model."""
    from modalign.features.pipeline import encode_dataset, select_rows
    from modalign.report.plots import plot_retrieval_grid

    test = run.split.get("test", run.split.get("val"))
    stored = encode_dataset(tux, {m: model.encoder(m) for m in ("image", "text")}, store,
                            {m: model.towers[m].layer for m in ("image", "text")}, progress=False)
    img_rows = select_rows(tux, stored["image"], "image", test)
    txt_rows = select_rows(tux, stored["text"], "text", test)
    img = model.project("image", stored["image"].vectors(img_rows))  # (n_img, d)
    rng = np.random.default_rng(0)
    picks = rng.choice(txt_rows, size=min(n_queries, len(txt_rows)), replace=False)
    txt = model.project("text", stored["text"].vectors(picks))  # (q, d)
    scores = (txt @ img.t()).detach().numpy()  # (q, n_img)
    img_col, txt_col = tux.column("image"), tux.column("text")
    queries, results = [], []
    for qi, row in enumerate(picks):
        queries.append(txt_col.items[row])
        top = np.argsort(-scores[qi])[:k]
        results.append([(img_col.items[img_rows[j]], float(scores[qi, j]),
                         bool(img_col.groups[img_rows[j]] == txt_col.groups[row])) for j in top])
    return plot_retrieval_grid(queries, results, out / "text_to_image.png")


def write_report(out: Path, tux, run, models: dict, zs_tux: dict, zs_fmnist: dict, table: list[dict],
                 chance: dict[str, float], seconds: dict[str, float], store, verdict: str = "",
                 held_out: dict[str, int] | None = None) -> Path:
    from modalign.report.plots import plot_method_bars

    out.mkdir(parents=True, exist_ok=True)
    method = next(iter(models))
    plot_method_bars(run.results, ["image_retrieval_recall@1", "image_retrieval_recall@5",
                                   "text_retrieval_recall@1", "text_retrieval_recall@5"],
                     out / "retrieval.png", title="held-out Tux Paint retrieval")
    zs = {m: {"Tux categories acc1": zs_tux[m]["acc1"], "Fashion-MNIST acc1": zs_fmnist[m]["acc1"],
              "Fashion-MNIST mean class recall": zs_fmnist[m]["mean_per_class_recall"]} for m in models}
    plot_method_bars(zs, list(next(iter(zs.values()))), out / "zeroshot.png", title="zero-shot classification")
    retrieval_grid(out, tux, run, models[method], store)
    results = {"table": table, "chance": chance, "seconds": seconds, "verdict": verdict, "held_out": held_out,
               "retrieval": run.results, "zeroshot_tux": zs_tux, "zeroshot_fashion_mnist": zs_fmnist}
    atomic_write(out / "results.json", lambda f: json.dump(results, f, indent=2), mode="w")

    fit_cfg = json.loads((run.out_dir / "fit_config.json").read_text())
    n = {k: len(v) for k, v in run.split.items()}
    chance_row = {"method": "chance", **{k: v for k, v in chance.items()}}
    md = [
        "# modalign quickstart",
        "",
        f"Frozen encoders: image `{fit_cfg['encoders']['image']}`, text `{fit_cfg['encoders']['text']}`. "
        f"Data: {tux.n_groups} Tux Paint stamps with captions, split by stamp "
        f"({', '.join(f'{k} {v}' for k, v in n.items())}){held_out_sentence(held_out)}. The default method "
        f"`{method}` first, then every baseline, fitted on the same cached features.",
        "",
        "## Results",
        "",
        markdown_table([*table, chance_row], COLUMNS),
        "",
        verdict,
        "",
        *[f"- `{k}`: {v}" for k, v in COLUMN_HELP.items()],
        "",
        "![retrieval](retrieval.png)",
        "",
        "![zero-shot](zeroshot.png)",
        "",
        "## Text → image on held-out stamps",
        "",
        f"Each row: a held-out caption and the 5 most similar held-out images by `{method}` "
        "(cosine score above each image; a green frame marks the stamp the caption belongs to).",
        "",
        "![text to image](text_to_image.png)",
        "",
        *(["## Training (the trained baseline)", "", "![training curves](model/curves.png)", ""]
          if (run.out_dir / "curves.png").exists() else []),
        f"Time: {', '.join(f'{k} {v:.1f}s' for k, v in seconds.items())}. The model folder `model/` loads "
        "with `AlignedModel.from_pretrained`; its baselines are in `model/baselines/`.",
        "",
    ]
    path = out / "report.md"
    atomic_write(path, lambda f: f.write("\n".join(md)), mode="w")
    return path
