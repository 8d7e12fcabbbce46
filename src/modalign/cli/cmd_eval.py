"""`modalign eval retrieval|zeroshot|suite`: score a saved model (and its baselines) on raw data."""

from __future__ import annotations

import argparse
from pathlib import Path

from modalign.cli.commands import summary
from modalign.cli.common import add_common, add_encoding, data_options, open_store, print_table, write_json
from modalign.cli.loading import load_run_models, read_templates, scored_split

SPLIT_HELP = ("which items to score: auto (default) = those the run neither trained nor validated on, i.e. its "
              "test split when this is its training data (from the run's split.json), all, train, val or test")

RETRIEVAL_COLUMNS = ["method", "image_retrieval_recall@1", "image_retrieval_recall@5",
                     "image_retrieval_recall@10", "text_retrieval_recall@1", "text_retrieval_recall@5",
                     "text_retrieval_recall@10"]
ZEROSHOT_COLUMNS = ["method", "acc1", "acc5", "mean_per_class_recall"]
SUITE_COLUMNS = ["benchmark", "task", "n", "top1", "top5", "chance", "seconds", "status"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help=summary("eval"))
    evsub = p.add_subparsers(dest="eval_task", metavar="TASK", required=True)

    r = evsub.add_parser("retrieval", help="image<->text recall@1/5/10 on image-caption pairs",
                         description="Encode the pairs with the model's encoders (cached), project, and report "
                                     "recall@k in both directions (an image with several captions counts once). "
                                     "Baselines saved in the run folder are scored beside the model.")
    r.add_argument("model", type=Path, help="run folder or saved model folder")
    r.add_argument("--pairs", required=True, help="pairs file / data set, as for `modalign train`")
    add_encoding(r)
    r.add_argument("--split", choices=["auto", "all", "train", "val", "test"], default="auto", help=SPLIT_HELP)
    r.add_argument("--modality", default="image",
                   help="image (default: image<->text), or a tower added by `modalign extend` (audio): its "
                        "retrieval against every other tower the data has")
    _common_eval(r)

    z = evsub.add_parser("zeroshot", help="zero-shot classification of labelled images by class-name prompts",
                         description="Classify each image by the nearest class prompt embedding (templates "
                                     "averaged per class). Reports acc1, acc5 and mean_per_class_recall.")
    z.add_argument("model", type=Path, help="run folder or saved model folder")
    z.add_argument("--images", required=True,
                   help="class-per-folder image tree, or a built-in labelled set (tuxpaint-categories, fashion-mnist, "
                        "cdda-categories ...: `modalign datasets` lists them)")
    z.add_argument("--templates", default="default",
                   help="template set name (default, clipart, fashion, single, name, imagenet-short) or a "
                        "JSON file with a list of templates containing {c}")
    z.add_argument("--split", choices=["auto", "all", "train", "val", "test"], default="auto",
                   help=SPLIT_HELP + " (an image counts as in a split when its id names one of the split's items)")
    z.add_argument("--per-class", type=int, help="evaluate this many images per class (a seeded class-balanced draw)")
    z.add_argument("--limit", type=int, help="evaluate at most this many images (class-balanced)")
    _common_eval(z)
    _add_suite(evsub)
    p.set_defaults(run=run)


def _common_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", type=Path, help="write the metrics here (flat JSON, CLIP_benchmark names)")
    p.add_argument("--no-baselines", action="store_true", help="only the model, not the baselines beside it")
    p.add_argument("--batch-size", type=int, default=32)
    add_common(p)


def _add_suite(evsub: argparse._SubParsersAction) -> None:
    s = evsub.add_parser("suite", help="every installed built-in benchmark: zero-shot and test-split retrieval",
                         description="Zero-shot classification on every installed labelled built-in set (Tux, "
                                     "Fashion-MNIST, digits, Open Clip Art, Iconify, CDDA categories, KGeography "
                                     "flags; a view of the run's training set without its train and val items) "
                                     "and retrieval on each paired set's test split (the run's own split when it "
                                     "was trained on that set; cdda-xstyle: the CDDA tile sets Cuteclysm and "
                                     "HitButton_iso). "
                                     "A set whose package is missing is listed with its install command. "
                                     "Prints one table, writes flat JSON per data set and a bar plot.")
    s.add_argument("model", type=Path, help="run folder or saved model folder")
    s.add_argument("--benchmarks", nargs="+", metavar="NAME",
                   help="only these benchmarks (names or globs, e.g. 'cdda*'; default: all)")
    s.add_argument("--max-items", type=int, default=1000,
                   help="zero-shot: at most this many items per labelled set, class-balanced (0: all)")
    s.add_argument("--max-groups", type=int, default=1000,
                   help="retrieval: at most this many test groups per paired set (0: all)")
    s.add_argument("--seed", type=int, default=0, help="seed of the samples above")
    s.add_argument("--json", type=Path, help="write the metrics here: {benchmark: {metric: value}}")
    s.add_argument("--plot", type=Path, help="bar plot (default: next to --json, .png)")
    s.add_argument("--batch-size", type=int, default=32)
    add_common(s)


def run_suite(args: argparse.Namespace) -> int:
    from modalign.model import AlignedModel
    from modalign.report.suite_plot import plot_suite
    from modalign.workflows.suite import SuiteConfig, run_suite, suite_rows

    config = SuiteConfig(benchmarks=args.benchmarks, max_items=args.max_items or None,
                         max_groups=args.max_groups or None, seed=args.seed, batch_size=args.batch_size)
    model = AlignedModel.from_pretrained(args.model, device=args.device)
    result = run_suite(model, open_store(args), config, run_dir=args.model, progress=not args.quiet)
    rows = suite_rows(result)
    print_table(rows, SUITE_COLUMNS, title=f"modalign suite: {args.model}")
    for name, reason in result.skipped.items():
        print(f"{name}: {reason}")
    write_json(args.json, {"model": str(args.model), **result.to_json()})
    plot_path = args.plot or (args.json.with_suffix(".png") if args.json else None)
    done = [r for r in rows if r["status"] == "ok"]
    if plot_path and done:
        plot_suite(done, plot_path, title=f"suite: {args.model}")
        print(f"plot: {plot_path}")
    return 0


def run(args: argparse.Namespace) -> int:
    from modalign.data.registry import load_labelled_dataset, load_pairs_dataset
    from modalign.workflows.evaluate import evaluate_zeroshot

    if args.eval_task == "suite":
        return run_suite(args)
    store = open_store(args)
    results = {}
    if args.eval_task == "retrieval":
        dataset = load_pairs_dataset(args.pairs, **data_options(args))  # the data first: a wrong kind of data set fails fast
        split = scored_split(args.model, args.split, dataset.group_names, "groups")
        models = load_run_models(args.model, args.device, with_baselines=not args.no_baselines)
        results = _retrieval(models, dataset, store, split.indices, args)
        columns = RETRIEVAL_COLUMNS if args.modality in ("image", "text") else _pairwise_columns(results["model"])
        title = f"retrieval on {args.pairs} ({split.name} split)"
    else:
        labelled = load_labelled_dataset(args.images)
        models = load_run_models(args.model, args.device, with_baselines=not args.no_baselines)
        if args.per_class or args.limit:
            per_class = args.per_class or max(1, args.limit // len(labelled.classnames))
            labelled = labelled.subset(per_class=per_class)
        split = scored_split(args.model, args.split, labelled.column.ids, "images")
        templates = read_templates(args.templates)
        for name, model in models.items():
            results[name] = evaluate_zeroshot(model, labelled, store, templates, batch_size=args.batch_size,
                                              progress=not args.quiet, rows=split.indices)
        columns, title = ZEROSHOT_COLUMNS, (f"zero-shot on {args.images} ({len(labelled.classnames)} classes, "
                                            f"{split.name} split)")
    print_table([{"method": n, **m} for n, m in results.items()], columns, title=title)
    flat: dict[str, float | str] = {**results["model"], "split": split.name}
    for name, metrics in results.items():
        if name != "model":
            flat.update({f"{name}/{k}": v for k, v in metrics.items()})
    write_json(args.json, flat)
    return 0


def _retrieval(models: dict, dataset, store, groups, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Image<->text recall of every model, or the --modality tower's pairwise recall (models that have it)."""
    import logging

    from modalign.workflows.evaluate import evaluate_modality, evaluate_retrieval

    out = {}
    for name, model in models.items():
        if args.modality in ("image", "text"):
            out[name] = evaluate_retrieval(model, dataset, store, groups, batch_size=args.batch_size,
                                           progress=not args.quiet)
        elif name == "model" or args.modality in model.towers:
            out[name] = evaluate_modality(model, dataset, store, args.modality, groups, batch_size=args.batch_size,
                                          progress=not args.quiet)
        else:
            logging.getLogger(__name__).info("%s has no %s tower; left out", name, args.modality)
    return out


def _pairwise_columns(metrics: dict[str, float]) -> list[str]:
    """method + the recall@1 and @5 columns of each pair, e.g. audio_text_recall@1, text_audio_recall@1."""
    return ["method", *[k for k in metrics if k.endswith(("_recall@1", "_recall@5")) and "mean" not in k]]
