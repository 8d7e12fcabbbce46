"""`modalign extend`: add a modality (audio ...) to an aligned model, its towers frozen."""

from __future__ import annotations

import argparse
import shutil
import tomllib
from pathlib import Path
from typing import Any

from modalign.cli.commands import summary
from modalign.cli.common import add_common, add_encoding, data_options, open_store, print_table, write_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extend", help=summary("extend"),
        description="Progressive alignment: encode the new modality's column (cached in the store), freeze "
                    "the model's towers and train only a projector for the new modality against the frozen "
                    "embeddings of the anchor modalities. Writes a model folder with one more tower; the "
                    "existing towers' embeddings are unchanged, bit for bit. Uses the run's split.json when "
                    "there is one, so the base model's test items stay held out.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN", help="aligned model folder (e.g. from `modalign train`)")
    p.add_argument("--pairs", required=True,
                   help="data set with the new modality's column and the anchor columns (e.g. tuxpaint-sounds)")
    p.add_argument("--modality", default="audio", help="the column / tower to add (default: audio)")
    p.add_argument("--encoder", default="logmel", help="encoder spec for it (default: logmel; e.g. whisper-tiny)")
    p.add_argument("--layer", default=None, help="encoder layer to align (default: final)")
    p.add_argument("--anchor", action="append", metavar="MODALITY",
                   help="frozen tower(s) to align against; repeat for several (default: text)")
    p.add_argument("--loss", default=None,
                   help="training loss (default: infonce; symile scores (new, anchor1, anchor2) triples: it needs two "
                        "anchors and gets a pairwise InfoNCE term unless loss_options.pairwise_weight = 0)")
    p.add_argument("--out", required=True, type=Path, help="folder for the extended model (a new one)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it already holds a model")
    p.add_argument("--config", type=Path, help="TOML file with ExtendConfig fields (a [train] table for training)")
    p.add_argument("--epochs", type=int, help="max epochs (default: 200, early stopping on validation)")
    p.add_argument("--seed", type=int, help="training seed (default: 0)")
    p.add_argument("--json", type=Path, help="write the held-out metrics here")
    add_encoding(p)
    add_common(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from modalign.data.registry import load_pairs_dataset
    from modalign.errors import ConfigError
    from modalign.model import AlignedModel
    from modalign.utils.config import load_config, merge_dicts
    from modalign.utils.io import staged_folder
    from modalign.workflows.extend import ExtendConfig, align_new_modality, split_by_names
    from modalign.workflows.fit import is_run_folder, read_run_split

    raw = tomllib.loads(args.config.read_text()) if args.config else {}
    flags: dict[str, Any] = {"train": {f: getattr(args, f) for f in ("epochs", "seed", "loss")
                                       if getattr(args, f) is not None}}
    if args.layer:
        flags["layer"] = args.layer
    flags["device"] = flags["train"]["device"] = args.device
    cfg = load_config(ExtendConfig, merge_dicts(raw, flags), what="extend")
    model = AlignedModel.from_pretrained(args.run_dir, device=args.device)
    dataset = load_pairs_dataset(args.pairs, **data_options(args))
    split = None
    split_file = args.run_dir / "split.json"
    if split_file.is_file():  # checked against the model's split hash: never another run's split
        split = split_by_names(dataset, read_run_split(args.run_dir, model.metadata))
    if args.out.resolve() == args.run_dir.resolve():
        raise ConfigError("--out must be a new folder, not the run being extended (it stays as it is)")
    bigger = align_new_modality(model, dataset, open_store(args), modality=args.modality, encoder=args.encoder,
                                anchors=args.anchor or ["text"], config=cfg, split=split, progress=not args.quiet)
    with staged_folder(args.out, overwrite=args.overwrite, belongs=is_run_folder) as work:
        bigger.save_pretrained(work)  # written whole: a crash never leaves new weights beside an old config
        if split_file.is_file():  # the base run's split holds for the new model: `eval` keeps its test items apart
            shutil.copyfile(split_file, work / "split.json")
    metrics = bigger.metadata["extend"]["test_metrics"]
    rows = [{"metric": k, "value": v} for k, v in metrics.items() if "recall@" in k]
    print_table(rows, ["metric", "value"], title=f"held-out retrieval of the new {args.modality} tower")
    write_json(args.json, metrics)
    print(f"model with towers {', '.join(bigger.towers)} saved to {args.out}")
    return 0
