"""`modalign train`: encode pairs (cached), train projectors, fit baselines, save a loadable run folder."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modalign.cli.commands import summary
from modalign.cli.common import add_common, add_encoding, data_options, open_store, print_table

if TYPE_CHECKING:
    from modalign.workflows.fit import FitConfig

RESULT_COLUMNS = ["method", "image_retrieval_recall@1", "image_retrieval_recall@5", "image_retrieval_recall@10",
                  "text_retrieval_recall@1", "text_retrieval_recall@5", "text_retrieval_recall@10"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help=summary("train"),
        description="Encode the pairs with both frozen encoders (cached in the store), split them by image "
                    "into train/val/test, fit the default method (auto: label bridge (+) kernel CCA) and every "
                    "baseline (InfoNCE-MLP, ridge, Procrustes, CCA, ASIF) on the same features, and write a run folder that `AlignedModel."
                    "from_pretrained` and `modalign eval` load. Flags override --config.",
)
    p.add_argument("--pairs", required=True,
                   help="pairs file (.csv/.jsonl/.parquet with 'image' and 'caption' columns; image paths "
                        "relative to the file), a saved HF dataset, or 'tuxpaint'")
    p.add_argument("--image-encoder", default=None, help="image encoder spec (default: effnet-lite0)")
    p.add_argument("--text-encoder", default=None, help="text encoder spec (default: minilm-l6)")
    p.add_argument("--out", required=True, type=Path,
                   help="run folder to write (written whole: a crash leaves an earlier run untouched)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it already holds a run")
    p.add_argument("--config", type=Path, help="TOML file with FitConfig fields ([train] and [train.projector] tables)")
    p.add_argument("--recipe", help="a named recipe (default, freeze-align, structure, sail) or a recipe .toml: "
                                    "the base settings, which --config and flags override")
    p.add_argument("--image-col", default="image", help="image column name in the pairs file")
    p.add_argument("--caption-col", default="caption", help="caption column name in the pairs file")
    g = p.add_argument_group("model and training (default: the config file, else built-in defaults)")
    g.add_argument("--image-layer", action="append",
                   help="image encoder layer to align (default: final); repeat it or list several "
                        "(blocks.12,final) to feed several layers to the tower (see --layer-mix)")
    g.add_argument("--text-layer", action="append", help="text encoder layer(s) to align, as --image-layer")
    g.add_argument("--layer-mix", action="append", metavar="[MODALITY=]MODE",
                   help="with several layers: 'concat' them, or a learned softmax-weighted 'mean' (layers of "
                        "equal width); 'text=mean' sets one modality (default: concat)")
    g.add_argument("--method", help="a registered alignment method (default: auto; `modalign methods` lists them)")
    g.add_argument("--loss", help="training loss of trained methods (default: infonce; also sigmoid, structure, "
                                  "multi-positive, vsepp, geomix)")
    g.add_argument("--out-dim", type=int, help="shared embedding width (default: 512)")
    g.add_argument("--hidden-dim", type=int, help="MLP hidden width (default: 1024)")
    g.add_argument("--depth", type=int, help="MLP linear layers (default: 2)")
    g.add_argument("--dropout", type=float, help="MLP dropout (default: 0.1)")
    g.add_argument("--epochs", type=int, help="max epochs (default: 100, early stopping on validation)")
    g.add_argument("--batch-size", type=int, help="pairs per step (default: 256)")
    g.add_argument("--lr", type=float, help="peak learning rate (default: 1e-3)")
    g.add_argument("--patience", type=int, help="early-stopping patience in epochs (default: 15)")
    g.add_argument("--seed", type=int, help="training seed (default: 0)")
    g.add_argument("--split-seed", type=int, help="train/val/test split seed (default: 0)")
    g.add_argument("--no-baselines", action="store_true", help="skip the baselines (mlp, ridge, procrustes, cca, asif)")
    g.add_argument("--fp16-store", action="store_true", help="store embeddings as float16")
    add_encoding(p)
    add_common(p)
    p.set_defaults(run=run)


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The flags a user gave, as a FitConfig override table (same loader and checks as a config file)."""
    from modalign.utils.layer_spec import normalize_layer_spec

    fit: dict[str, Any] = {"encoders": {}, "layers": {}, "layer_mix": {}, "train": {"projector": {}}}
    for modality, spec in (("image", args.image_encoder), ("text", args.text_encoder)):
        if spec:
            fit["encoders"][modality] = spec
    for modality, given in (("image", args.image_layer), ("text", args.text_layer)):
        if given:
            fit["layers"][modality] = normalize_layer_spec([n for g in given for n in g.split(",")])
    for value in args.layer_mix or []:
        modality, _, mode = value.rpartition("=")
        several = [m for m, layer in fit["layers"].items() if not isinstance(layer, str)]
        for m in [modality] if modality else several or ["image", "text"]:
            fit["layer_mix"][m] = mode
    for table, flags in ((fit, ("method", "split_seed")),
                         (fit["train"], ("epochs", "batch_size", "lr", "patience", "seed", "loss")),
                         (fit["train"]["projector"], ("out_dim", "hidden_dim", "depth", "dropout"))):
        table.update({f: getattr(args, f) for f in flags if getattr(args, f) is not None})
    if args.no_baselines:
        fit["baselines"] = []
    if args.fp16_store:
        fit["store_dtype"] = "float16"
    fit["device"] = fit["train"]["device"] = args.device
    return fit


def build_config(args: argparse.Namespace) -> FitConfig:
    """Built-in defaults, then the recipe, then --config, then the flags: one loader for all of them."""
    from modalign.recipes import load_recipe
    from modalign.utils.config import load_config, merge_dicts
    from modalign.workflows.fit import FitConfig

    raw = load_recipe(args.recipe) if args.recipe else {}
    raw = merge_dicts(raw, tomllib.loads(args.config.read_text())) if args.config else raw
    return load_config(FitConfig, merge_dicts(raw, flag_overrides(args)), what="fit")


def run(args: argparse.Namespace) -> int:
    from modalign.data.registry import load_pairs_dataset
    from modalign.workflows.fit import fit

    cfg = build_config(args)
    dataset = load_pairs_dataset(args.pairs, **data_options(args))
    result = fit(dataset, cfg, args.out, open_store(args), progress=not args.quiet, overwrite=args.overwrite)
    rows = [{"method": m, **metrics} for m, metrics in result.results.items()]
    print_table(rows, RESULT_COLUMNS, title=f"held-out retrieval ({dataset.name}, test split)")
    print(f"model saved to {args.out} (load with AlignedModel.from_pretrained('{args.out}'))")
    return 0
