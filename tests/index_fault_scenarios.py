"""Index fault scenarios, shared by tests/test_index_faults.py and benchmarks/bench_faults.py: a real process
(tests/index_fault_worker.py) adds, deletes or builds and is killed at a commit step or runs out of disk, then
we read what it left WITHOUT repair (committed rows must all have vectors), rerun the same command, and open
the index (repairing leftovers): every item must be there and found by its own vector."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

import modalign
from fault_scenarios import FaultRun
from index_fault_worker import DIM, vectors_of

WORKER = Path(__file__).with_name("index_fault_worker.py")
SRC = str(Path(modalign.__file__).resolve().parents[1])
STEPS = ("vectors-partial", "vectors-written", "vectors-renamed", "metadata-committed", "info-written",
         "old-vectors-removed")  # storage.COMMIT_STEPS, spelled out: the tests fail if one disappears
BUILD_STEPS = [f"{s}:{n}" for n in (1, 2) for s in STEPS] + ["index-built"]


def make_model(out: Path) -> Path:
    """A real saved model (its config hash is the index's space); encoders are not loaded."""
    import torch

    from modalign.align.projectors import ProjectorConfig
    from modalign.model import AlignedModel, TowerConfig

    torch.manual_seed(0)
    proj = ProjectorConfig(type="linear", out_dim=DIM, standardize=False)
    towers = {"image": TowerConfig("image", "effnet-lite0", "final", 1280, "fp-image", proj),
              "text": TowerConfig("text", "minilm-l6", "final", 384, "fp-text", proj)}
    AlignedModel(towers).save_pretrained(out)
    return out


def worker(op: str, folder: Path, model_dir: Path, lo: int, hi: int, kill: str = "", fsize: int = 0,
           kind: str = "flat") -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(WORKER), op, str(folder), str(model_dir), str(lo), str(hi), "--kind", kind]
    cmd += ["--kill", kill] if kill else []
    cmd += ["--fsize", str(fsize)] if fsize else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def ok(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def keys(lo: int, hi: int) -> set[str]:
    return {f"k{i}" for i in range(lo, hi)}


def committed_keys(folder: Path, kind: str = "flat") -> set[str]:
    """What a fault left on disk, read WITHOUT repair: the committed rows must all have vectors."""
    from modalign.search.backends import IndexParams, VectorIndex
    from modalign.search.metadata import Metadata
    from modalign.search.storage import vectors_file

    items = Metadata(folder / "items.sqlite")
    generation, tombstones = items.state()
    vectors = VectorIndex.load(vectors_file(folder, generation), kind, DIM, IndexParams())
    vids, ids = set(items.all_vids().tolist()), set(vectors.ids().tolist())
    assert vids <= ids, f"{len(vids - ids)} committed items have no vector"
    assert len(ids) - len(vids) == tombstones
    found = {it.key for it in items.get(sorted(vids)).values()}
    items.close()
    return found


def searchable_keys(folder: Path) -> set[str]:
    """Opens the index (repairing leftovers) and returns the keys whose own vector finds them first."""
    from modalign.search.index import SearchIndex

    index = SearchIndex.open(folder)
    assert not list(folder.glob("*.tmp")) and len(list(folder.glob("vectors*.faiss"))) == 1
    assert json.loads((folder / "index.json").read_text())["count"] == len(index)
    found = {it.key for it in index.items.get(np.asarray(index.items.all_vids()).tolist()).values()}
    ids = sorted(int(k[1:]) for k in found)
    if ids:
        hits = index.search(np.concatenate([vectors_of(i, i + 1) for i in ids]), k=1)
        assert [h[0].item.key for h in hits] == [f"k{i}" for i in ids]
    index.close()
    return found


# ---- scenarios as FaultRuns (benchmarks/bench_faults.py) -----------------------------------------------------
def _run(fault: str, point: str, check, mechanism: str = "") -> FaultRun:
    try:
        lost, problems = check()
    except (AssertionError, subprocess.SubprocessError, OSError, ValueError) as e:
        lost, problems = 0, [f"{type(e).__name__}: {str(e)[:300]}"]
    return FaultRun(fault, point, lost, problems, mechanism)


def index_kill(work: Path, model_dir: Path, op: str, step: str) -> FaultRun:
    """kill -9 `op` (add 40 to 40 items, delete 10 of 40, or build 40) at a commit step; then the rerun."""
    folder = work / "idx"

    def check() -> tuple[int, list[str]]:
        if op != "build":
            ok(worker("build", folder, model_dir, 0, 40))
        lo, hi, want = {"add": (40, 80, keys(0, 80)), "delete": (0, 10, keys(10, 40)),
                        "build": (0, 40, keys(0, 40))}[op]
        killed = worker(op, folder, model_dir, lo, hi, kill=step)
        problems = [] if killed.returncode == -signal.SIGKILL else [f"not killed: rc {killed.returncode}"]
        if op != "build":
            committed_keys(folder)  # asserts that every committed row has its vector
        ok(worker(op, folder, model_dir, lo, hi))
        found = searchable_keys(folder)
        return len(want - found) + len(found - want), problems

    return _run(f"kill -9 during index {op}, at every commit step", step, check)


def index_disk_full(work: Path, model_dir: Path, fsize: int) -> FaultRun:
    """`index add` of 300 items to 300 with files capped at `fsize` bytes (a full disk); then the rerun."""
    folder = work / "idx"

    def check() -> tuple[int, list[str]]:
        ok(worker("build", folder, model_dir, 0, 300))
        full = worker("add", folder, model_dir, 300, 600, fsize=fsize)
        problems = [] if full.returncode in (0, 1) and "Traceback" not in full.stderr else [full.stderr[-300:]]
        problems += ["a .tmp file was left"] if list(folder.glob("*.tmp")) else []
        committed_keys(folder)
        ok(worker("add", folder, model_dir, 300, 600))
        return len(keys(0, 600) ^ searchable_keys(folder)), problems

    return _run("disk full during index save", f"files capped at {fsize} bytes", check, "RLIMIT_FSIZE")
