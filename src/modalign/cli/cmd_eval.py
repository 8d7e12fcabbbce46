"""`modalign eval retrieval|zeroshot`: score a saved model (and its baselines) on raw data."""

from __future__ import annotations

import argparse
from pathlib import Path

from modalign.cli.commands import summary
from modalign.cli.common import add_common, open_store, print_table, write_json
from modalign.cli.loading import load_run_models, read_templates, split_groups

RETRIEVAL_COLUMNS = ["method", "image_retrieval_recall@1", "image_retrieval_recall@5",
                     "image_retrieval_recall@10", "text_retrieval_recall@1", "text_retrieval_recall@5",
                     "text_retrieval_recall@10"]
ZEROSHOT_COLUMNS = ["method", "acc1", "acc5", "mean_per_class_recall"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help=summary("eval"))
    evsub = p.add_subparsers(dest="eval_task", metavar="TASK", required=True)

    r = evsub.add_parser("retrieval", help="image<->text recall@1/5/10 on image-caption pairs",
                         description="Encode the pairs with the model's encoders (cached), project, and report "
                                     "recall@k in both directions (an image with several captions counts once). "
                                     "Baselines saved in the run folder are scored beside the model.")
    r.add_argument("model", type=Path, help="run folder or saved model folder")
    r.add_argument("--pairs", required=True, help="pairs file / data set, as for `modalign train`")
    r.add_argument("--split", choices=["all", "train", "val", "test"], default="all",
                   help="score only this split of the run's split.json (use test for held-out numbers)")
    _common_eval(r)

    z = evsub.add_parser("zeroshot", help="zero-shot classification of labelled images by class-name prompts",
                         description="Classify each image by the nearest class prompt embedding (templates "
                                     "averaged per class). Reports acc1, acc5 and mean_per_class_recall.")
    z.add_argument("model", type=Path, help="run folder or saved model folder")
    z.add_argument("--images", required=True,
                   help="class-per-folder image tree, or a built-in name (tuxpaint-categories, fashion-mnist)")
    z.add_argument("--templates", default="default",
                   help="template set name (default, clipart, fashion, single, name, imagenet-short) or a "
                        "JSON file with a list of templates containing {c}")
    z.add_argument("--limit", type=int, help="evaluate at most this many images (class-balanced)")
    _common_eval(z)
    p.set_defaults(run=run)


def _common_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", type=Path, help="write the metrics here (flat JSON, CLIP_benchmark names)")
    p.add_argument("--no-baselines", action="store_true", help="only the model, not the baselines beside it")
    p.add_argument("--batch-size", type=int, default=32)
    add_common(p)


def run(args: argparse.Namespace) -> int:
    from modalign.data.registry import load_labelled_dataset, load_pairs_dataset
    from modalign.workflows.evaluate import evaluate_retrieval, evaluate_zeroshot

    store = open_store(args)
    results = {}
    if args.eval_task == "retrieval":
        dataset = load_pairs_dataset(args.pairs)  # the data first: a wrong kind of data set fails fast
        groups = split_groups(args.model, args.split, dataset)
        models = load_run_models(args.model, args.device, with_baselines=not args.no_baselines)
        for name, model in models.items():
            results[name] = evaluate_retrieval(model, dataset, store, groups, batch_size=args.batch_size,
                                               progress=not args.quiet)
        columns, title = RETRIEVAL_COLUMNS, f"retrieval on {args.pairs} ({args.split})"
    else:
        labelled = load_labelled_dataset(args.images)
        models = load_run_models(args.model, args.device, with_baselines=not args.no_baselines)
        if args.limit:
            labelled = labelled.subset(per_class=max(1, args.limit // len(labelled.classnames)))
        templates = read_templates(args.templates)
        for name, model in models.items():
            results[name] = evaluate_zeroshot(model, labelled, store, templates, batch_size=args.batch_size,
                                              progress=not args.quiet)
        columns, title = ZEROSHOT_COLUMNS, f"zero-shot on {args.images} ({len(labelled.classnames)} classes)"
    print_table([{"method": n, **m} for n, m in results.items()], columns, title=title)
    flat = dict(results["model"])
    for name, metrics in results.items():
        if name != "model":
            flat.update({f"{name}/{k}": v for k, v in metrics.items()})
    write_json(args.json, flat)
    return 0
