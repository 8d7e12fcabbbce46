"""`modalign curate`: choose a budget of pairs that covers a list of concepts evenly, without near-duplicates."""

from __future__ import annotations

import argparse
from pathlib import Path

from modalign.cli.commands import summary
from modalign.cli.common import add_common, add_encoding, data_options, open_store, print_table, write_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "curate", help=summary("curate"),
        description="Assign each pair of the pool to a concept (its own label when that is one of the concepts; "
                    "otherwise the concept whose prompt 'a photo of a {c}.' its captions are closest to, with the "
                    "text encoder; an aligned --model adds its image's vote), leave out pairs whose image cannot be "
                    "read, drop near-duplicate images/captions, and spend the --budget evenly over the concepts. "
                    "Concepts: class names of a labelled data set, a text file (one per line), and/or nouns "
                    "mined from the captions. Writes curated.csv (or .jsonl), coverage.json and coverage.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--pairs", required=True, help="the pool: pairs file, saved HF dataset, or 'tuxpaint'")
    p.add_argument("--budget", type=int, required=True, help="pairs (images with their captions) to choose")
    p.add_argument("--concepts", action="append", default=[], metavar="SOURCE",
                   help="'mine' (nouns from the captions), 'labels' (the pool's class names), a .txt file (one "
                        "concept per line) or a labelled data set ('tuxpaint-categories', an image tree); repeat "
                        "to combine (default: labels when the pool has them, plus mine)")
    p.add_argument("--mine", type=int, default=30, help="how many concepts to mine from the captions")
    p.add_argument("--min-count", type=int, default=3, help="captions a mined concept must occur in")
    p.add_argument("--model", type=Path, help="an aligned model folder: its image-prompt similarity votes too")
    p.add_argument("--image-weight", type=float, default=0.5, help="weight of the model's image vote")
    p.add_argument("--text-encoder", default="minilm-l6", help="embeds captions and concept prompts")
    p.add_argument("--image-encoder", default="effnet-lite0", help="image features for near-duplicates")
    p.add_argument("--prompt", default="a photo of a {c}.", help="concept prompt ('{c}' = the concept)")
    p.add_argument("--dedup", type=float, default=0.95, help="cosine above which a pair is a near-duplicate "
                                                               "(of image or caption features); 1 turns it off")
    p.add_argument("--min-similarity", type=float, default=None,
                   help="leave pairs whose best concept is less similar than this unassigned (and out)")
    p.add_argument("--ignore-labels", action="store_true",
                   help="assign every pair by similarity, even one whose own label is a concept")
    p.add_argument("--seed", type=int, default=0, help="random draws within each concept")
    p.add_argument("--out", required=True, type=Path, help="folder for the curated pairs and the coverage report")
    p.add_argument("--format", choices=["csv", "jsonl"], default="csv", help="curated pairs file format")
    p.add_argument("--image-col", default="image", help="image column name in the pairs file")
    p.add_argument("--caption-col", default="caption", help="caption column name in the pairs file")
    add_encoding(p)
    add_common(p)
    p.set_defaults(run=run)


def gather_concepts(sources: list[str], dataset, n_mine: int, min_count: int) -> list[str]:
    """The concept list from the --concepts sources, in order, duplicates removed."""
    from modalign.curate.concepts import (
        concepts_from_dataset,
        concepts_from_file,
        merge_concepts,
        mine_concepts,
    )
    from modalign.data.registry import load_dataset

    if not sources:
        sources = (["labels"] if dataset.classnames else []) + ["mine"]
    lists = []
    for src in sources:
        if src == "mine":
            lists.append([c for c, _ in mine_concepts(dataset.column("text").items, n_mine, min_count)])
        elif src == "labels":
            lists.append(concepts_from_dataset(dataset))
        elif src.endswith(".txt"):
            lists.append(concepts_from_file(src))
        else:
            lists.append(concepts_from_dataset(load_dataset(src)))
    return merge_concepts(*lists)


def run(args: argparse.Namespace) -> int:
    from modalign.curate.plots import plot_coverage
    from modalign.curate.run import CurateConfig, curate, write_pairs
    from modalign.data.registry import load_pairs_dataset

    dataset = load_pairs_dataset(args.pairs, **data_options(args))
    concepts = gather_concepts(args.concepts, dataset, args.mine, args.min_count)
    cfg = CurateConfig(budget=args.budget, text_encoder=args.text_encoder, image_encoder=args.image_encoder,
                       prompt=args.prompt, dedup_threshold=None if args.dedup >= 1 else args.dedup,
                       image_weight=args.image_weight, min_similarity=args.min_similarity, seed=args.seed,
                       use_labels=not args.ignore_labels,
                       device=args.device)
    model = None
    if args.model:
        from modalign.model import AlignedModel

        model = AlignedModel.from_pretrained(args.model, device=args.device)
    store = open_store(args)
    result = curate(dataset, concepts, cfg, store, model=model, progress=not args.quiet)

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    pairs_path = write_pairs(dataset, result, out / f"curated.{args.format}")
    (out / "concepts.txt").write_text("\n".join(concepts) + "\n", encoding="utf-8")
    summary = result.summary()
    plot_coverage(result.coverage(), out / "coverage.png",
                  title=f"{summary['n_chosen']} of {summary['n_pool']} pairs of {dataset.name}, "
                        f"{summary['concepts_chosen']}/{summary['n_concepts']} concepts")
    write_json(out / "coverage.json", {"dataset": dataset.name, "pairs_file": pairs_path.name, **result.report(),
                                       "model": str(args.model) if args.model else None})
    rows = sorted(result.coverage(), key=lambda r: -r["pool"])
    print_table(rows, ["concept", "pool", "duplicates", "chosen"], title=f"coverage of {len(concepts)} concepts")
    print(f"chose {summary['n_chosen']} of {summary['n_pool']} pairs ({summary['n_duplicates']} near-duplicates "
          f"left out); concept balance {summary['balance_chosen']:.2f} (pool {summary['balance_pool']:.2f})")
    print(f"wrote {pairs_path}, {out / 'coverage.json'}, {out / 'coverage.png'}")
    return 0
