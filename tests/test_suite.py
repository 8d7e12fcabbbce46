"""The benchmark suite on a model trained on a few real Tux Paint stamps, over tiny samples of real sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modalign.data import load_dataset, load_pairs
from modalign.errors import ConfigError
from modalign.store import EmbeddingStore
from modalign.workflows.suite import (
    SUITE,
    SuiteConfig,
    held_out_groups,
    read_run_split,
    run_suite,
    select_benchmarks,
    unseen_rows,
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tux_images) -> tuple[Path, EmbeddingStore]:
    """A model trained for two epochs on 12 stamps (a pairs file, so its split names those stamps)."""
    import shutil

    from conftest import caption_of
    from modalign.align.trainer import TrainConfig
    from modalign.workflows.fit import FitConfig, fit

    root = tmp_path_factory.mktemp("suite")
    rows = ["image,caption"]
    for png in tux_images:
        shutil.copy(png, root / png.name)
        rows.append(f'{png.name},"{caption_of(png)}"')
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    store = EmbeddingStore(root / "store")
    config = FitConfig(train=TrainConfig(epochs=2, batch_size=8), baselines=[])
    fit(load_pairs(root / "pairs.csv"), config, root / "run", store, progress=False, plots=False)
    return root / "run", store


def test_suite_scores_installed_sets_and_skips_missing_ones(tiny_run, tmp_path, monkeypatch):
    from modalign.model import AlignedModel

    run_dir, store = tiny_run
    monkeypatch.setenv("MODALIGN_CACHE", str(tmp_path / "empty-cache"))  # no Iconify package here
    monkeypatch.chdir(tmp_path)  # nor a node_modules folder
    model = AlignedModel.from_pretrained(run_dir)
    config = SuiteConfig(benchmarks=["digits", "openclipart", "iconify-categories"], max_items=20, max_groups=6)
    result = run_suite(model, store, config, run_dir=run_dir, progress=False)
    assert set(result.results) == {"digits", "openclipart"} and set(result.tasks) == set(config.benchmarks)
    assert "npm pack @iconify/json" in result.skipped["iconify-categories"]
    digits = result.results["digits"]
    assert digits["n_images"] == 20 and digits["n_classes"] == 10 and 0 <= digits["acc1"] <= digits["acc5"] <= 1
    clipart = result.results["openclipart"]
    assert clipart["n_images"] == clipart["n_texts"] == 6  # six test drawings, one caption each
    for k in ("image_retrieval_recall@1", "text_retrieval_recall@5", "mean_recall@1"):
        assert 0 <= clipart[k] <= 1
    assert clipart["image_retrieval_recall@5"] >= clipart["image_retrieval_recall@1"]


def test_test_groups_follow_the_run_split(tiny_run):
    run_dir, _ = tiny_run
    trained_on, split = read_run_split(run_dir)
    assert trained_on == "pairs" and split is not None
    pairs = load_pairs(run_dir.parent / "pairs.csv")
    groups = held_out_groups(pairs, split)
    assert sorted(pairs.group_names[g] for g in groups) == sorted(split["test"])
    tux = load_dataset("tuxpaint")
    default = held_out_groups(tux, None)  # a set the model never saw: the default split's test part
    assert np.array_equal(default, tux.split({"train": 0.7, "val": 0.1, "test": 0.2}, seed=0)["test"])


def test_unseen_rows_leave_out_the_run_train_and_val_items():
    tux, categories = load_dataset("tuxpaint"), load_dataset("tuxpaint-categories")
    split = {k: [tux.group_names[g] for g in v] for k, v in tux.split({"train": 0.7, "val": 0.1, "test": 0.2}).items()}
    kept = {categories.column.ids[r] for r in unseen_rows(categories, tux, split)}
    group_of = {i: tux.group_names[g] for i, g in zip(tux.column("image").ids, tux.column("image").groups, strict=True)}
    assert kept and all(group_of.get(i) not in set(split["train"]) | set(split["val"]) for i in kept)
    assert {i for i in categories.column.ids if group_of.get(i) in set(split["test"])} <= kept


def test_zeroshot_on_a_view_of_the_training_set_scores_held_out_items_only(tiny_run, tmp_path):
    """A run trained on Tux Paint: Tux categories zero-shot scores only stamps outside its train and val."""
    import json
    import shutil

    from modalign.model import AlignedModel

    run_dir, store = tiny_run
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    config = json.loads((run / "config.json").read_text())
    config["metadata"]["dataset"] = "tuxpaint"
    (run / "config.json").write_text(json.dumps(config))
    tux = load_dataset("tuxpaint")
    held = tux.group_names[:9]  # nine stamps held out, every other one "trained on"
    (run / "split.json").write_text(json.dumps({"train": tux.group_names[9:], "val": [], "test": held}))
    categories = load_dataset("tuxpaint-categories")
    held_items = [i for i in categories.column.ids if i in set(held) or i not in set(tux.group_names)]
    result = run_suite(AlignedModel.from_pretrained(run), store, SuiteConfig(benchmarks=["tuxpaint-categories"]),
                       run_dir=run, progress=False)
    tux_zs = result.results["tuxpaint-categories"]
    assert tux_zs["n_images"] == len(held_items) and 0 < len(held_items) < 20
    assert tux_zs["n_seen_left_out"] == len(categories) - len(held_items)


def test_a_model_without_its_split_is_flagged(tmp_path, caplog):
    import json

    (tmp_path / "config.json").write_text(json.dumps({"metadata": {"dataset": "cdda"}}))
    with caplog.at_level("WARNING", logger="modalign.workflows.suite"):
        assert read_run_split(tmp_path) == (None, None)
    assert "trained on cdda but has no split.json" in caplog.text


def test_select_benchmarks():
    assert [b.name for b in select_benchmarks(["cdda*"])] == ["cdda-categories", "cdda", "cdda-xstyle"]
    assert len(select_benchmarks(None)) == len(SUITE)
    with pytest.raises(ConfigError, match="no benchmark matches 'nope'|no benchmark matches nope"):
        select_benchmarks(["nope"])


def test_cli_eval_suite_and_datasets(tiny_run, tmp_path, capsys):
    import json

    from modalign.cli.main import main

    run_dir, store = tiny_run
    out = tmp_path / "suite.json"
    rc = main(["eval", "suite", str(run_dir), "--benchmarks", "digits", "--max-items", "20", "--json", str(out),
               "--store", str(store.root), "-q"])
    assert rc == 0
    saved = json.loads(out.read_text())
    assert set(saved["results"]) == {"digits"} and saved["results"]["digits"]["n_images"] == 20
    assert {"acc1", "acc5", "mean_per_class_recall"} <= set(saved["results"]["digits"])
    assert out.with_suffix(".png").is_file()
    assert "digits" in capsys.readouterr().out
    assert main(["datasets", "--json"]) == 0
    listing = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert {"cdda", "openclipart", "iconify", "kgeography", "asterisk-sounds", "digits"} <= set(listing)
    assert listing["cdda"]["licence"] == "CC-BY-SA-3.0" and listing["digits"]["installed"] == "yes"
