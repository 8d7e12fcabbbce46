"""What the new default costs the quickstart: today's default run against the previous one, same machine.

What is measured: `modalign quickstart` (modalign.workflows.quickstart.run_quickstart) twice on one
embedding store, in one process, after a warm-up run that fills the store (Tux Paint, Fashion-MNIST and
the 1000 label-bridge prompts are then encoded, so encoding is out of the comparison):
  previous   method mlp, baselines ridge + procrustes (the quickstart before `auto`)
  default    method auto, baselines mlp + ridge + procrustes + cca + asif (today's)
and, apart, what only a first run pays: encoding the 1000 label-bridge prompts into an empty store.
Reported per run: the quickstart's own timers (train = the method, baselines, zeroshot, total) in wall
seconds, the difference default - previous, and the held-out mean R@1 of each method. The machine is
shared: compare the two columns of one run, not numbers across runs.

    python benchmarks/bench_quickstart.py
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import BENCH_DIR, RESULTS_DIR, machine_info, print_header, write_json

from modalign.store import EmbeddingStore
from modalign.workflows.fit import FitConfig
from modalign.workflows.quickstart import QuickstartConfig, run_quickstart

CONFIGS = {
    "previous": {"method": "mlp", "baselines": ["ridge", "procrustes"]},
    "default": {},
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", type=Path, default=None,
                   help="embedding store (default: $MODALIGN_STORE, else benchmarks/.cache/store)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info()
    print_header("quickstart cost: the default (auto + 5 baselines) vs the previous (mlp + 2 baselines)", info)
    store = EmbeddingStore(args.store or Path(os.environ.get("MODALIGN_STORE") or BENCH_DIR / ".cache" / "store"))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_quickstart(QuickstartConfig(out_dir=Path(tmp) / "warm", fit=FitConfig()), store, progress=False)
        print(f"warm-up (fills the store): {time.perf_counter() - t0:.0f}s")
        for name, changes in CONFIGS.items():
            cfg = QuickstartConfig(out_dir=Path(tmp) / name, fit=FitConfig.from_dict(changes))
            r = run_quickstart(cfg, store, progress=False)
            results[name] = {"seconds": r.seconds, "mean_recall@1": {row["method"]: row["mean R@1"] for row in r.table},
                             "verdict": r.verdict}
            print(f"{name:<9} " + ", ".join(f"{k} {v:.1f}s" for k, v in r.seconds.items()) + f"\n          {r.verdict}")
    with tempfile.TemporaryDirectory() as tmp:  # what a first run adds once: the 1000 bridge prompts
        from modalign.align.label_bridge import bridge_prompts
        from modalign.encoders import create_encoder
        from modalign.encoders.label_head import imagenet_classnames
        from modalign.workflows.closed_methods import prompt_features

        text = create_encoder("minilm-l6")
        t0 = time.perf_counter()
        prompt_features(text, bridge_prompts(imagenet_classnames()), "final", EmbeddingStore(tmp))
        results["bridge_prompts_first_run_seconds"] = time.perf_counter() - t0
    print(f"first run only: encoding the 1000 bridge prompts {results['bridge_prompts_first_run_seconds']:.1f}s")
    extra = results["default"]["seconds"]["total"] - results["previous"]["seconds"]["total"]
    print(f"\nthe default adds {extra:+.1f}s to a warm quickstart "
          f"({results['previous']['seconds']['total']:.1f}s -> {results['default']['seconds']['total']:.1f}s)")
    write_json(args.out / "quickstart_cost.json", {"benchmark": "quickstart_cost", "machine": info,
                                                   "configs": CONFIGS, "results": results, "extra_seconds": extra})
    return 0


if __name__ == "__main__":
    sys.exit(main())
