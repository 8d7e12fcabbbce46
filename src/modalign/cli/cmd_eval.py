"""`modalign eval retrieval|zeroshot|suite`: score a saved model (and its baselines) on raw data."""

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
    r.add_argument("--split", choices=["all", "train", "val", "test"], default="all",
                   help="score only this split of the run's split.json (use test for held-out numbers)")
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
    z.add_argument("--limit", type=int, help="evaluate at most this many images (class-balanced)")
    _common_eval(z)
    _add_suite(evsub)
    p.set_defaults(run=run)


def _add_suite(evsub: argparse._SubParsersAction) -> None:
    s = evsub.add_parser("suite", help="every installed built-in benchmark: zero-shot and test-split retrieval",
                         description="Zero-shot classification on every installed labelled built-in set (Tux, "
                                     "Fashion-MNIST, digits, Open Clip Art, Iconify, CDDA categories, KGeography "
                                     "flags) and retrieval on each paired set's test split (the run's own split "
                                     "when it was trained on that set; cdda-xstyle: tile sets never trained on). "
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


def _common_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", type=Path, help="write the metrics here (flat JSON, CLIP_benchmark names)")
    p.add_argument("--no-baselines", action="store_true", help="only the model, not the baselines beside it")
    p.add_argument("--batch-size", type=int, default=32)
    add_common(p)


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

    if args.eval_task == "suite":
        return run_suite(args)
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
