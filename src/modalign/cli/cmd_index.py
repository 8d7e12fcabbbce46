"""`modalign index build|add|delete|info|upgrade|calibrate`: a persistent search index over a saved model's space."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from modalign.cli.commands import summary
from modalign.cli.common import add_common, add_encoding, data_options, dumps, open_store
from modalign.cli.relevance_args import add_calibrate_parser, run_calibrate


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help=summary("index"))
    isub = p.add_subparsers(dest="index_task", metavar="TASK", required=True)

    b = isub.add_parser("build", help="embed a collection and write a new index folder",
                        description="Encode a collection (plain image folder, class folders, pairs file or a "
                                    "built-in data set such as tuxpaint) with the model's tower, through the "
                                    "embedding store, and write INDEX/ (index.json, vectors.faiss, items.sqlite).")
    b.add_argument("collection", help="image folder, pairs file / folder, or data set name")
    b.add_argument("--model", type=Path, required=True, help="saved model / run folder")
    b.add_argument("--out", type=Path, required=True, help="index folder to write")
    b.add_argument("--kind", default="auto", help="flat, hnsw, ivf, ivf-int8, ivf-pq, or auto (by size)")
    b.add_argument("--modality", default=None,
                   help="which items to index: image (default), text (captions, for image->text search) or a "
                        "tower added by `modalign extend`, e.g. audio (collections such as tuxpaint-sounds)")
    b.add_argument("--texts", action="store_true", help="index the captions: the same as --modality text")
    b.add_argument("--overwrite", action="store_true", help="replace an existing index in --out")
    b.add_argument("--batch-size", type=int, default=32)
    add_common(b)

    a = isub.add_parser("add", help="add a collection's new items to an index (known keys are skipped)")
    a.add_argument("index", type=Path)
    a.add_argument("collection")
    a.add_argument("--model", type=Path, help="model to encode with (default: the index's; a compatible "
                                              "upgrade bundle is accepted)")
    a.add_argument("--batch-size", type=int, default=32)
    add_common(a)

    d = isub.add_parser("delete", help="delete items by key (e.g. their path relative to the collection)")
    d.add_argument("index", type=Path)
    d.add_argument("keys", nargs="+")
    add_common(d, store=False, device=False)

    i = isub.add_parser("info", help="print index.json")
    i.add_argument("index", type=Path)
    add_common(i, store=False, device=False)

    u = isub.add_parser("upgrade", help="train a compat image tower: a new encoder mapped into an old model's "
                                        "space, so existing indexes stay valid (no re-indexing)")
    u.add_argument("--old", type=Path, required=True, help="the old run folder (with split.json)")
    u.add_argument("--image-encoder", required=True, help="the new image encoder spec, e.g. effnet-lite2")
    u.add_argument("--pairs", required=True, help="training pairs (use the old run's: its train split is used)")
    u.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    u.add_argument("--epochs", type=int, default=300)
    add_encoding(u)
    add_common(u)
    add_calibrate_parser(isub)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return {"build": _build, "add": _add, "delete": _delete, "info": _info, "upgrade": _upgrade,
            "calibrate": run_calibrate}[args.index_task](args)


def _build(args: argparse.Namespace) -> int:
    from modalign.errors import ConfigError
    from modalign.search.build import build_index, load_collection

    if args.texts and args.modality not in (None, "text"):
        raise ConfigError(f"--texts indexes captions; it cannot go with --modality {args.modality}")
    modality = "text" if args.texts else args.modality or "image"
    index = build_index(args.model, load_collection(args.collection), args.out, open_store(args),
                        modality=modality, kind=args.kind, overwrite=args.overwrite,
                        batch_size=args.batch_size, progress=not args.quiet)
    print(dumps(index.info.to_dict()))
    return 0


def _add(args: argparse.Namespace) -> int:
    from modalign.model import AlignedModel
    from modalign.search.build import add_collection, load_collection
    from modalign.search.index import SearchIndex

    index = SearchIndex.open(args.index)
    model_dir = args.model or Path(index.info.model)
    index.check_model(model_dir)
    model = AlignedModel.from_pretrained(model_dir, device=args.device)
    n = add_collection(index, model, load_collection(args.collection), open_store(args), args.batch_size,
                       progress=not args.quiet)
    print(json.dumps({"added": n, "count": len(index)}))
    return 0


def _delete(args: argparse.Namespace) -> int:
    from modalign.search.index import SearchIndex

    index = SearchIndex.open(args.index)
    n = index.delete(args.keys)
    print(json.dumps({"deleted": n, "not_found": len(args.keys) - n, "count": len(index)}))
    return 0 if n else 1


def _info(args: argparse.Namespace) -> int:
    print((args.index / "index.json").read_text())
    return 0


def _upgrade(args: argparse.Namespace) -> int:
    import numpy as np

    from modalign.data.registry import load_pairs_dataset
    from modalign.encoders.registry import create_encoder
    from modalign.errors import ConfigError
    from modalign.model import AlignedModel
    from modalign.workflows.upgrade import CompatConfig, train_compat

    old = AlignedModel.from_pretrained(args.old, device=args.device)
    data = load_pairs_dataset(args.pairs, **data_options(args))
    if (args.old / "split.json").is_file():
        from modalign.workflows.fit import read_run_split

        names = set(read_run_split(args.old, old.metadata).get("train", []))
        groups = np.array([g for g, n in enumerate(data.group_names) if n in names], dtype=np.int64)
    else:
        groups = np.arange(data.n_groups)
    if len(groups) == 0:
        raise ConfigError(f"none of the old run's training items are in {args.pairs}")
    bundle = train_compat(old, args.old, create_encoder(args.image_encoder, device=args.device), data,
                          open_store(args), groups, CompatConfig(epochs=args.epochs))
    bundle.save_pretrained(args.out)
    print(json.dumps({"bundle": str(args.out), "compatible_with": bundle.metadata["compatible_with"]}))
    return 0
