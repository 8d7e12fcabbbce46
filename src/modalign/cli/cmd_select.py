"""`modalign select`: rank encoder/layer pairings by representation similarity on a probe set of pairs."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from modalign.cli.commands import summary
from modalign.cli.common import add_common, open_store, print_table, write_json

SHORT = {"mutual_knn": "mkNN", "cknna": "CKNNA", "unbiased_cka": "CKA-u", "linear_cka": "CKA"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "select", help=summary("select"),
        description="Encode a probe set of pairs (one image + one caption per group, cached in the store) with "
                    "every candidate encoder at every requested layer, score each (image encoder, layer) x "
                    "(text encoder, layer) pairing with CKA, unbiased CKA, mutual k-NN and CKNNA, and rank them. "
                    "Writes selection.json (every score, the best layer of each encoder) and one heatmap PNG per "
                    "encoder pair to --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--pairs", required=True, help="pairs file, saved HF dataset, or a built-in name ('tuxpaint')")
    p.add_argument("--image", action="append", metavar="SPEC",
                   help="candidate image encoder (repeat for several; default: effnet-lite0)")
    p.add_argument("--text", action="append", metavar="SPEC",
                   help="candidate text encoder (repeat for several; default: minilm-l6)")
    p.add_argument("--layers", action="append", default=[], metavar="SPEC=L1,L2",
                   help="layers to score for one encoder, e.g. effnet-lite0=blocks.8,blocks.12,final "
                        "(default: every declared layer, see --layer-step)")
    p.add_argument("--layer-step", type=int, default=1,
                   help="for encoders without --layers: every n-th declared layer, counted back from final")
    p.add_argument("--metric", default="mutual_knn", help="metric the ranking follows")
    p.add_argument("--metrics", default=None,
                   help="comma-separated metrics to compute (default: mutual_knn,cknna,unbiased_cka,linear_cka)")
    p.add_argument("--k", type=int, default=10, help="neighbours per item for mutual_knn and cknna")
    p.add_argument("--n", type=int, default=1000, help="probe pairs at most (random groups beyond that)")
    p.add_argument("--seed", type=int, default=0, help="which probe groups are drawn")
    p.add_argument("--top", type=int, default=20, help="rows of the ranking printed (the JSON has all)")
    p.add_argument("--out", required=True, type=Path, help="folder for selection.json and the heatmaps")
    p.add_argument("--image-col", default="image", help="image column name in the pairs file")
    p.add_argument("--caption-col", default="caption", help="caption column name in the pairs file")
    add_common(p)
    p.set_defaults(run=run)


def parse_layers(values: list[str]) -> dict[str, list[str]]:
    """['effnet-lite0=blocks.8,final'] -> {'effnet-lite0': ['blocks.8', 'final']} (split at the last '=')."""
    from modalign.errors import ConfigError

    out: dict[str, list[str]] = {}
    for value in values:
        spec, sep, layers = value.rpartition("=")
        names = [n.strip() for n in layers.split(",") if n.strip()]
        if not sep or not spec or not names:
            raise ConfigError(f"--layers takes SPEC=LAYER[,LAYER...], e.g. effnet-lite0=blocks.12,final; got {value!r}")
        out.setdefault(spec, []).extend(names)
    return out


def _file_name(a: str, b: str) -> str:
    return "heatmap_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{a}__{b}") + ".png"


def run(args: argparse.Namespace) -> int:
    from modalign.data.registry import load_pairs_dataset
    from modalign.select.plots import plot_layer_heatmaps
    from modalign.select.ranking import DEFAULT_METRICS, SelectConfig, run_selection

    metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else list(DEFAULT_METRICS)
    cfg = SelectConfig(encoders={"image": args.image or ["effnet-lite0"], "text": args.text or ["minilm-l6"]},
                       layers=parse_layers(args.layers), layer_step=args.layer_step, metrics=metrics,
                       rank_by=args.metric, k=args.k, n=args.n, seed=args.seed)
    columns = {"image_col": args.image_col, "caption_col": args.caption_col}
    dataset = load_pairs_dataset(args.pairs, **{k: v for k, v in columns.items() if v not in ("image", "caption")})
    result = run_selection(dataset, cfg, open_store(args), device=args.device, progress=not args.quiet)

    args.out.mkdir(parents=True, exist_ok=True)
    heatmaps = {}
    for a in cfg.encoders["image"]:
        for b in cfg.encoders["text"]:
            path = plot_layer_heatmaps(result.scores, a, b, cfg.metrics, args.out / _file_name(a, b), result.layers)
            heatmaps[f"{a} x {b}"] = path.name
    write_json(args.out / "selection.json", {"dataset": dataset.name, **result.to_dict(), "heatmaps": heatmaps})

    rows = result.table()[: args.top]
    for r, s in zip(rows, result.scores, strict=False):  # one encoder per side: its layer says it all
        for m, c in (("image", s.a), ("text", s.b)):
            if len(cfg.encoders[m]) == 1:
                r[m] = c.layer
    for r in rows:  # short headers, so that encoder:layer labels fit a terminal
        for m in cfg.metrics:
            r[SHORT.get(m, m)] = r.pop(m)
    names = " x ".join("/".join(cfg.encoders[m]) for m in ("image", "text"))
    print_table(rows, ["rank", "image", "text", *(SHORT.get(m, m) for m in cfg.metrics)],
                title=f"{names}: layer pairings on {result.n_probe} probe pairs of {dataset.name}, "
                      f"ranked by {cfg.rank_by} (k={cfg.k})")
    best = result.scores[0]
    print(f"best pairing: {best.a.label} + {best.b.label} ({cfg.rank_by} {best.scores[cfg.rank_by]:.3f})")
    print("best layer per encoder: " + ", ".join(f"{e} -> {layer}" for e, layer in result.best_layers.items()))
    print(f"wrote {args.out / 'selection.json'} and {len(heatmaps)} heatmap(s) to {args.out}")
    return 0
