"""`modalign diagnose`: modality gap, alignment / uniformity, similarity histograms, zero-shot confusion."""

from __future__ import annotations

import argparse
from pathlib import Path

from modalign.cli.commands import summary
from modalign.cli.common import add_common, add_encoding, data_options, open_store, print_table, write_json

COLUMNS = ["model", "modality_gap", "alignment", "uniformity_image", "uniformity_text", "matched_mean",
           "unmatched_mean", "pair_auc"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diagnose", help=summary("diagnose"),
        description="Project image-caption pairs with a saved model (and the baselines saved beside it) and "
                    "report the modality gap (distance between the modality centroids), alignment and "
                    "uniformity (Wang & Isola 2020), matched vs unmatched pair similarities (histogram PNG) "
                    "and, with --images, the per-class zero-shot confusion (PNG heatmap + JSON). The frozen "
                    "features get the per-modality numbers. Writes diagnostics.json and the plots to --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", type=Path, help="run folder or saved model folder")
    p.add_argument("--pairs", required=True, help="pairs file / data set, as for `modalign train`")
    p.add_argument("--split", choices=["auto", "all", "train", "val", "test"], default="auto",
                   help="which pairs to use: auto (default) = those the run neither trained nor validated on, i.e. "
                        "its test split when this is its training data (the run's split.json), all, train, val or "
                        "test; --images is restricted the same way by item id")
    p.add_argument("--images", help="labelled image tree or built-in name (tuxpaint-categories) for the "
                                    "zero-shot confusion matrix")
    p.add_argument("--templates", default="default", help="zero-shot template set (default, clipart, fashion ...)")
    p.add_argument("--out", type=Path, help="output folder (default: MODEL/diagnostics)")
    p.add_argument("--no-baselines", action="store_true", help="only the model, not the baselines beside it")
    add_encoding(p)
    add_common(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from modalign.cli.loading import load_run_models, read_templates, scored_split
    from modalign.data.registry import load_labelled_dataset, load_pairs_dataset
    from modalign.workflows.diagnose import diagnose_pairs, diagnose_zeroshot

    out = args.out or args.model / "diagnostics"
    out.mkdir(parents=True, exist_ok=True)
    store = open_store(args)
    models = load_run_models(args.model, args.device, with_baselines=not args.no_baselines)
    dataset = load_pairs_dataset(args.pairs, **data_options(args))
    split = scored_split(args.model, args.split, dataset.group_names, "groups")
    flat, files = diagnose_pairs(models, dataset, store, split.indices, out_dir=out, progress=not args.quiet)
    if args.images:
        labelled = load_labelled_dataset(args.images)
        rows = _image_rows(args.model, args.split, labelled.column.ids)
        report = diagnose_zeroshot(models["model"], labelled, store, read_templates(args.templates), rows=rows,
                                   out_dir=out, progress=not args.quiet)
        flat["zeroshot_acc1"] = report["acc1"]
        files.update({"confusion": str(out / "confusion.png"), "confusion_json": str(out / "confusion.json")})
    rows_table = [{"model": name, **{k.split("/", 1)[-1]: v for k, v in flat.items()
                                     if (k.startswith(f"{name}/") if i else "/" not in k)}}
                  for i, name in enumerate(models)]
    print_table(rows_table, COLUMNS, title=f"embedding diagnostics on {args.pairs} ({split.name} split)")
    write_json(out / "diagnostics.json", {**flat, "split": split.name, "files": files})
    print(f"diagnostics written to {out}")
    return 0



def _image_rows(run_dir: Path, split: str, ids: list[str]):
    """The labelled images to use: the same split by item id, or all of them when no id names a split item."""
    import logging

    from modalign.cli.loading import scored_split
    from modalign.errors import ConfigError

    try:
        return scored_split(run_dir, split, ids, "images").indices
    except ConfigError as e:
        logging.getLogger(__name__).warning("--images: %s; using every image", e)
        return None
