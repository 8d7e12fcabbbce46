"""The fault suite, many runs each: kill -9 at random points of encode / train / extend, a full disk during a
shard write, two encoders on one store, a reader beside a writer's lock. Prints the "Fault suite" table of
BENCHMARKS.md (fault, runs, interrupted, lost items, where the faults hit) and writes results/faults.json.

    .venv/bin/python benchmarks/bench_faults.py --runs 8          # ~25 min on 2 busy cores
    .venv/bin/python benchmarks/bench_faults.py --runs 2 --only encode,disk

The scenarios are tests/fault_scenarios.py, the ones tests/test_faults.py runs (fewer times); each drives
the real command line in a subprocess on real Tux Paint stamps with the packaged encoders. "Lost" counts
items whose vector or skip status differs from an uninterrupted encode after resuming (encode, disk full,
concurrent), or runs whose folder was not one whole run afterwards (train, extend): it must be 0.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import RESULTS_DIR, machine_info, print_header, write_json  # noqa: E402

import fault_scenarios as fs  # noqa: E402
import index_fault_scenarios as ifs  # noqa: E402

TRAIN = ["--epochs", "30", "--patience", "0", "--batch-size", "4", "--out-dim", "16", "--hidden-dim", "32",
         "--no-baselines", "-q"]
SCENARIOS = ("encode", "train", "retrain", "extend", "disk", "concurrent", "reader", "index", "index-disk")


def _main(args: list[str]) -> int:
    from modalign.cli.main import main

    return main(args)


def setup(work: Path) -> dict[str, Any]:
    """Stamps, their pairs file, a reference encode and an in-process resume (one torch thread, as the
    subprocesses: resumed vectors compare bit for bit)."""
    from modalign.data.registry import load_dataset
    from modalign.encoders import create_encoder
    from modalign.features.pipeline import column_for
    from modalign.store import EmbeddingStore

    pairs = fs.pairs_file(work / "images", fs.stamp_images(work / "images", 12))
    encoder = create_encoder("effnet-lite0")
    column = column_for(load_dataset(str(pairs)), "image")

    def resume(root: Path) -> Any:
        return EmbeddingStore(root).encode(column, encoder, shard_size=2, batch_size=2, progress=False)["final"]

    return {"pairs": pairs, "resume": resume, "reference": resume(work / "ref")}


def split_names(pairs: Path, seed: int) -> dict[str, list[str]]:
    from modalign.data.pairs import load_pairs
    from modalign.workflows.fit import FitConfig

    ds = load_pairs(pairs)
    return {k: [ds.group_names[g] for g in v] for k, v in ds.split(FitConfig().split, seed=seed).items()}


def run_train(work: Path, ctx: dict[str, Any], runs: int, rng: random.Random) -> list[fs.FaultRun]:
    import json

    run, pairs = work / "run", ctx["pairs"]
    args = ["train", "--pairs", str(pairs), "--out", str(run), "--store", str(work / "train-store"), *TRAIN]
    assert _main([*args, "--split-seed", "0"]) == 0
    out = []
    for _ in range(runs):
        current = json.loads((run / "split.json").read_text())
        new_seed = 1 if current == split_names(pairs, 0) else 0
        splits = {"old": current, "new": split_names(pairs, new_seed)}
        out.append(fs.train_kill(run, args, splits, new_seed, _main, rng))
    return out


def run_retrain(work: Path, ctx: dict[str, Any], runs: int) -> list[fs.FaultRun]:
    """`modalign train` into a folder that holds a run, without --overwrite: refused, the run untouched."""
    run, pairs = work / "retrain-run", ctx["pairs"]
    args = ["train", "--pairs", str(pairs), "--out", str(run), "--store", str(work / "train-store"), *TRAIN]
    if not (run / "split.json").exists():
        assert _main([*args, "--split-seed", "0"]) == 0
    out = []
    for i in range(runs):
        before = fs.folder_digest(run)
        done = fs.cli(*args, "--split-seed", str(i + 1))
        problems = [] if done.returncode == 1 and "--overwrite" in done.stderr else [f"rc {done.returncode}: "
                                                                                      f"{done.stderr[-200:]}"]
        problems += fs.run_problems(run, {"old": split_names(pairs, 0)})[0]
        changed = fs.folder_digest(run) != before
        out.append(fs.FaultRun("retrain into an existing run folder without --overwrite",
                               f"split seed {i + 1}: refused", int(changed), problems, interrupted=False))
    return out


def run_index(work: Path, runs: int, rng: random.Random) -> list[fs.FaultRun]:
    """kill -9 at every commit step of index add / delete / build (`runs` rounds over the steps)."""
    model = ifs.make_model(work / "index-model")
    cases = [(op, step) for op in ("add", "delete") for step in ifs.STEPS]
    cases += [("build", step) for step in ifs.BUILD_STEPS]
    out = []
    for r in range(runs):
        for i, (op, step) in enumerate(cases):
            out.append(ifs.index_kill(work / f"index-{r}-{i}", model, op, step))
    return out


def run_index_disk(work: Path, runs: int, rng: random.Random) -> list[fs.FaultRun]:
    model = ifs.make_model(work / "index-disk-model")
    return [ifs.index_disk_full(work / f"index-disk-{i}", model, rng.choice([2_000, 8_000, 30_000, 60_000, 120_000]))
            for i in range(runs)]


def run_extend(work: Path, runs: int, rng: random.Random) -> list[fs.FaultRun]:
    tree = fs.sound_tree(work / "tree")
    base, ext, store = work / "base", work / "ext", work / "ext-store"
    assert _main(["train", "--pairs", f"tuxpaint?root={tree}", "--out", str(base), "--store", str(store),
                  *TRAIN]) == 0
    args = ["extend", str(base), "--pairs", f"tuxpaint-sounds?root={tree}", "--modality", "audio", "--encoder",
            "logmel", "--anchor", "text", "--out", str(ext), "--epochs", "40", "--store", str(store), "-q",
            "--overwrite"]
    assert _main(args) == 0  # warm store
    started = time.monotonic()
    assert fs.cli(*args).returncode == 0
    full = time.monotonic() - started
    return [fs.extend_kill(base, ext, args, full, _main, rng) for _ in range(runs)]


def run_reader(work: Path, ctx: dict[str, Any]) -> fs.FaultRun:
    """A complete entry, locked as a writer encoding other layers would hold it: reading it must not wait."""
    import subprocess

    from modalign.store.lock import entry_lock

    store = work / "ref"
    started = time.monotonic()
    with entry_lock(fs.entry_of(store)):
        try:
            done = fs.cli("encode", str(ctx["pairs"]), "--encoder", "effnet-lite0", "--store", str(store), timeout=300)
            problems = [] if done.returncode == 0 else [done.stderr[-300:]]
            problems += ["waited for the lock"] if "waiting for it to finish" in done.stderr else []
        except subprocess.TimeoutExpired:
            problems = ["still waiting for the writer's lock after 300 s"]
    return fs.FaultRun("reader of a complete entry while a writer holds its lock",
                       f"read in {time.monotonic() - started:.0f} s", 0, problems)


def collect(which: list[str], runs: int, seed: int, work: Path) -> list[fs.FaultRun]:
    rng = random.Random(seed)
    ctx = setup(work)
    results: list[fs.FaultRun] = []
    for name in which:
        t0 = time.monotonic()
        if name == "encode":
            results += [fs.encode_kill(work / f"encode-{i}", ctx["pairs"], ctx["reference"], ctx["resume"], rng)
                        for i in range(runs)]
        elif name == "train":
            results += run_train(work, ctx, runs, rng)
        elif name == "retrain":
            results += run_retrain(work, ctx, runs)
        elif name == "index":
            results += run_index(work, max(1, runs // 4), rng)
        elif name == "index-disk":
            results += run_index_disk(work, runs, rng)
        elif name == "extend":
            results += run_extend(work, runs, rng)
        elif name == "disk":
            results += [fs.disk_full(work / f"disk-{i}", ctx["pairs"], ctx["reference"], ctx["resume"], rng)
                        for i in range(runs)]
        elif name == "concurrent":
            results += [fs.concurrent_encoders(work, ctx["pairs"], ctx["reference"], rng) for _ in range(runs)]
        elif name == "reader":
            results.append(run_reader(work, ctx))
        print(f"  {name}: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return results


def table(results: list[fs.FaultRun]) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for r in results:
        row = rows.setdefault(r.fault, {"fault": r.fault, "runs": 0, "interrupted": 0, "lost": 0, "failed": 0,
                                        "mechanism": r.mechanism, "points": []})
        row["runs"] += 1
        row["interrupted"] += int(r.interrupted)
        row["lost"] += r.lost
        row["failed"] += int(not r.ok)
        row["points"].append(r.point)
    return list(rows.values())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=8, help="random fault points per scenario")
    ap.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {', '.join(SCENARIOS)}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=RESULTS_DIR / "faults.json")
    args = ap.parse_args()
    torch.set_num_threads(1)  # as the subprocesses (fault_scenarios.cli_env)
    info = machine_info()
    print_header("fault suite", info)
    which = [s for s in args.only.split(",") if s]
    unknown = set(which) - set(SCENARIOS)
    if unknown:
        ap.error(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    with tempfile.TemporaryDirectory(prefix="modalign-faults-") as tmp:
        results = collect(which, args.runs, args.seed, Path(tmp))
    rows = table(results)
    print("\n| fault | runs | interrupted | lost items | invariants broken | where it hit |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        points = "; ".join(sorted(set(r["points"])))[:160]
        mech = f" ({r['mechanism']})" if r["mechanism"] else ""
        print(f"| {r['fault']}{mech} | {r['runs']} | {r['interrupted']} | {r['lost']} | {r['failed']} | {points} |")
    for r in results:
        if not r.ok:
            print(f"FAILED {r.fault} at {r.point}: {r.problems}", file=sys.stderr)
    write_json(args.json, {"machine": info, "runs_per_scenario": args.runs, "seed": args.seed, "table": rows,
                           "runs": [r.__dict__ for r in results]})
    return int(any(not r.ok for r in results))


if __name__ == "__main__":
    raise SystemExit(main())
