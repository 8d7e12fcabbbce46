"""Relevance flags shared by `modalign search` and `modalign index calibrate`: the cut policy and the fit."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from modalign.cli.common import add_common, open_store

if TYPE_CHECKING:
    from modalign.search.relevance import CutPolicy


def add_cut_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-relevance", type=float, metavar="P",
                   help="return only hits whose calibrated relevance is >= P (needs `modalign index calibrate`)")
    p.add_argument("--adaptive-k", action="store_true",
                   help="cut the hits where the score curve has its largest gap (at most --k-max)")
    p.add_argument("--k-max", type=int, default=50, help="most hits --min-relevance / --adaptive-k may return")


def cut_policy(args: argparse.Namespace) -> CutPolicy:
    from modalign.search.relevance import CutPolicy

    return CutPolicy(k=args.k, min_relevance=args.min_relevance, adaptive_k=args.adaptive_k, k_max=args.k_max)


def add_calibrate_parser(isub: argparse._SubParsersAction) -> None:
    c = isub.add_parser(
        "calibrate", help="fit the relevance calibration (P(relevant | score)) on held-out queries",
        description="Embed held-out queries and candidates of a data set with known relevance, fit a logistic "
                    "map from cosine score to P(relevant), and store it in INDEX/relevance.json (one per query "
                    "modality). --pairs: caption queries of --split against the data set's images, relevant = "
                    "same category (--relevant-by label) or the caption's own image (pair). --images: a labelled "
                    "image set, each image a query against the others, relevant = same class.")
    c.add_argument("index", type=Path)
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--pairs", help="pairs data set (e.g. tuxpaint) for text queries")
    src.add_argument("--images", help="labelled image set (e.g. 'fashion-mnist:train?per_class=20') for image queries")
    c.add_argument("--split", choices=["val", "test", "train", "all"], default="val",
                   help="with --pairs: query with this split of the model's run (its split.json); never the "
                        "split you will measure on")
    c.add_argument("--relevant-by", choices=["label", "pair"], default="label")
    c.add_argument("--model", type=Path, help="query model (default: the one that built the index)")
    add_common(c)


def run_calibrate(args: argparse.Namespace) -> int:
    from modalign.cli.loading import scored_split
    from modalign.data.registry import load_labelled_dataset, load_pairs_dataset
    from modalign.model import AlignedModel
    from modalign.search.index import SearchIndex
    from modalign.workflows.calibrate import calibrate_index

    index = SearchIndex.open(args.index)
    model_dir = args.model or Path(index.info.model)
    index.check_model(model_dir)
    model = AlignedModel.from_pretrained(model_dir, device=args.device)
    store = open_store(args)
    if args.pairs:
        data = load_pairs_dataset(args.pairs)
        groups = scored_split(model_dir, args.split, data.group_names, "groups").indices
        cal = calibrate_index(index, model, data, store, groups, relevant_by=args.relevant_by,
                              fitted_on=f"{args.pairs} ({args.split})", progress=not args.quiet)
    else:
        cal = calibrate_index(index, model, load_labelled_dataset(args.images), store, fitted_on=args.images,
                              progress=not args.quiet)
    print(json.dumps({**cal.__dict__, "score_at_relevance_0.5": cal.threshold(0.5)}, indent=2))
    return 0
