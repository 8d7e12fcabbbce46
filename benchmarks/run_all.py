"""Runs the benchmarks, each in its own process, writes benchmarks/results/*.json and prints a summary.

    python benchmarks/run_all.py              # full sizes (bench_train: N=65536; 10+ minutes on 2 cores)
    python benchmarks/run_all.py --quick      # smaller sizes, a few minutes
    python benchmarks/run_all.py --only encode train --check    # exit 1 when a goal is missed

Each script prints its own machine header and figures; this runner adds one summary line per benchmark
from the JSON files. A benchmark that crashes (or misses its goal, with --check) makes the exit code 1; each JSON is deleted
before its script runs, so a summary line always comes from this run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _common import BENCH_DIR, RESULTS_DIR

QUICK = {
    "encode": ["--n", "64", "--text-n", "256", "--image-sets", "png,svg"],
    "train": ["--n", "16384", "--epochs", "6"],
    "quality": [],
}


def commands(results: Path, quick: bool, check: bool) -> dict[str, list[str]]:
    cmds = {
        "encode": ["bench_encode.py", "--json", str(results / "encode.json")],
        "train": ["bench_train.py", "--profile", "--json", str(results / "train.json")],
        "quality": ["bench_quality.py", "--out", str(results)],
    }
    for name, cmd in cmds.items():
        cmd[0] = str(BENCH_DIR / cmd[0])
        if quick:
            cmd += QUICK[name]
        if check and name != "quality":  # bench_quality always fails on chance-level results
            cmd.append("--check")
    return cmds


def summary(name: str, results: Path) -> str:
    if name == "encode":
        rs = json.loads((results / "encode.json").read_text())["results"]
        return "; ".join(f"{r['kind']} {r['set']}: " + ", ".join(f"{g} {v:.2f}" for g, v in r["median_ratios"].items())
                         for r in rs)
    if name == "train":
        r = json.loads((results / "train.json").read_text())["results"]
        return (f"loop {r['loop_pairs_per_s']:.0f} vs floor {r['floor_pairs_per_s']:.0f} pairs/s, "
                f"overhead {100 * r['median_overhead']:.0f}%")
    v = json.loads((results / "quality.json").read_text())["variants"]["train_seeds"]["summary"]
    return "mean R@1 (t2i, i2t): " + ", ".join(
        f"{m} {s['image_retrieval_recall@1']['mean']:.3f}/{s['text_retrieval_recall@1']['mean']:.3f}"
        for m, s in v.items())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=list(QUICK), default=list(QUICK))
    p.add_argument("--quick", action="store_true", help="smaller sizes: " + str(QUICK))
    p.add_argument("--check", action="store_true", help="make each script exit 1 when it misses its goal")
    p.add_argument("--results", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)

    cmds = commands(args.results, args.quick, args.check)
    status = {}
    for name in args.only:
        cmd = [sys.executable, *cmds[name]]
        (args.results / f"{name}.json").unlink(missing_ok=True)  # no stale figures in the summary
        print(f"\n$ {' '.join(cmd)}", flush=True)
        status[name] = subprocess.run(cmd).returncode
    print("\n== summary ==")
    for name, rc in status.items():
        try:
            line = summary(name, args.results)
        except (OSError, KeyError, json.JSONDecodeError) as e:
            line = f"no results ({type(e).__name__}: {e})"
        print(f"{name:<8} {'ok' if rc == 0 else f'FAILED (exit {rc})'}  {line}")
    return 0 if all(rc == 0 for rc in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
