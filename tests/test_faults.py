"""Fault injection on the real command line: kill -9 at random points of encode / train / extend, a full disk
during a shard write, two encoders on one store, a reader beside a writer; and the run-folder guarantees
they rely on (written whole, --overwrite, the split hash). Scenarios: tests/fault_scenarios.py; the same
scenarios, many runs each, make the "Fault suite" table of BENCHMARKS.md (benchmarks/bench_faults.py).

The default suite runs one random point of each quick fault; `-m "faults and slow"` runs the rest.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fault_scenarios as fs
from modalign.cli.main import main

SLOW_SEEDS = [pytest.param(s, marks=pytest.mark.slow) for s in range(1, 6)]
TRAIN = ["--epochs", "30", "--patience", "0", "--batch-size", "4", "--out-dim", "16", "--hidden-dim", "32",
         "--no-baselines", "-q"]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """The subprocesses run on one thread (fault_scenarios.cli_env): so does this process, so a resumed
    encode (shards from both) can be compared bit for bit with a reference encoded here."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory, tux_root):
    """12 stamps + a corrupt and a missing image, their uninterrupted encode, and an in-process resume."""
    from modalign.data.registry import load_dataset
    from modalign.encoders import create_encoder
    from modalign.features.pipeline import column_for
    from modalign.store import EmbeddingStore

    work = tmp_path_factory.mktemp("faults")
    images = fs.stamp_images(work / "images", 12)
    pairs = fs.pairs_file(work / "images", images)
    encoder = create_encoder("effnet-lite0")
    column = column_for(load_dataset(str(pairs)), "image")  # what `modalign encode pairs.csv` encodes

    def resume(root: Path):
        return EmbeddingStore(root).encode(column, encoder, shard_size=2, batch_size=2, progress=False)["final"]

    reference = resume(work / "ref")
    assert reference.valid.sum() == 12 and len(reference.ids) == 14
    return work, pairs, reference, resume


def _split_names(pairs: Path, seed: int) -> dict[str, list[str]]:
    from modalign.data.pairs import load_pairs
    from modalign.workflows.fit import FitConfig

    ds = load_pairs(pairs)
    return {k: [ds.group_names[g] for g in v] for k, v in ds.split(FitConfig().split, seed=seed).items()}


# ---- kill -9 ------------------------------------------------------------------------------------------------
@pytest.mark.faults
@pytest.mark.slow  # tests/test_store.py kills an encode in the default suite already
@pytest.mark.parametrize("seed", range(6))
def test_kill_9_during_encode_resumes_without_loss(data, seed):
    work, pairs, reference, resume = data
    run = fs.encode_kill(work / f"encode-{seed}", pairs, reference, resume, random.Random(seed))
    assert run.interrupted and run.ok, (run.point, run.problems)


@pytest.fixture(scope="module")
def trained(data):
    """A complete run (split seed 0) over the stamps, its store warm for the training subprocesses."""
    work, pairs, _, _ = data
    run, store = work / "run", work / "train-store"
    args = ["train", "--pairs", str(pairs), "--out", str(run), "--store", str(store), *TRAIN]
    assert main([*args, "--split-seed", "0"]) == 0
    return run, args, pairs


@pytest.mark.faults
@pytest.mark.parametrize("seed", [0, *SLOW_SEEDS])
def test_kill_9_during_train_leaves_one_whole_run(trained, seed):
    run, args, pairs = trained
    current = json.loads((run / "split.json").read_text())
    new_seed = 1 if current == _split_names(pairs, 0) else 0  # always a run with another split than in place
    splits = {"old": current, "new": _split_names(pairs, new_seed)}
    assert splits["old"] != splits["new"]
    result = fs.train_kill(run, args, splits, new_seed, main, random.Random(seed))
    assert result.ok, (result.point, result.problems)


@pytest.mark.faults
@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
def test_kill_9_during_extend_leaves_base_and_out_whole(tmp_path_factory, tux_root, seed):
    work = tmp_path_factory.mktemp("extend")
    tree = fs.sound_tree(work / "tree")
    base, out, store = work / "base", work / "ext", work / "store"
    assert main(["train", "--pairs", f"tuxpaint?root={tree}", "--out", str(base), "--store", str(store),
                 *TRAIN]) == 0
    args = ["extend", str(base), "--pairs", f"tuxpaint-sounds?root={tree}", "--modality", "audio", "--encoder",
            "logmel", "--anchor", "text", "--out", str(out), "--epochs", "40", "--store", str(store), "-q"]
    assert main([*args, "--overwrite"]) == 0  # warms the store
    started = time.monotonic()
    full = fs.cli(*args, "--overwrite")  # an uninterrupted run, timed: the kills land inside its length
    assert full.returncode == 0, full.stderr
    result = fs.extend_kill(base, out, [*args, "--overwrite"], time.monotonic() - started, main, random.Random(seed))
    assert result.ok, (result.point, result.problems)


# ---- a full disk, several writers ------------------------------------------------------------------------------
@pytest.mark.faults
@pytest.mark.parametrize("seed", [0, *SLOW_SEEDS])
def test_disk_full_during_a_shard_write_is_an_error_then_resumes(data, seed):
    """Seed 0 fills the disk inside a shard's vectors (np.save's fast path once raised `[Errno None]` there);
    the slow seeds at random points."""
    work, pairs, reference, resume = data
    run = fs.disk_full(work / f"full-{seed}", pairs, reference, resume, random.Random(seed),
                       extra_pages=1 if seed == 0 else None)
    assert run.ok, (run.mechanism, run.point, run.problems)


@pytest.mark.faults
def test_two_encoders_on_one_store_both_finish_with_one_entry(data):
    work, pairs, reference, _ = data
    run = fs.concurrent_encoders(work, pairs, reference, random.Random(0))
    assert run.ok, (run.point, run.problems)


@pytest.mark.faults
def test_a_reader_of_a_complete_entry_never_waits_for_a_writers_lock(data):
    """A writer encoding other layers holds the locks of every entry it asked for (issue 17): reading one
    that is complete must not wait for it."""
    from modalign.store.lock import entry_lock

    work, pairs, _, _ = data
    store = work / "ref"
    with entry_lock(fs.entry_of(store)):  # as a writer in another process would
        try:
            again = fs.cli("encode", str(pairs), "--encoder", "effnet-lite0", "--store", str(store), timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("encode of a complete entry waited for another process's lock")
    assert again.returncode == 0, again.stderr
    assert "waiting for it to finish" not in again.stderr


# ---- run folders: written whole, replaced only when asked, split checked (issue 16, item 4) --------------------
def test_train_into_a_non_empty_folder_needs_overwrite_and_replaces_it_whole(trained, tmp_path, capsys):
    run, args, pairs = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "notes.txt").write_text("from the old run")
    store = args[args.index("--store") + 1]
    new = ["train", "--pairs", str(pairs), "--out", str(copy), "--store", store, *TRAIN, "--split-seed", "7"]
    assert main(new) == 1
    assert "already exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert (copy / "notes.txt").is_file()
    assert main([*new, "--overwrite"]) == 0
    assert not (copy / "notes.txt").exists()  # replaced whole, not written over
    assert json.loads((copy / "split.json").read_text()) == _split_names(pairs, 7)
    assert not list(tmp_path.glob(".run.*"))
    elsewhere = tmp_path / "mine"
    elsewhere.mkdir()
    (elsewhere / "thesis.tex").write_text("not a run")
    assert main(["train", "--pairs", str(pairs), "--out", str(elsewhere), "--store", store, *TRAIN,
                 "--overwrite"]) == 1
    assert "not written by this command" in capsys.readouterr().err and (elsewhere / "thesis.tex").is_file()


def test_eval_refuses_a_split_that_is_not_the_models(trained, tmp_path, capsys):
    """What a crash part-way through a retrain used to leave: the old weights beside a new split.json."""
    run, args, pairs = trained
    mixed = tmp_path / "mixed"
    shutil.copytree(run, mixed)
    current = json.loads((mixed / "split.json").read_text())
    other = _split_names(pairs, 3 if current != _split_names(pairs, 3) else 4)
    (mixed / "split.json").write_text(json.dumps(other))
    store = args[args.index("--store") + 1]
    rc = main(["eval", "retrieval", str(mixed), "--pairs", str(pairs), "--split", "test", "--store", store, "-q"])
    assert rc == 1
    assert "is not the split the model" in capsys.readouterr().err
    assert main(["eval", "retrieval", str(run), "--pairs", str(pairs), "--split", "test", "--store", store,
                 "-q"]) == 0


def test_staged_folder_keeps_the_old_folder_on_error_and_cleans_up_after_dead_writers(tmp_path):
    from modalign.utils.io import staged_folder

    target = tmp_path / "out"
    with staged_folder(target) as work:
        (work / "a.txt").write_text("first")
    with pytest.raises(RuntimeError), staged_folder(target, overwrite=True) as work:
        (work / "a.txt").write_text("second")
        raise RuntimeError("crash while writing")
    assert (target / "a.txt").read_text() == "first" and not list(tmp_path.glob(".out.*"))
    # a writer killed (pid gone) mid-swap: the old folder moved aside, the new one not yet in place
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    target.rename(tmp_path / f".out.old-{dead}-x")
    (tmp_path / f".out.partial-{dead}-y").mkdir()
    with staged_folder(tmp_path / "out", overwrite=True) as work:
        assert (target / "a.txt").read_text() == "first"  # the old folder is back before anything else
        (work / "a.txt").write_text("third")
    assert (target / "a.txt").read_text() == "third" and not list(tmp_path.glob(".out.*"))
