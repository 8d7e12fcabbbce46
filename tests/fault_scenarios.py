"""Fault-injection scenarios on real data, shared by tests/test_faults.py and benchmarks/bench_faults.py.

Each scenario runs the real command line in a subprocess (`python -m modalign.cli.main ...`), injects one
fault (kill -9 at a random point, a full disk, a second writer), then checks what a user would find and
returns a FaultRun: whether every invariant held and how many items (or runs) were lost. A "random
point" is drawn from the command's own progress (shards on disk, epochs logged, files staged), so the
kills land inside the work rather than in the interpreter's start-up. Resuming and rerunning happen in
the calling process (`Resume` / `Rerun` callables), which must use one torch thread like the subprocesses
(OMP_NUM_THREADS=1), so resumed vectors can be compared bit for bit with a reference encode.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import modalign

TUX = Path("/usr/share/tuxpaint/stamps")
SRC = Path(modalign.__file__).resolve().parents[1]  # the modalign being tested (a worktree's src/)
PAGE = 4096
ENCODE = ["--encoder", "effnet-lite0", "--shard-size", "2", "--batch-size", "2", "-q"]

Resume = Callable[[Path], Any]  # store root -> the StoredEmbeddings after encoding the same column into it
Rerun = Callable[[list[str]], int]  # CLI arguments -> exit code (modalign.cli.main.main)


@dataclass
class FaultRun:
    fault: str
    point: str  # where the fault hit
    lost: int  # items (encode) or runs (train / extend) lost or mixed: must be 0
    problems: list[str] = field(default_factory=list)  # broken invariants, empty when all held
    mechanism: str = ""  # e.g. "tmpfs (unshare)" or "RLIMIT_FSIZE"
    interrupted: bool = True  # False: the command finished before the fault point (nothing was tested)

    @property
    def ok(self) -> bool:
        return not self.problems and self.lost == 0


# ---- data --------------------------------------------------------------------------------------------------
def stamp_images(folder: Path, n: int) -> list[Path]:
    """n real Tux Paint stamps copied into folder (not symbols), with two bad items after them."""
    folder.mkdir(parents=True, exist_ok=True)
    pngs = sorted(p for p in TUX.rglob("*.png") if "symbols" not in p.parts and p.with_suffix(".txt").is_file())[:n]
    out = [Path(shutil.copy(p, folder / f"{i:03d}-{p.name}")) for i, p in enumerate(pngs)]
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return [*out, folder / "corrupt.png", folder / "missing.png"]


def pairs_file(folder: Path, images: list[Path]) -> Path:
    rows = ["image,caption"] + [f'{p.name},"stamp {p.stem}"' for p in images]
    path = folder / "pairs.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def sound_tree(root: Path, n: int = 20) -> Path:
    """A small Tux Paint tree of n stamps that have a sound (X.png, X.txt, X.ogg): image-text-audio triples."""
    picks = []
    for ogg in sorted(TUX.rglob("*.ogg")):
        stem = ogg.with_suffix("")
        if "_desc_" in ogg.name or "symbols" in ogg.parts or not stem.with_suffix(".png").is_file():
            continue
        if stem.with_suffix(".txt").is_file():
            picks.append(stem)
        if len(picks) == n:
            break
    for stem in picks:
        dest = root / stem.relative_to(TUX).parent
        dest.mkdir(parents=True, exist_ok=True)
        for suffix in (".png", ".txt", ".ogg"):
            shutil.copy(stem.with_suffix(suffix), dest / stem.with_suffix(suffix).name)
    return root


# ---- processes ---------------------------------------------------------------------------------------------
def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modalign.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env=cli_env())


def kill_when(args: list[str], ready: Callable[[], bool], timeout: float = 300,
              prefix: list[str] | None = None) -> tuple[bool, str]:
    """Runs the CLI; SIGKILLs it as soon as `ready()` holds. (killed, output); killed False if it ended first."""
    proc = subprocess.Popen([*(prefix or []), sys.executable, "-m", "modalign.cli.main", *args], env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None:
            if ready():
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return True, proc.stdout.read().decode(errors="replace")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{args[0]} ran for more than {timeout} s")
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return False, proc.stdout.read().decode(errors="replace")


# ---- checks ------------------------------------------------------------------------------------------------
def entry_of(store: Path) -> Path:
    (entry,) = [m.parent for m in store.glob("*/manifest.json")]
    return entry


def store_problems(entry: Path) -> list[str]:
    """Leftovers a killed or failed writer must never leave: temp files, vectors without a sidecar, half shards."""
    problems = [f"temp file left: {p.name}" for p in entry.glob(".*.tmp")]
    for npy in entry.glob("shard-*.npy"):
        if not npy.with_suffix(".json").is_file():
            problems.append(f"{npy.name} has no sidecar")
        try:
            rows = json.loads(npy.with_suffix(".json").read_text())["rows"]
            if np.load(npy).shape[0] != rows:
                problems.append(f"{npy.name} is not whole")
        except (OSError, ValueError, KeyError) as e:
            problems.append(f"{npy.name} unreadable: {e}")
    return problems


def lost_items(resumed: Any, reference: Any) -> int:
    """Rows whose validity or vector differs from an uninterrupted encode."""
    rv, fv = resumed.vectors(), reference.vectors()
    differ = (resumed.valid != reference.valid) | ~np.all(rv == fv, axis=1)
    return int(differ.sum())


def open_entry(entry: Path) -> Any:
    """A complete store entry by its folder."""
    from modalign.store import EmbeddingStore

    return EmbeddingStore(entry.parent).open(entry.name)


def folder_digest(folder: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


def staging_problems(target: Path) -> list[str]:
    """A killed run may leave `.NAME.partial-*`, but only clearly marked as incomplete. A kill between
    `mkdtemp` and the marker's write leaves it empty: nothing in it can pass for a run, so that is fine."""
    return [f"{p.name} is not marked INCOMPLETE" for p in target.parent.glob(f".{target.name}.partial-*")
            if any(p.iterdir()) and not (p / "INCOMPLETE").is_file()]


def run_problems(run: Path, splits: dict[str, dict]) -> tuple[list[str], str]:
    """A run folder must be one whole run: loadable, and its split.json the one its model was trained on."""
    from modalign.errors import ModalignError
    from modalign.model import AlignedModel
    from modalign.workflows.fit import read_run_split

    if not run.is_dir():
        return [f"{run.name} is gone"], "none"
    try:
        model = AlignedModel.from_pretrained(run)
        split = read_run_split(run, model.metadata)
    except (ModalignError, OSError) as e:
        return [f"{run.name} is not a whole run: {e}"], "broken"
    which = next((name for name, s in splits.items() if s == split), "unknown")
    missing = [f for f in ("results.json", "metrics.jsonl", "fit_config.json") if not (run / f).is_file()]
    return ([f"{run.name} lacks {missing}"] if missing else []) + (
        [] if which != "unknown" else ["split.json is neither run's"]), which


# ---- scenarios ---------------------------------------------------------------------------------------------
def encode_kill(work: Path, pairs: Path, reference: Any, resume: Resume, rng: random.Random) -> FaultRun:
    """kill -9 `modalign encode` once k shards are on disk (k random), then resume: nothing lost or changed."""
    store = work / "store"
    shutil.rmtree(store, ignore_errors=True)
    n_shards = -(-len(reference.ids) // 2)
    k = rng.randrange(0, n_shards - 1)
    killed, _ = kill_when(["encode", str(pairs), *ENCODE, "--store", str(store)],
                          lambda: len(list(store.glob("*/shard-*.npy"))) >= k and any(store.glob("*/manifest.json")))
    problems = store_problems(entry_of(store))
    lost = lost_items(resume(store), reference)
    return FaultRun("kill -9 during encode", f"after {k} of {n_shards} shards", lost, problems, interrupted=killed)


def train_stages(run: Path) -> dict[str, Callable[[], bool]]:
    """Points inside `modalign train --out RUN` to kill it at, read from its staging folder."""
    def partial() -> list[Path]:
        return sorted(run.parent.glob(f".{run.name}.partial-*"))

    def has(name: str) -> Callable[[], bool]:
        return lambda: any((p / name).exists() for p in partial())

    def epochs(n: int) -> Callable[[], bool]:
        def ready() -> bool:
            for p in partial():
                try:
                    return len((p / "metrics.jsonl").read_text().splitlines()) >= n
                except OSError:
                    return False
            return False
        return ready

    return {"staging created": lambda: bool(partial()), "split written": has("split.json"),
            "epoch 1 logged": epochs(1), "epoch 10 logged": epochs(10), "weights staged": has("model.safetensors"),
            "results staged": has("results.json")}


def train_kill(run: Path, base_args: list[str], splits: dict[str, list], new_seed: int, rerun: Rerun,
               rng: random.Random) -> FaultRun:
    """kill -9 `modalign train --overwrite` over a complete run at a random stage: the folder stays one
    whole run (the old or the new one), the staging folder is marked, and a rerun completes and cleans up.
    `splits`: {"old": split.json of the run in place, "new": that of a run with split seed `new_seed`}."""
    stage, ready = rng.choice(list(train_stages(run).items()))
    args = [*base_args, "--split-seed", str(new_seed), "--overwrite"]
    killed, _ = kill_when(args, ready)
    problems, which = run_problems(run, splits)
    problems += staging_problems(run)
    if rerun(args):
        problems.append("the rerun failed")
    leftovers = list(run.parent.glob(f".{run.name}.partial-*")) + list(run.parent.glob(f".{run.name}.old-*"))
    problems += [f"rerun left {p.name}" for p in leftovers]
    found, which_after = run_problems(run, splits)
    problems += found + ([] if which_after == "new" else [f"the rerun left the {which_after} run in place"])
    return FaultRun("kill -9 during train (over an existing run, --overwrite)", f"{stage} (then: {which} run)",
                    int(bool(problems)), problems, interrupted=killed)


def extend_kill(base: Path, out: Path, args: list[str], full_seconds: float, rerun: Rerun,
                rng: random.Random) -> FaultRun:
    """kill -9 `modalign extend` at a random time of an uninterrupted run's length (`full_seconds`): the
    base run is untouched, --out is a whole model or absent, and a rerun completes."""
    from modalign.errors import ModalignError
    from modalign.model import AlignedModel

    before = folder_digest(base)
    shutil.rmtree(out, ignore_errors=True)
    frac = rng.uniform(0.1, 0.8)  # the full run was timed once: loads vary, so stay well inside it
    started = time.monotonic()
    killed, _ = kill_when(args, lambda: time.monotonic() - started > frac * full_seconds)
    problems = []
    if out.exists():
        try:
            model = AlignedModel.from_pretrained(out)
            problems += [] if "audio" in model.towers else ["--out holds a model without the new tower"]
        except (ModalignError, OSError) as e:
            problems.append(f"--out is not a whole model: {e}")
    problems += staging_problems(out)
    problems += [] if folder_digest(base) == before else ["the base run changed"]
    problems += ["the rerun failed"] if rerun(args) else []
    problems += [f"rerun left {p.name}" for p in out.parent.glob(f".{out.name}.partial-*")]
    return FaultRun("kill -9 during extend", f"at {frac:.0%} of a full run", int(bool(problems)), problems,
                    interrupted=killed)


def disk_full(work: Path, pairs: Path, reference: Any, resume: Resume, rng: random.Random,
              extra_pages: int | None = None) -> FaultRun:
    """The disk fills during a shard write (a small tmpfs in a private mount namespace; RLIMIT_FSIZE where
    namespaces are not allowed): a clear error, no half shard, and the same encode resumes to the reference.
    `extra_pages` beyond whole shards: 0 fills the disk at a sidecar (JSON), 1-3 inside a shard's vectors."""
    n_shards = -(-len(reference.ids) // 2)
    k = rng.randrange(1, n_shards - 1)
    extra = rng.randrange(0, 4) if extra_pages is None else extra_pages
    size = (3 + 4 * k + extra) * PAGE  # manifest, ids, lock; then ~4 pages a shard (npy 3, json 1)
    mnt, saved = work / "mnt", work / "after"
    for d in (mnt, saved):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    args = [sys.executable, "-m", "modalign.cli.main", "encode", str(pairs), *ENCODE]
    if shutil.which("unshare") and subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0:
        mechanism, point = "tmpfs (unshare -rm)", f"a tmpfs of {size // PAGE} pages (~{k} of {n_shards} shards)"
        cmd = " ".join(f"'{a}'" for a in [*args, "--store", f"{mnt}/store"])
        script = (f"mount -t tmpfs -o size={size} tmpfs '{mnt}' && {{ {cmd}; rc=$?; "
                  f"cp -a '{mnt}/store' '{saved}/'; exit $rc; }}")
        done = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True,
                              env=cli_env(), timeout=600)
    else:
        mechanism, point = "RLIMIT_FSIZE", "the first shard's vectors"
        done = subprocess.run([*args, "--store", str(saved / "store")], capture_output=True, text=True,
                              env=cli_env(), timeout=600, preexec_fn=_small_files)
    problems = [] if done.returncode == 1 else [f"exit code {done.returncode}, expected 1: {done.stderr[-400:]}"]
    problems += [] if "no room to write" in done.stderr else [f"no clear error: {done.stderr[-400:]}"]
    problems += ["a traceback"] if "Traceback" in done.stderr else []
    problems += store_problems(entry_of(saved / "store"))
    lost = lost_items(resume(saved / "store"), reference)
    return FaultRun("disk full during a shard write", point, lost, problems, mechanism)


def _small_files() -> None:  # in the child: files above 8 KB fail with EFBIG instead of killing the process
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))


def concurrent_encoders(work: Path, pairs: Path, reference: Any, rng: random.Random) -> FaultRun:
    """Two `modalign encode` of the same column into one store at once: both finish, one entry, no item lost."""
    store = work / "store-shared"
    shutil.rmtree(store, ignore_errors=True)
    args = [sys.executable, "-m", "modalign.cli.main", "encode", str(pairs), *ENCODE[:-1], "--store", str(store)]
    procs = []
    for _ in range(2):
        procs.append(subprocess.Popen(args, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        time.sleep(rng.uniform(0, 2))
    outs = [p.communicate(timeout=600) for p in procs]
    problems = [f"encoder {i} exited {p.returncode}: {err[-300:]}"
                for i, (p, (_, err)) in enumerate(zip(procs, outs, strict=True)) if p.returncode]
    entries = list(store.glob("*/manifest.json"))
    problems += [] if len(entries) == 1 else [f"{len(entries)} entries for one column"]
    if problems:
        return FaultRun("two encoders on one store at once", "", len(reference.ids), problems)
    waited = sum("waiting for it to finish" in err for _, err in outs)
    return FaultRun("two encoders on one store at once", f"{waited} of 2 waited for the lock",
                    lost_items(open_entry(entry_of(store)), reference), store_problems(entry_of(store)))
