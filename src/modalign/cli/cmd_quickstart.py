"""`modalign quickstart`: the main job on the packaged encoders and data (Tux Paint, Fashion-MNIST)."""

from __future__ import annotations

import argparse
from pathlib import Path

from modalign.cli.commands import summary
from modalign.cli.common import add_common, open_store, print_table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quickstart", help=summary("quickstart"),
        description="Encode the Tux Paint stamps (image + caption) with EfficientNet-Lite0 and MiniLM-L6 "
                    "(packaged weights, no internet), fit the default method (auto: label bridge (+) kernel CCA) on "
                    "a train split, and report held-out retrieval and zero-shot classification (Tux categories, "
                    "Fashion-MNIST) beside every baseline (InfoNCE-MLP, ridge, Procrustes, CCA, ASIF): a table "
                    "here, a sentence on how the default compares, and a Markdown report with plots. "
                    "A second run reuses the stored embeddings.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/quickstart"), help="report and model folder")
    p.add_argument("--image-encoder", default="effnet-lite0")
    p.add_argument("--text-encoder", default="minilm-l6")
    p.add_argument("--method", default=None, help="alignment method (default: auto)")
    p.add_argument("--epochs", type=int, default=None,
                   help="max training epochs of the trained baseline (default: 100 with early stopping)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fashion-per-class", type=int, default=50, help="Fashion-MNIST test images per class")
    p.add_argument("--tux-root", type=Path, default=None,
                   help="a Tux Paint stamps folder (default: the Debian package's, /usr/share/tuxpaint/stamps)")
    add_common(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from modalign.report.quickstart_report import COLUMNS
    from modalign.workflows.fit import FitConfig
    from modalign.workflows.quickstart import QuickstartConfig, run_quickstart

    fit_cfg = FitConfig(encoders={"image": args.image_encoder, "text": args.text_encoder}, device=args.device)
    if args.method:
        fit_cfg.method = args.method
    fit_cfg.train.seed = args.seed
    fit_cfg.train.device = args.device
    if args.epochs is not None:
        fit_cfg.train.epochs = args.epochs
    cfg = QuickstartConfig(out_dir=args.out, fit=fit_cfg, fashion_per_class=args.fashion_per_class,
                           tux_root=args.tux_root, store_flag=args.store)
    result = run_quickstart(cfg, open_store(args), progress=not args.quiet)
    rows = [*result.table, {"method": "chance", **result.chance}]
    held = result.held_out
    print_table(rows, COLUMNS, title=f"modalign quickstart: retrieval on {held['scored']} held-out Tux Paint stamps, "
                                     "zero-shot")
    if held["left out"]:
        print(f"({held['left out']} of the {held['split']} held-out stamps have no usable image or caption: "
              "left out of every figure)")
    print(result.verdict)
    print("The same figures from the command line (the first row is the model, the others its baselines):")
    for command in result.commands:
        print(f"  {command}")
    print(f"report: {result.report}   model: {result.out_dir / 'model'}   "
          f"({result.seconds['total']:.0f}s, encode {result.seconds['encode']:.0f}s)")
    return 0
