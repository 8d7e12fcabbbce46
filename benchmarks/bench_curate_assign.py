"""How often does `modalign curate` give a Tux Paint stamp its real category? (`--concepts labels`)

The pool is every Tux Paint stamp; the concepts are the 15 category names (what `--concepts labels` gives);
each stamp's assigned concept is compared with its real category (its folder). Variants of the assignment:
  before            caption-prompt cosine ("a photo of a {c}.", minilm-l6), argmax; labels unused
  centred           the same on centred vectors (mean caption and mean prompt removed); labels unused
  default           a stamp whose own label is a concept takes it, the rest as `centred` (what curate does)
Agreement is over the stamps curate can use (a caption and an image the store could read); the stamps it
leaves out for an unreadable image are counted too. Quality, not speed: no lock needed.

    python benchmarks/bench_curate_assign.py --json benchmarks/results/curate_assign.json
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import numpy as np
from _common import RESULTS_DIR, machine_info, print_header, write_json

from modalign.curate.run import CurateConfig, curate
from modalign.data.tuxpaint import load_tuxpaint
from modalign.store import EmbeddingStore

VARIANTS = {
    "before": {"centre": False, "use_labels": False},
    "centred": {"centre": True, "use_labels": False},
    "default": {},
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", type=Path, default=None, help="embedding store (default: $MODALIGN_STORE or "
                                                               "~/.cache/modalign/store)")
    p.add_argument("--prompt", default="a photo of a {c}.")
    p.add_argument("--json", type=Path, default=RESULTS_DIR / "curate_assign.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    info = machine_info()
    print_header("curate: assigned concept vs real Tux Paint category (--concepts labels)", info)
    store = EmbeddingStore(args.store or os.environ.get("MODALIGN_STORE") or "~/.cache/modalign/store")
    tux = load_tuxpaint()
    concepts = list(tux.classnames)
    truth = np.asarray(tux.group_labels)
    out: dict[str, dict[str, float]] = {}
    for name, options in VARIANTS.items():
        cfg = CurateConfig(budget=1, prompt=args.prompt, dedup_threshold=None, **options)
        result = curate(tux, concepts, cfg, store, progress=False)
        used = result.assignment >= 0
        agree = float((result.assignment[used] == truth[result.groups][used]).mean())
        out[name] = {"agreement": agree, "n_scored": int(used.sum()), "n_left_out": int((~used).sum())}
        print(f"{name:10} agreement {agree:.3f} over {int(used.sum())} stamps ({int((~used).sum())} left out: "
              f"no usable caption or image)")
    majority = float(np.bincount(truth[truth >= 0]).max() / (truth >= 0).sum())
    print(f"largest category: {majority:.3f} of the stamps")
    write_json(args.json, {"machine": info, "prompt": args.prompt, "n_concepts": len(concepts),
                           "largest_category": majority, "variants": out})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
