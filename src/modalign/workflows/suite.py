"""The benchmark suite: one model over every built-in labelled and paired data set that is installed.

    result = run_suite(model, store, SuiteConfig(max_items=1000), run_dir=Path("runs/quickstart"))
    result.results["cdda-categories"]["acc1"], result.skipped["iconify"]   # "not installed: ... npm pack ..."

Zero-shot (acc1, acc5, mean_per_class_recall) on a class-balanced sample of at most `max_items` items of
each labelled set; retrieval (image_retrieval_recall@k, text_retrieval_recall@k, mean_recall@1) on a
sample of at most `max_groups` groups of each paired set's test split. The test split is the run's own
(split.json) when the model was trained on that data set, else the split `modalign train` makes by
default (train/val/test 0.7/0.1/0.2, seed 0), so held-out numbers stay held out. Zero-shot likewise
leaves out the items of the run's train and val groups when the labelled set is a view of the paired
set the model was trained on (Tux categories of a Tux-trained model; counted in `n_seen_left_out`). `cdda-xstyle` scores the
CDDA test items drawn in tile sets held out of `cdda-train` (see data/cdda.py): a style never seen.
Metric names follow CLIP_benchmark; everything is flat per data set.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from modalign.data.column import AlignedDataset, LabelledDataset
from modalign.errors import ConfigError, MissingDataError

logger = logging.getLogger(__name__)

Task = Literal["zeroshot", "retrieval"]
DEFAULT_SPLIT = {"train": 0.7, "val": 0.1, "test": 0.2}  # FitConfig's default split ...
DEFAULT_SPLIT_SEED = 0  # ... and seed: a model trained with defaults keeps its test groups held out here


@dataclass(frozen=True)
class Benchmark:
    name: str  # the row of the table and the key in the JSON
    task: Task
    spec: str  # the data set spec
    pairs: str | None = None  # zero-shot: the paired set whose image ids the labelled items are (its groups)
    templates: tuple[str, ...] = ("a photo of a {c}.", "a picture of a {c}.", "an image of a {c}.",
                                  "a drawing of a {c}.", "a {c}.")  # zero-shot prompts


def _prompts(*templates: str) -> tuple[str, ...]:
    return templates


CLIPART = _prompts("a drawing of a {c}.", "a cartoon {c}.", "a clip art of a {c}.", "an illustration of a {c}.",
                   "a {c}.")
SUITE: tuple[Benchmark, ...] = (
    Benchmark("tuxpaint-categories", "zeroshot", "tuxpaint-categories", "tuxpaint", CLIPART),
    Benchmark("fashion-mnist", "zeroshot", "fashion-mnist:test", None,
              _prompts("a photo of a {c}.", "a black and white photo of a {c}.", "a low resolution photo of a {c}.",
                       "a product photo of a {c}.", "a {c}, an item of clothing.")),
    Benchmark("digits", "zeroshot", "digits", None,
              _prompts("a photo of the number {c}.", "a handwritten {c}.", "the digit {c}.", "a drawing of a {c}.")),
    Benchmark("openclipart-categories", "zeroshot", "openclipart-categories", "openclipart", CLIPART),
    Benchmark("iconify-categories", "zeroshot", "iconify-categories", "iconify",
              _prompts("an icon of {c}.", "a {c} icon.", "a black and white icon about {c}.", "{c}.")),
    Benchmark("cdda-categories", "zeroshot", "cdda-categories", "cdda",
              _prompts("a pixel art sprite of {c}.", "a game sprite of {c}.", "a drawing of {c}.", "{c}.")),
    Benchmark("kgeography-flags", "zeroshot", "kgeography-flags", "kgeography",
              _prompts("the flag of {c}.", "a flag of {c}.", "{c}.")),
    Benchmark("tuxpaint", "retrieval", "tuxpaint"),
    Benchmark("openclipart", "retrieval", "openclipart"),
    Benchmark("iconify", "retrieval", "iconify"),
    Benchmark("cdda", "retrieval", "cdda"),
    Benchmark("cdda-xstyle", "retrieval", "cdda-xstyle"),
    Benchmark("kgeography", "retrieval", "kgeography"),
)
MAIN_METRIC = {"zeroshot": "acc1", "retrieval": "mean_recall@1"}


@dataclass
class SuiteConfig:
    benchmarks: list[str] | None = None  # names or globs of SUITE rows (None: all)
    max_items: int | None = 1000  # zero-shot: at most this many items per labelled set (class-balanced)
    max_groups: int | None = 1000  # retrieval: at most this many test groups per paired set
    seed: int = 0  # for the samples above
    batch_size: int = 32


@dataclass
class SuiteResult:
    results: dict[str, dict[str, float]] = field(default_factory=dict)  # benchmark -> flat metrics
    skipped: dict[str, str] = field(default_factory=dict)  # benchmark -> why it was not run
    tasks: dict[str, str] = field(default_factory=dict)  # benchmark -> task
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"results": self.results, "skipped": self.skipped, "tasks": self.tasks, "seconds": self.seconds}


def select_benchmarks(patterns: Sequence[str] | None) -> list[Benchmark]:
    if not patterns:
        return list(SUITE)
    chosen = [b for b in SUITE if any(fnmatch.fnmatch(b.name, p) for p in patterns)]
    if not chosen:
        raise ConfigError(f"no benchmark matches {', '.join(patterns)}; known: {', '.join(b.name for b in SUITE)}")
    return chosen


def held_out_groups(dataset: AlignedDataset, run_split: dict[str, list[str]] | None) -> np.ndarray:
    """Group indices of the test split: the run's (by group name) when given, else the default split's."""
    if run_split is not None:
        names = set(run_split.get("test") or run_split.get("val") or [])
        return np.asarray([g for g, n in enumerate(dataset.group_names) if n in names], dtype=np.int64)
    return dataset.split(DEFAULT_SPLIT, seed=DEFAULT_SPLIT_SEED)["test"]


def unseen_rows(labelled: LabelledDataset, paired: AlignedDataset, run_split: dict[str, list[str]]) -> np.ndarray:
    """Rows of `labelled` whose item is in none of the run's train or val groups of `paired` (the labelled
    items are `paired`'s images, by id); items `paired` lacks were never trained on and stay."""
    seen = set(run_split.get("train", [])) | set(run_split.get("val", []))
    image = paired.column("image")
    seen_ids = {i for i, g in zip(image.ids, image.groups, strict=True) if paired.group_names[g] in seen}
    return np.asarray([r for r, i in enumerate(labelled.column.ids) if i not in seen_ids], dtype=np.int64)


def _unseen(dataset: LabelledDataset, bench: Benchmark, trained_on: str | None,
            run_split: dict[str, list[str]] | None) -> tuple[LabelledDataset, int]:
    """The labelled set without the items the run trained or validated on, and how many were left out."""
    from modalign.data.registry import load_pairs_dataset

    if run_split is None or trained_on is None or bench.pairs is None:
        return dataset, 0
    try:
        paired = load_pairs_dataset(bench.pairs)
    except MissingDataError:  # then the model cannot have been trained on it here either
        return dataset, 0
    if paired.name != trained_on:
        return dataset, 0
    rows = unseen_rows(dataset, paired, run_split)
    if len(rows) == 0:
        raise ConfigError(f"{bench.name}: every item was used to train or validate the model")
    kept = LabelledDataset(dataset.name, dataset.column.take(rows), dataset.labels[rows], dataset.classnames,
                           dataset.root)
    return kept, len(dataset) - len(rows)


def _sample(n_or_rows: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    if limit is None or len(n_or_rows) <= limit:
        return np.sort(n_or_rows)
    return np.sort(np.random.default_rng(seed).choice(n_or_rows, size=limit, replace=False))


def _zeroshot(model: Any, dataset: LabelledDataset, store: Any, bench: Benchmark, config: SuiteConfig,
              progress: bool) -> dict[str, float]:
    from modalign.workflows.evaluate import evaluate_zeroshot

    if config.max_items is not None and len(dataset) > config.max_items:
        # class-balanced; with more classes than `max_items` (flags: one per class), a seeded sample of
        # rows, still scored against every class name
        dataset = dataset.subset(per_class=max(1, config.max_items // len(dataset.classnames)), seed=config.seed)
        if len(dataset) > config.max_items:
            rows = _sample(np.arange(len(dataset)), config.max_items, config.seed)
            dataset = LabelledDataset(dataset.name, dataset.column.take(rows), dataset.labels[rows],
                                      dataset.classnames, dataset.root)
    return evaluate_zeroshot(model, dataset, store, list(bench.templates), batch_size=config.batch_size,
                             progress=progress)


def _retrieval(model: Any, dataset: AlignedDataset, store: Any, run_split: dict[str, list[str]] | None,
               config: SuiteConfig, progress: bool) -> dict[str, float]:
    from modalign.workflows.evaluate import evaluate_retrieval

    groups = _sample(held_out_groups(dataset, run_split), config.max_groups, config.seed)
    if len(groups) == 0:
        raise ConfigError(f"{dataset.name}: the test split is empty")
    # encode only the sampled groups, unless the whole columns are in the store already (e.g. after training)
    whole = all(store.get(dataset.column(m), model.encoder(m), model.towers[m].layer) is not None
                for m in ("image", "text"))
    if whole:
        out = evaluate_retrieval(model, dataset, store, groups, batch_size=config.batch_size, progress=progress)
    else:
        out = evaluate_retrieval(model, dataset.take_groups(groups), store, batch_size=config.batch_size,
                                 progress=progress)
    out["n_groups"] = float(len(groups))  # chance recall@1 is about 1 / n_groups both ways
    return out


def read_run_split(run_dir: Path | None) -> tuple[str | None, dict[str, list[str]] | None]:
    """(the data set name the run was trained on, its split.json) when `run_dir` holds them."""
    if run_dir is None:
        return None, None
    config = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").is_file() else {}
    trained_on = (config.get("metadata") or {}).get("dataset")
    if not (run_dir / "split.json").is_file():
        if trained_on is not None:  # e.g. a model saved by the Python API without its split
            logger.warning("%s: trained on %s but has no split.json: %s is scored on the default split, which "
                           "may hold items the model trained on", run_dir, trained_on, trained_on)
        return None, None
    return trained_on, json.loads((run_dir / "split.json").read_text())


def run_suite(model: Any, store: Any, config: SuiteConfig | None = None, run_dir: Path | None = None,
              progress: bool = True) -> SuiteResult:
    """Runs every selected benchmark whose data is installed; a missing data set is a skip with its hint."""
    from modalign.data.registry import load_dataset

    config = config or SuiteConfig()
    trained_on, run_split = read_run_split(run_dir)
    out = SuiteResult()
    for bench in select_benchmarks(config.benchmarks):
        start = time.perf_counter()
        out.tasks[bench.name] = bench.task
        try:
            dataset = load_dataset(bench.spec)
        except MissingDataError as e:
            out.skipped[bench.name] = f"not installed: {e}"
            logger.info("suite: %s skipped (%s)", bench.name, e)
            continue
        if isinstance(dataset, LabelledDataset):
            dataset, n_seen = _unseen(dataset, bench, trained_on, run_split)
            metrics = {**_zeroshot(model, dataset, store, bench, config, progress), "n_seen_left_out": float(n_seen)}
        else:
            split = run_split if trained_on is not None and trained_on == dataset.name else None
            metrics = _retrieval(model, dataset, store, split, config, progress)
        out.results[bench.name] = metrics
        out.seconds[bench.name] = time.perf_counter() - start
        logger.info("suite: %s %s = %.3f (%.0f s)", bench.name, MAIN_METRIC[bench.task],
                    metrics[MAIN_METRIC[bench.task]], out.seconds[bench.name])
    return out


def suite_rows(result: SuiteResult) -> list[dict[str, Any]]:
    """One table row per benchmark: top1 = acc1 or mean R@1, top5 = acc5 or mean R@5, chance, n."""
    rows: list[dict[str, Any]] = []
    for name, task in result.tasks.items():
        if name in result.skipped:
            rows.append({"benchmark": name, "task": task, "status": result.skipped[name].split(":")[0]})
            continue
        m = result.results[name]
        if task == "zeroshot":
            top1, top5, chance, n = m["acc1"], m["acc5"], 1 / m["n_classes"], m["n_images"]
        else:
            top1 = m["mean_recall@1"]
            top5 = 0.5 * (m["image_retrieval_recall@5"] + m["text_retrieval_recall@5"])
            chance, n = 1 / m["n_groups"], m["n_images"]
        rows.append({"benchmark": name, "task": task, "n": int(n), "top1": top1, "top5": top5, "chance": chance,
                     "seconds": round(result.seconds[name], 1), "status": "ok"})
    return rows
