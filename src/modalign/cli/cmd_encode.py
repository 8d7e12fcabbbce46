"""`modalign encode`: fill the embedding store for a data set (resumable; skipped items are counted)."""

from __future__ import annotations

import argparse

from modalign.cli.commands import summary
from modalign.cli.common import add_common, add_encoding, data_options, open_store, print_table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "encode", help=summary("encode"),
        description="Encode one column of a data set with an encoder, at one or several layers, into the "
                    "embedding store. Reruns reuse what is there; an interrupted run resumes. Corrupt or "
                    "missing items are skipped and counted.")
    p.add_argument("data", help="pairs file (.csv/.jsonl/.parquet), image folder tree, saved HF dataset, "
                                "or a built-in name (tuxpaint, cdda, iconify:mdi ...: `modalign datasets` lists them)")
    p.add_argument("--encoder", required=True, help="encoder spec, e.g. effnet-lite0, minilm-l6, st:PATH, hf:ID")
    p.add_argument("--layer", action="append", default=None,
                   help="layer to store (repeatable; default: final). See `modalign encoders --show SPEC`")
    p.add_argument("--all-layers", action="store_true", help="store every layer the encoder declares")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="storage precision")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--shard-size", type=int, default=256,
                   help="items per shard: the unit written at once and kept when a run is interrupted")
    add_encoding(p)
    add_common(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from modalign.data.registry import load_dataset
    from modalign.encoders import create_encoder
    from modalign.features.pipeline import column_for, log_skipped

    encoder = create_encoder(args.encoder, device=args.device)
    dataset = load_dataset(args.data, **data_options(args))
    column = column_for(dataset, encoder.modality)
    layers = encoder.layer_names() if args.all_layers else encoder.resolve_layers(args.layer)
    store = open_store(args)
    entries = store.encode(column, encoder, layers, dtype=args.dtype, batch_size=args.batch_size,
                           shard_size=args.shard_size, progress=not args.quiet)
    rows = []
    for layer, e in entries.items():
        rows.append({"layer": layer, "dim": e.dim, "items": len(e.ids), "encoded": int(e.valid.sum()),
                     "skipped": len(e.skipped), "path": str(e.path)})
    print_table(rows, ["layer", "dim", "items", "encoded", "skipped", "path"], title=f"{args.encoder} on {args.data}")
    first = next(iter(entries.values()))
    log_skipped(first, args.encoder)
    if first.skipped:
        print(first.report.summary())
    return 0
