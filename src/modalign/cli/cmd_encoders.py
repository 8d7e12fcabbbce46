"""`modalign encoders`: list the registered encoders, or describe one (layers, dims, preprocessing)."""

from __future__ import annotations

import argparse
import json

from modalign.cli.commands import summary
from modalign.cli.common import print_table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encoders", help=summary("encoders"),
                       description="List named encoders and spec backends (st:, hf:, timm:, onnx: ...). "
                                   "With --show SPEC, load that encoder and print its layers and dims.")
    p.add_argument("pattern", nargs="?", default="*", help="glob on the name, e.g. 'effnet*' (default: all)")
    p.add_argument("--modality", choices=["image", "text", "audio"], help="only encoders of this modality")
    p.add_argument("--show", metavar="SPEC", help="load SPEC and print its layers, dims and preprocessing")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("-q", "--quiet", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from modalign.encoders import create_encoder, list_encoders

    if args.show:
        info = create_encoder(args.show).info()
        if args.json:
            print(json.dumps({**info.__dict__, "layers": [layer.__dict__ for layer in info.layers]}, indent=2))
            return 0
        print(f"{info.spec}: {info.modality} encoder, {info.dim}-d, weights {info.fingerprint}")
        print(f"preprocessing: {json.dumps(info.preprocessing)}")
        print_table([{"layer": x.name, "dim": x.dim, "pooling": x.pooling} for x in info.layers],
                    ["layer", "dim", "pooling"], title="layers")
        return 0
    entries = list_encoders(args.pattern, modality=args.modality)
    rows = [{"name": e.name, "modality": e.modality, "description": e.description, "needs": e.requires}
            for e in entries]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_table(rows, ["name", "modality", "description"], title="encoders (modalign encoders --show NAME for layers)")
    return 0
