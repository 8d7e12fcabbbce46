"""`modalign adapt RUN --images TREE --shots 1,2,4,8,16`: few-shot heads vs zero-shot; `--save NAME` keeps one."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from modalign.cli.commands import summary
from modalign.cli.common import add_common, open_store, print_table, write_json
from modalign.cli.loading import read_templates

logger = logging.getLogger(__name__)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,2,4,8,16; got {text!r}") from e
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"shot counts must be >= 1; got {text!r}")
    return values


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "adapt", help=summary("adapt"),
        description="Few-shot adaptation on the model's cached image embeddings. With --shots: for each shot "
                    "count k and each of --draws draws, k labelled images per class train each head and another "
                    "k per class (--val-shots) choose its hyper-parameters; test accuracy is printed beside "
                    "zero-shot's (mean ± std over draws) and plotted. With --save NAME: a head fitted on every "
                    "labelled image is saved to RUN/adapters/NAME (load it with AdaptedClassifier.load).")
    p.add_argument("model", type=Path, help="run folder or saved model folder")
    p.add_argument("--images", required=True, help="labelled images: a class-per-folder tree or a built-in name "
                                                   "(tuxpaint-categories, 'fashion-mnist:train?per_class=40')")
    p.add_argument("--test-images", help="a separate labelled test set with the same classes (default: the run's "
                                         "held-out split when the images are its training data, else --test-fraction)")
    p.add_argument("--shots", type=_int_list, help="shot counts to compare, e.g. 1,2,4,8,16 (default when --save "
                                                   "is not given)")
    p.add_argument("--draws", type=int, default=3, help="draws of the shots per shot count")
    p.add_argument("--methods", default="probe,cache,prototype", help="few-shot heads to compare")
    p.add_argument("--val-shots", type=int, help="validation images per class (default: as many as the shots)")
    p.add_argument("--test-fraction", type=float, default=0.3, help="held-out share per class without a test set")
    p.add_argument("--templates", default="default", help="zero-shot template set name or a JSON list file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write every draw and the summary here")
    p.add_argument("--plot", type=Path, help="accuracy-vs-shots figure (default: next to --json, .png)")
    p.add_argument("--save", metavar="NAME", help="fit --method on every labelled image, save to RUN/adapters/NAME")
    p.add_argument("--method", default="cache", help="the head --save fits (probe, cache, prototype)")
    p.add_argument("--batch-size", type=int, default=32)
    add_common(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from modalign.data.registry import load_labelled_dataset
    from modalign.model import AlignedModel
    from modalign.workflows.adapt import FewShotConfig, concat, embed_labelled

    store = open_store(args)
    model = AlignedModel.from_pretrained(args.model, device=args.device)
    templates = read_templates(args.templates)
    labelled = load_labelled_dataset(args.images)
    embedded = embed_labelled(model, labelled, store, templates, args.batch_size, progress=not args.quiet)
    if args.save:
        _save(args, model, embedded)
    if args.shots is None and args.save:
        return 0
    cfg = FewShotConfig(shots=args.shots or [1, 2, 4, 8, 16], draws=args.draws, templates=templates,
                        methods=[m.strip() for m in args.methods.split(",") if m.strip()], val_shots=args.val_shots,
                        test_fraction=args.test_fraction, seed=args.seed, batch_size=args.batch_size)
    pool = test = None
    if args.test_images:
        test_set = embed_labelled(model, load_labelled_dataset(args.test_images), store, templates, args.batch_size,
                                  progress=not args.quiet)
        n = len(embedded.labels)
        embedded = concat(embedded, test_set)
        pool, test = np.arange(n), np.arange(n, len(embedded.labels))
    else:
        test = _run_test_rows(args.model, embedded.ids)
    _compare(args, embedded, cfg, test, pool)
    return 0


def _run_test_rows(run_dir: Path, ids: list[str]) -> Any:
    """Rows whose item is in the run's held-out test split, when the images are the run's training data."""
    import numpy as np

    split_file = run_dir / "split.json"
    if not split_file.is_file():
        return None
    split = json.loads(split_file.read_text())
    seen = set(split.get("train", [])) | set(split.get("val", []))
    if not seen.intersection(ids):
        return None
    held = set(split.get("test", []))
    rows = np.array([i for i, item in enumerate(ids) if item in held], dtype=np.int64)
    logger.info("the images overlap the run's training data: testing on its %d held-out (test split) images, "
                "drawing shots from the others", len(rows))
    return rows


def _compare(args: argparse.Namespace, embedded: Any, cfg: Any, test: Any, pool: Any) -> None:
    from modalign.report.fewshot import plot_fewshot
    from modalign.workflows.adapt import run_fewshot

    result = run_fewshot(embedded, cfg, test_rows=test, pool_rows=pool)
    methods = ["zeroshot", *cfg.methods]
    rows = [{"shots": k, **{m: f"{result.summary[m][str(k)]['acc1']:.3f} ± {result.summary[m][str(k)]['acc1_std']:.3f}"
                             for m in methods}} for k in cfg.shots]
    print_table(rows, ["shots", *methods], title=f"few-shot test acc1 on {args.images} ({len(embedded.classnames)} "
                f"classes, {result.n_test} test images; mean ± std over {cfg.draws} draws)")
    out = {"images": args.images, "test_images": args.test_images, "model": str(args.model), **result.to_dict()}
    write_json(args.json, out)
    plot = args.plot or (args.json.with_suffix(".png") if args.json else None)
    if plot:
        plot_fewshot({f"{args.images} ({result.n_test} test images)": result.summary}, plot)
        logger.info("wrote %s", plot)


def _save(args: argparse.Namespace, model: Any, embedded: Any) -> None:
    from modalign.workflows.adapt import fit_adapter
    from modalign.workflows.classifier import adapter_dir

    clf = fit_adapter(model, embedded, args.method, seed=args.seed,
                      metadata={"images": args.images, "templates": args.templates})
    folder = clf.save(adapter_dir(args.model, args.save))
    print(f"saved the {args.method} classifier ({len(clf.classnames)} classes, validation acc1 "
          f"{clf.metadata['val_acc1']:.3f}) to {folder}")
