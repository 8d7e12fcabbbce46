"""`modalign search INDEX "a red bird"`: text->image (or ->caption, ->audio) search; --image / --audio PATH queries."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from modalign.cli.commands import summary
from modalign.cli.common import add_common, print_table
from modalign.cli.loading import reranker_for
from modalign.cli.relevance_args import add_cut_flags, cut_policy


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help=summary("search"),
                       description="Embed the query with the index's model (or a compatible --model) and "
                                   "print the k nearest items with cosine scores.")
    p.add_argument("index", type=Path)
    p.add_argument("query", nargs="?", help="a text query")
    p.add_argument("--image", type=Path, help="an image query instead of text")
    p.add_argument("--audio", type=Path, help="an audio query (a model extended with an audio tower)")
    p.add_argument("--texts", action="store_true", help="expect a caption index (image -> text search)")
    p.add_argument("-k", "--k", type=int, default=10)
    p.add_argument("--model", type=Path, help="query model (default: the one that built the index)")
    p.add_argument("--invgc", choices=["off", "invgc", "localadj"], default="off", nargs="?", const="invgc",
                   help="re-rank with InvGC (or its LocalAdj variant) against references from the index")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_cut_flags(p)
    add_common(p, store=False)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from modalign.errors import ConfigError
    from modalign.model import AlignedModel
    from modalign.search.index import SearchIndex
    from modalign.search.relevance import apply_policy, load_calibrations

    given = [q for q in (args.query, args.image, args.audio) if q is not None]
    if len(given) != 1:
        raise ConfigError("give one query: a text, --image PATH or --audio PATH")
    index = SearchIndex.open(args.index)
    if args.texts and index.info.modality != "text":
        raise ConfigError(f"{args.index} indexes {index.info.modality} items; build a caption index with "
                          f"`modalign index build ... --texts` for image->text search")
    model_dir = args.model or Path(index.info.model)
    index.check_model(model_dir)
    model = AlignedModel.from_pretrained(model_dir, device=args.device)
    modality, query = ("image", args.image) if args.image else ("audio", args.audio) if args.audio else \
        ("text", args.query)
    if modality not in model.towers:
        raise ConfigError(f"{model_dir} has no {modality} tower to embed the query with (it has "
                          f"{', '.join(model.towers)}); add one with `modalign extend`")
    if modality != "text" and not Path(query).is_file():
        raise ConfigError(f"query file not found: {query}")
    vec = model.encode(modality, [query]).cpu().numpy()
    rerank = reranker_for(index, model, args.invgc)
    policy = cut_policy(args)
    calibration = load_calibrations(index.folder, index.info.space).get("image" if args.image else "text")
    hits = apply_policy(index.search(vec, policy.fetch, rerank=rerank)[0], calibration, policy)
    if args.json:
        print(json.dumps([h.to_dict() for h in hits], indent=2))
    else:
        rows = [{"rank": i + 1, "score": h.score, "relevance": "" if h.relevance is None else h.relevance,
                 "key": h.item.key, "caption": h.item.caption or ""} for i, h in enumerate(hits)]
        columns = ["rank", "score", *(["relevance"] if calibration else []), "key", "caption"]
        what = f"top {args.k}" if not policy.adaptive else f"{len(hits)} hits (at most {policy.k_max})"
        print_table(rows, columns, title=f"{what} in {args.index}")
    return 0
