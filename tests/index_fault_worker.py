"""A real process that writes a search index and can die on purpose (run by tests/test_index_faults.py).

    python index_fault_worker.py OP FOLDER MODEL_DIR LO HI [--kill STEP[:N]] [--fsize BYTES] [--kind KIND]

OP: build | rebuild (build with overwrite) | add | delete | add-batches (create when missing, then add 10 at a
time, a line after each: the target of kill -9 at random moments); items k<LO> .. k<HI-1>.
--kill STEP:N sends SIGKILL to itself at the N-th time the commit reaches STEP (storage.COMMIT_STEPS or a
build step); --kill-at-vector-write dies when the vectors file starts being written (any version: it patches
VectorIndex.save / .write); --fsize caps the size of any file it writes (RLIMIT_FSIZE: a full disk, EFBIG on write).
Prints {"n": added or deleted, "count": items} on success; a clear error and exit status 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

import numpy as np

DIM = 32


def vectors_of(lo: int, hi: int) -> np.ndarray:
    """(hi - lo, DIM) float32: item i's vector depends on i only, so a rerun writes the same vectors."""
    return np.stack([np.random.default_rng(i).standard_normal(DIM) for i in range(lo, hi)]).astype(np.float32)


def items_of(lo: int, hi: int) -> list:
    from modalign.search.metadata import Item

    return [Item(f"k{i}", "image", caption=f"item {i}") for i in range(lo, hi)]


def _kill_at(spec: str) -> None:
    from modalign.search import storage

    step, _, nth = spec.partition(":")
    seen = {"n": 0}

    def hook(name: str) -> None:
        if name == step:
            seen["n"] += 1
            if seen["n"] == int(nth or 1):
                os.kill(os.getpid(), signal.SIGKILL)

    storage.fault_hook = hook


def _kill_at_vector_write() -> None:
    from modalign.search.backends import VectorIndex

    def die(*a: object, **kw: object) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    for name in ("save", "write"):
        if hasattr(VectorIndex, name):
            setattr(VectorIndex, name, die)


def _limit_file_size(nbytes: int) -> None:
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))


def _add_batches(folder: str, model_dir: str, lo: int, hi: int) -> int:
    """Only the public API (SearchIndex.create / open / add), so that it runs against any version."""
    from pathlib import Path

    from modalign.search.index import SearchIndex

    index = (SearchIndex.open(folder) if (Path(folder) / "index.json").exists()
             else SearchIndex.create(folder, model_dir, DIM, "image", kind="flat"))
    for start in range(lo, hi, 10):
        index.add(vectors_of(start, min(start + 10, hi)), items_of(start, min(start + 10, hi)))
        print(start, flush=True)
    print(json.dumps({"count": len(index)}), flush=True)
    return 0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("op", choices=["build", "rebuild", "add", "delete", "add-batches"])
    p.add_argument("folder")
    p.add_argument("model_dir")
    p.add_argument("lo", type=int)
    p.add_argument("hi", type=int)
    p.add_argument("--kill", default="")
    p.add_argument("--kill-at-vector-write", action="store_true")
    p.add_argument("--fsize", type=int, default=0)
    p.add_argument("--kind", default="flat")
    args = p.parse_args()
    from modalign.errors import ModalignError
    from modalign.search.index import SearchIndex

    if args.kill_at_vector_write:
        _kill_at_vector_write()
    if args.op == "add-batches":
        return _add_batches(args.folder, args.model_dir, args.lo, args.hi)
    if args.kill:
        _kill_at(args.kill)
    if args.fsize:
        _limit_file_size(args.fsize)
    try:
        if args.op in ("build", "rebuild"):
            from modalign.search.build import write_index

            index = write_index(args.folder, args.model_dir, vectors_of(args.lo, args.hi), items_of(args.lo, args.hi),
                                "image", kind=args.kind, overwrite=args.op == "rebuild")
            n = len(index)
        else:
            index = SearchIndex.open(args.folder)
            n = (index.add(vectors_of(args.lo, args.hi), items_of(args.lo, args.hi)) if args.op == "add"
                 else index.delete([f"k{i}" for i in range(args.lo, args.hi)]))
    except (ModalignError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"n": n, "count": len(index)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
