"""An index never loses items: kill -9 at every commit step, at random moments, and a full disk (real
processes: tests/index_fault_worker.py). After each fault the committed rows all have vectors, and a
rerun of the same command completes the index (it never answers "added: 0" with items missing)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("faiss", reason="the search extra (faiss-cpu) is not installed")

from index_fault_scenarios import (  # noqa: E402
    BUILD_STEPS,
    SRC,
    STEPS,
    WORKER,
    committed_keys,
    keys,
    make_model,
    ok,
    searchable_keys,
    worker,
)
from index_fault_worker import DIM  # noqa: E402
from modalign.search.index import SearchIndex  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("model"))


@pytest.mark.parametrize("step", STEPS)
def test_add_killed_at_every_step_loses_nothing(tmp_path, model_dir, step):
    folder = tmp_path / "idx"
    ok(worker("build", folder, model_dir, 0, 40))
    killed = worker("add", folder, model_dir, 40, 80, kill=step)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    left = committed_keys(folder)
    assert left in (keys(0, 40), keys(0, 80))  # before or after, nothing in between
    rerun = ok(worker("add", folder, model_dir, 40, 80))
    assert rerun == {"n": len(keys(0, 80) - left), "count": 80}
    assert searchable_keys(folder) == keys(0, 80)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
@pytest.mark.parametrize("step", STEPS)
def test_delete_killed_at_every_step(tmp_path, model_dir, step, kind):
    folder = tmp_path / "idx"
    ok(worker("build", folder, model_dir, 0, 40, kind=kind))
    killed = worker("delete", folder, model_dir, 0, 10, kill=step, kind=kind)
    if kind == "hnsw" and step.startswith(("vectors", "old")):  # tombstones: the vectors file is not rewritten
        assert ok(killed) == {"n": 10, "count": 30}
    else:
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    if kind == "flat":
        assert committed_keys(folder) in (keys(0, 40), keys(10, 40))
    worker("delete", folder, model_dir, 0, 10, kind=kind)
    assert searchable_keys(folder) == keys(10, 40)


@pytest.mark.parametrize("step", BUILD_STEPS)
def test_build_killed_at_every_step_leaves_no_half_index(tmp_path, model_dir, step):
    folder = tmp_path / "idx"
    killed = worker("build", folder, model_dir, 0, 40, kill=step)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (folder / "index.json").exists()  # built aside, renamed into place only when complete
    assert ok(worker("build", folder, model_dir, 0, 40)) == {"n": 40, "count": 40}
    assert searchable_keys(folder) == keys(0, 40)
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]  # the killed build's folder is cleaned up


@pytest.mark.parametrize("step", ["index-built", "old-index-moved"])
def test_rebuild_killed_keeps_an_index_or_a_rerun_restores_it(tmp_path, model_dir, step):
    folder = tmp_path / "idx"
    ok(worker("build", folder, model_dir, 0, 40))
    killed = worker("rebuild", folder, model_dir, 0, 60, kill=step)
    assert killed.returncode == -signal.SIGKILL
    if step == "index-built":
        assert searchable_keys(folder) == keys(0, 40)  # the old index is untouched
    assert ok(worker("rebuild", folder, model_dir, 0, 60)) == {"n": 60, "count": 60}
    assert searchable_keys(folder) == keys(0, 60)


def test_kill_while_the_vectors_are_written_then_rerun_adds_the_items(tmp_path, model_dir):
    """The reported case: `index add` killed between its two files; the rerun said {"added": 0} and the
    items were lost for good. Public API and a version-agnostic kill point (fails on the old order)."""
    folder = tmp_path / "idx"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    run = [sys.executable, str(WORKER), "add-batches", str(folder), str(model_dir)]
    assert subprocess.run(run + ["0", "20"], env=env, capture_output=True, timeout=300).returncode == 0
    killed = subprocess.run(run + ["20", "30", "--kill-at-vector-write"], env=env, capture_output=True,
                            timeout=300)
    assert killed.returncode == -signal.SIGKILL
    done = subprocess.run(run + ["0", "30"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert searchable_keys(folder) == keys(0, 30)


def test_random_kills_during_adds_then_rerun_has_every_item(tmp_path, model_dir):
    """kill -9 at random moments of a process adding 10 items at a time (public API only: this test is
    the one that fails on a version that commits the rows before the vectors)."""
    folder, rng, total = tmp_path / "idx", random.Random(0), 1500
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    for _ in range(10):
        proc = subprocess.Popen([sys.executable, str(WORKER), "add-batches", str(folder), str(model_dir), "0",
                                 str(total)], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(rng.randint(1, 4)):
            if not proc.stdout.readline():
                break
        time.sleep(rng.uniform(0, 0.02))
        proc.kill()
        proc.wait(timeout=60)
        proc.stdout.close()
    done = subprocess.run([sys.executable, str(WORKER), "add-batches", str(folder), str(model_dir), "0",
                           str(total)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"count": total}
    assert searchable_keys(folder) == keys(0, total)


@pytest.mark.parametrize("fsize", [2_000, 8_000, 30_000, 60_000, 120_000])
def test_disk_full_during_save_is_an_error_and_a_rerun_adds_everything(tmp_path, model_dir, fsize):
    folder = tmp_path / "idx"
    ok(worker("build", folder, model_dir, 0, 300))
    full = worker("add", folder, model_dir, 300, 600, fsize=fsize)
    if full.returncode != 0:
        assert full.returncode == 1 and "error:" in full.stderr and "Traceback" not in full.stderr
        assert "run the command again" in full.stderr or "disk" in full.stderr
    assert committed_keys(folder) in (keys(0, 300), keys(0, 600))
    assert not list(folder.glob("*.tmp"))
    rerun = ok(worker("add", folder, model_dir, 300, 600))
    assert rerun["count"] == 600
    assert searchable_keys(folder) == keys(0, 600)


def test_disk_full_sweep_hits_the_vectors_write(tmp_path, model_dir):
    """The sweep above is meaningful: a limit below the new vectors file fails that add."""
    folder = tmp_path / "idx"
    ok(worker("build", folder, model_dir, 0, 300))
    full = worker("add", folder, model_dir, 300, 600, fsize=60_000)  # vectors file: 600 * 32 * 4 > 60 kB
    assert full.returncode == 1 and "could not write the index" in full.stderr, full.stderr[-2000:]
    assert committed_keys(folder) == keys(0, 300)


def test_a_legacy_index_with_rows_but_no_vectors_is_repaired(tmp_path, model_dir):
    """An index written by the old order (rows committed, kill before the vectors file) is repaired on
    open: the orphan rows are dropped, so the next add puts those items back."""
    from modalign.search.backends import IndexParams, VectorIndex
    from modalign.search.metadata import Metadata

    folder = tmp_path / "idx"
    ok(worker("build", folder, model_dir, 0, 20))
    index = SearchIndex.open(folder)
    index.close()
    items = Metadata(folder / "items.sqlite")
    vectors = VectorIndex.load(next(folder.glob("vectors.*.faiss")), "flat", DIM, IndexParams())
    with open(folder / "vectors.faiss", "wb") as f:  # the old layout: one vectors file, no state row
        vectors.write(f)
    for p in folder.glob("vectors.*.faiss"):
        p.unlink()
    from index_fault_worker import items_of

    lost = items_of(20, 30)
    for i, it in enumerate(lost):
        it.vid = 20 + i
    with items._db:
        items._db.execute("DELETE FROM state")
    items.commit(0, 0, insert=lost)  # rows 20..29 without vectors ...
    with items._db:
        items._db.execute("DELETE FROM state")  # ... in an index of the old format
    items.close()
    assert ok(worker("add", folder, model_dir, 0, 30)) == {"n": 10, "count": 30}
    assert searchable_keys(folder) == keys(0, 30)
